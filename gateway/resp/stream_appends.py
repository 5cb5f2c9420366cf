"""Publishing pipelined ``XADD``\\ s and collecting their acknowledgements.

Every entry is published before any acknowledgement is awaited, in order on one
connection, so the sequences (ids) follow the order of the entries. Each entry's
acknowledgement carries its own sequence (an atomic batch would give one acknowledgement
per pipeline, but measured it costs the server twice the CPU per entry that it saves
here; fast-ingest batches give a sequence only for the last entry).

Two channels: a lean :class:`~gateway.resp.append_link.AppendLink` (frames written to a
socket of its own, acknowledgements parsed in one loop) when the connect options allow
one, else nats-py's connection with one :class:`~eventstore.reply_inbox.ReplyInbox`.
An entry whose acknowledgement does not come (timeout, or the link ended) is reported as
``None`` and recorded as unanswered with its key (:mod:`gateway.resp.append_order`); the
caller answers it (:mod:`gateway.resp.append_recovery`). From the moment one is known
until the caller has answered it, no new pipeline is sent ("trouble"): a later entry of
its key must not be stored before it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from nats.errors import Error as NatsError

from eventstore.errors import EventStoreError
from eventstore.publish import MSG_ID, Outgoing, parse_pub_ack
from eventstore.raw_connection import RawConnectionError, RawUnsupported
from eventstore.reply_inbox import ReplyInbox
from eventstore.store import EventStore
from eventstore.wire import hpub, publish_encoded, supports_bulk
from gateway.resp.append_link import AppendLink
from gateway.resp.append_order import STORED_ACK, KeyAppends
from gateway.resp.byframework_events import FIELDS_HEADER
from gateway.resp.replies import CommandError

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 100
"""Entries are handed to the connection this many at a time, as they are built."""
LINK_RETRY_SECONDS = 1.0
"""After the lean link failed to open, appends use nats-py for this long."""

Prepared = tuple[Outgoing, str, KeyAppends]
"""An entry ready to publish: its event, its ``Jl-Redis-Fields`` value and its key's
appends in flight."""
Sent = tuple[Outgoing, str, KeyAppends, int, bytes | None]
"""A published entry, its send token and its acknowledgement (``None``: none came)."""

_PLAIN_ACK = re.compile(
    rb'\{"stream":"[^"\\]*",(?:"domain":"[^"\\]*",)?"seq":(\d+)(?:,"duplicate":true)?\}'
)


def acknowledged(outgoing: Outgoing, data: bytes) -> int:
    """The sequence a publish acknowledgement gives, or the refusal as an ``ERR``."""
    try:
        result = parse_pub_ack(outgoing, data, None)
    except EventStoreError as error:
        raise CommandError(f"ERR the log refused the entry: {error}") from None
    assert result.seq is not None
    return result.seq


def fast_ack(outgoing: Outgoing, data: bytes) -> int | CommandError:
    """The sequence an acknowledgement gives (no JSON parse for the usual one), or the
    refusal of that entry as an ``ERR``."""
    plain = _PLAIN_ACK.fullmatch(data)
    if plain:
        return int(plain.group(1))
    try:
        return acknowledged(outgoing, data)
    except CommandError as error:
        return error


def headers_of(outgoing: Outgoing, fields_header: str) -> dict[str, str]:
    return {MSG_ID: outgoing.event_id, FIELDS_HEADER: fields_header}


_ENTRY_HEADERS = f"NATS/1.0\r\n{MSG_ID}: %b\r\n{FIELDS_HEADER}: %b\r\n\r\n".encode()


def frame(outgoing: Outgoing, fields_header: str, reply: bytes) -> bytes:
    """The ``HPUB`` frame of one entry (its dedupe id and fields header), its header
    block built in one formatting step: on the pipelined path this runs once per entry."""
    block = _ENTRY_HEADERS % (outgoing.event_id.encode(), fields_header.encode())
    return hpub(outgoing.subject.encode(), b" " + reply, block, outgoing.body)


@dataclass(slots=True, eq=False)
class _AckBatch:
    """The acknowledgements one pipeline of appends waits for."""

    expected: int
    link: AppendLink | None
    """The lean link it was sent on (its end means no acknowledgement will come)."""
    acks: dict[int, bytes] = field(default_factory=dict)
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    collected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when its publisher stopped waiting for acknowledgements."""
    troubled: bool = False
    """Some acknowledgement will not come: no new pipeline goes out until it is answered."""

    def give_up(self) -> None:
        """No more acknowledgements will come (the link ended): stop waiting."""
        self.complete.set()


class PipelinedAppends:
    """The channels of one adapter's pipelined appends (see the module doc)."""

    def __init__(self, store: EventStore, request_timeout: float, *, lean: bool = True) -> None:
        self.nc = store.nc
        self.request_timeout = request_timeout
        self._options = store.connect_options if lean else None
        self._inbox: ReplyInbox | None = None
        self._link: AppendLink | None = None
        self._link_retry_at = 0.0
        self._opening = asyncio.Lock()
        self._due: dict[int, tuple[_AckBatch, int, KeyAppends]] = {}
        """Reply token -> the pipeline, entry and key its acknowledgement belongs to."""
        self._tokens = itertools.count()
        self._collecting: set[_AckBatch] = set()
        """Pipelines sent and waiting for their acknowledgements."""
        self._troubles = 0
        self._calm = asyncio.Event()
        """Set while no unacknowledged entry waits for its answer (see the module doc)."""
        self._calm.set()
        self.published = 0

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        if self._inbox is not None:
            with contextlib.suppress(NatsError, OSError):
                await self._inbox.__aexit__(None, None, None)
            self._inbox = None

    async def publish_all(
        self,
        entries: Iterable[Prepared | CommandError],
        count: int,
        *,
        after: asyncio.Future[None] | None = None,
        published: asyncio.Future[None] | None = None,
    ) -> list[Sent | CommandError]:
        """Publish every prepared entry (an error stays as it is), in order, and wait
        for their acknowledgements. ``entries`` (``count`` of them) is consumed lazily:
        the server stores the first chunk while the next is being built. A caller with
        several groups in flight orders them: nothing is built before ``after`` is set
        (the group before has published everything), so send tokens follow the order on
        the wire, and ``published`` is set once this group's last entry is out.

        If any entry comes back without acknowledgement, it is recorded as unanswered
        with its key and trouble is raised: the caller answers those entries and then
        calls :meth:`calm_down` once."""
        if after is not None:
            await asyncio.shield(after)
        link, prefix = await self._channel()
        batch = _AckBatch(count, link)
        self._collecting.add(batch)
        out: list[Sent | CommandError] = []
        chunk: list[bytes] = []
        tokens: list[int] = []
        due, tokens_of = self._due, self._tokens
        sending = True
        try:
            for entry in entries:
                if isinstance(entry, CommandError):
                    out.append(entry)
                    batch.expected -= 1
                    continue
                outgoing, fields_header, record = entry
                token = next(tokens_of)
                tokens.append(token)
                due[token] = (batch, len(out), record)
                out.append((outgoing, fields_header, record, token, None))
                chunk.append(frame(outgoing, fields_header, b"%b%d" % (prefix, token)))
                if len(chunk) >= PUBLISH_CHUNK and sending:
                    sending = await self._send(link, chunk)
                    chunk = []
            if sending:
                sending = await self._send(link, chunk)
            if published is not None and not published.done():
                published.set_result(None)
            if sending and batch.expected and len(batch.acks) < batch.expected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(batch.complete.wait(), self.request_timeout)
            self._collect(batch, out)
        except BaseException:
            if batch.troubled:
                self.calm_down()
            raise
        finally:
            for token in tokens:
                due.pop(token, None)
            self._collecting.discard(batch)
            batch.collected.set()
        return out

    async def _channel(self) -> tuple[AppendLink | None, bytes]:
        """The link (None: nats-py) and reply prefix for a new pipeline, once no
        unacknowledged entry waits for its answer (see the module doc)."""
        while True:
            await self._calm.wait()
            link = await self.lean_link()
            prefix = link.prefix if link is not None else await self._inbox_prefix()
            if self._calm.is_set():  # still: nothing is awaited from here to the send
                return link, prefix

    def _collect(self, batch: _AckBatch, out: list[Sent | CommandError]) -> None:
        """Put the acknowledgements in place; record the entries without one."""
        acks = batch.acks
        for index, sent in enumerate(out):
            if isinstance(sent, CommandError):
                continue
            outgoing, fields_header, record, token, _ = sent
            data = acks.get(index)
            if data is None:
                record.unanswered[token] = (outgoing, fields_header)
                self._raise_trouble(batch)
            else:
                out[index] = (outgoing, fields_header, record, token, data)

    def _raise_trouble(self, batch: _AckBatch) -> None:
        if not batch.troubled:
            batch.troubled = True
            self._troubles += 1
            self._calm.clear()

    def calm_down(self) -> None:
        """The unacknowledged entries of one troubled pipeline are answered."""
        self._troubles -= 1
        if self._troubles <= 0:
            self._troubles = 0
            self._calm.set()

    async def settle(self) -> None:
        """Wait until every pipeline already sent has its acknowledgements or stopped
        waiting for them (at most the request timeout): then each unacknowledged entry
        is recorded with its key, and each acknowledged one is known."""
        waiting = [asyncio.ensure_future(batch.collected.wait()) for batch in self._collecting]
        if not waiting:
            return
        try:
            await asyncio.wait(waiting, timeout=self.request_timeout)
        finally:
            for task in waiting:
                task.cancel()

    async def _send(self, link: AppendLink | None, chunk: list[bytes]) -> bool:
        """Queue ``chunk`` on the channel; False if the link is gone (nothing more is
        sent on it: what is unacknowledged is answered by the caller)."""
        if not chunk:
            return True
        self.published += len(chunk)
        data = b"".join(chunk)
        if link is None:
            await publish_encoded(self.nc, data)
            return True
        try:
            await link.send(data)
        except (ConnectionError, OSError) as exc:
            log.warning("append link to NATS lost while sending: %r", exc)
            return False
        return True

    async def lean_link(self) -> AppendLink | None:
        """The lean link, opened on first use (and again after it ended), or None when
        the options need nats-py or opening it failed a moment ago. One link at a time:
        groups of one pipeline keep their order only on one connection."""
        if self._link is not None and self._link.alive:
            return self._link
        async with self._opening:
            return await self._open_link()

    async def _open_link(self) -> AppendLink | None:
        if self._link is not None and self._link.alive:
            return self._link  # opened while this caller waited
        self._link = None
        loop = asyncio.get_running_loop()
        if self._options is None or not supports_bulk(self.nc) or loop.time() < self._link_retry_at:
            return None
        link = AppendLink(self._options, self._on_reply, lambda: self._on_link_lost(link))
        try:
            await link.open()
        except RawUnsupported:
            self._options = None  # for good: these options need nats-py
            return None
        except (RawConnectionError, OSError) as exc:
            log.warning("append link to NATS unavailable, using nats-py: %r", exc)
            self._link_retry_at = loop.time() + LINK_RETRY_SECONDS
            return None
        self._link = link
        return link

    async def _inbox_prefix(self) -> bytes:
        """One nats-py inbox for the acknowledgements of every pipelined append (opened
        once: a subscription per pipeline cost two protocol messages each time)."""
        if self._inbox is None:
            inbox = ReplyInbox(self.nc, self._on_inbox_reply)
            await inbox.__aenter__()
            self._inbox = inbox
        return self._inbox.reply_subject("").encode()

    def _on_inbox_reply(self, tail: str, data: bytes) -> None:
        with contextlib.suppress(ValueError):
            self._on_reply(int(tail), data)

    def _on_reply(self, token: int, data: bytes) -> None:
        waiting = self._due.pop(token, None)
        if waiting is not None:
            batch, index, record = waiting
            batch.acks[index] = data
            # Known at once, not when the pipeline is done: an earlier unacknowledged
            # entry of the key, answered meanwhile, must not be stored after this one.
            if data.startswith(STORED_ACK):
                record.note_stored(token)
            if len(batch.acks) >= batch.expected:
                batch.complete.set()

    def _on_link_lost(self, link: AppendLink) -> None:
        # Acknowledgements of the link's frames can no longer come: let every pipeline
        # waiting on them answer its unacknowledged entries now, and send no new one
        # (on a new link it could be stored before them) until they are answered.
        if self._link is link:
            self._link = None
        for batch, _, _ in list(self._due.values()):
            if batch.link is link:
                self._raise_trouble(batch)
                batch.give_up()


__all__ = ["PipelinedAppends", "Prepared", "Sent", "acknowledged", "fast_ack", "headers_of"]
