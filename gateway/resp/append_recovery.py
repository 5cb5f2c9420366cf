"""Answering pipelined ``XADD``\\ s whose acknowledgement did not come (a timeout, or the
lean link ended), without ever giving an id out of command order.

Such an entry may or may not be stored. Publishing it again under its ``Nats-Msg-Id``
answers both cases when nothing later of its key is stored: a stored copy comes back as
a duplicate with its original sequence, else it is stored now. But if it was lost while
a later entry of its key was stored, storing it now would put it after that entry: a
later ``XADD`` of the connection would have the smaller id, which Redis never does.

So the entries of a key are answered in the order they were sent (send tokens, see
:mod:`gateway.resp.append_order`), after every pipeline already sent has its
acknowledgements (:meth:`PipelinedAppends.settle`), while no new pipeline goes out (the
"trouble" of :mod:`gateway.resp.stream_appends`). When a later entry of the key is known
stored, or unacknowledged later entries turn out stored when probed, the entry is only
probed: it is published with its ``Nats-Msg-Id`` and an expectation that never holds
(``Nats-Expected-Last-Msg-Id`` naming a fresh random id). JetStream checks duplicates
before expectations, so a stored entry comes back as a duplicate with its sequence, and
one never stored is refused and stays unstored: its ``XADD`` is answered with an error
saying so (retrying it is safe). A probe stores nothing either way.
"""

from __future__ import annotations

import asyncio
import os

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from eventstore.errors import AppendError, EventStoreError
from eventstore.publish import Outgoing, parse_pub_ack
from gateway.resp.append_order import KeyAppends
from gateway.resp.replies import CommandError, jetstream_unavailable
from gateway.resp.stream_appends import PipelinedAppends, acknowledged, headers_of

EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
ERR_WRONG_LAST_MSG_ID = 10070
"""JetStream's refusal when ``Nats-Expected-Last-Msg-Id`` does not hold."""
PROBE_CHUNK = 100
"""Later entries probed at once."""

NOT_STORED = (
    "ERR jetledger redis: the entry was not stored (its acknowledgement was lost and later "
    "XADDs of the pipeline were stored, so storing it now would break the id order); "
    "retrying it is safe"
)

Unacknowledged = tuple[KeyAppends, int, Outgoing, str]
"""An entry to answer: its key's record, its send token, its event and fields header."""


class AppendRecovery:
    """Answers the unacknowledged entries of the adapter's pipelines (see the module doc)."""

    def __init__(self, nc: NatsClient, appends: PipelinedAppends, request_timeout: float) -> None:
        self.nc = nc
        self.appends = appends
        self.request_timeout = request_timeout

    async def answer(self, entries: list[Unacknowledged]) -> list[int | CommandError]:
        """The sequence, or an error, of each entry of one pipeline that came back
        without acknowledgement (in send order). Ends that pipeline's trouble."""
        try:
            await self.appends.settle()
            return [await self._answer_one(*entry) for entry in entries]
        finally:
            for record, token, _, _ in entries:
                record.answered(token)  # also if cancelled: later entries may go on
            self.appends.calm_down()

    async def _answer_one(
        self, record: KeyAppends, token: int, outgoing: Outgoing, fields_header: str
    ) -> int | CommandError:
        await record.turn(token)
        try:
            found = record.found.get(token)
            if found is not None:
                return found
            if record.stored < token:
                later = record.unanswered_later(token)
                if later:
                    failed = await self._probe_later(record, later)
                    if failed is not None:  # their fate is unknown: so is the right order
                        return failed
            if record.stored > token:
                return await self._probe_alone(outgoing, fields_header)
            result = await self.publish_alone(outgoing, fields_header)
            if isinstance(result, int):
                record.note_stored(token)
            return result
        finally:
            record.answered(token)

    async def _probe_later(self, record: KeyAppends, later: list[int]) -> CommandError | None:
        """Find out which unacknowledged later entries of the key are stored (probes
        store nothing, so they go out together)."""
        for start in range(0, len(later), PROBE_CHUNK):
            tokens = later[start : start + PROBE_CHUNK]
            outcomes = await asyncio.gather(
                *(self.probe(*record.unanswered[token]) for token in tokens),
                return_exceptions=True,
            )
            for token, outcome in zip(tokens, outcomes, strict=True):
                if isinstance(outcome, CommandError):  # about that entry, not this one
                    return CommandError(
                        "ERR jetledger redis: cannot tell whether later entries were stored "
                        f"({outcome.message}); try again"
                    )
                if isinstance(outcome, NatsError | TimeoutError):
                    return jetstream_unavailable(outcome)
                if isinstance(outcome, BaseException):
                    raise outcome
                if outcome is None:
                    record.absent.add(token)
                else:
                    record.found[token] = outcome
                    record.note_stored(token)
        return None

    async def _probe_alone(self, outgoing: Outgoing, fields_header: str) -> int | CommandError:
        try:
            seq = await self.probe(outgoing, fields_header)
        except CommandError as error:
            return error
        except (NatsError, TimeoutError) as exc:
            return jetstream_unavailable(exc)
        return CommandError(NOT_STORED) if seq is None else seq

    async def probe(self, outgoing: Outgoing, fields_header: str) -> int | None:
        """The sequence the entry is stored at, or None if it is not stored; stores
        nothing (see the module doc). Raises ``CommandError`` for another refusal."""
        headers = headers_of(outgoing, fields_header)
        headers[EXPECTED_LAST_MSG_ID] = "jl-probe-" + os.urandom(12).hex()
        reply = await self.nc.request(
            outgoing.subject, outgoing.body, timeout=self.request_timeout, headers=headers
        )
        try:
            return parse_pub_ack(outgoing, reply.data, None).seq
        except AppendError as error:
            if error.code == ERR_WRONG_LAST_MSG_ID:
                return None
            raise CommandError(f"ERR the log refused the entry: {error}") from None
        except EventStoreError as error:
            raise CommandError(f"ERR the log refused the entry: {error}") from None

    async def publish_alone(self, outgoing: Outgoing, fields_header: str) -> int | CommandError:
        """The entry published again alone: a copy stored after all is recognised by
        its ``Nats-Msg-Id`` and not stored twice."""
        try:
            reply = await self.nc.request(
                outgoing.subject,
                outgoing.body,
                timeout=self.request_timeout,
                headers=headers_of(outgoing, fields_header),
            )
            return acknowledged(outgoing, reply.data)
        except CommandError as error:
            return error
        except (NatsError, TimeoutError) as exc:
            return jetstream_unavailable(exc)


__all__ = ["NOT_STORED", "AppendRecovery", "Unacknowledged"]
