"""``GatewayClient``: the application side of the loop (DESIGN §6, by-framework's names).

It appends commands to the log and reads what runs emit back from it. Every command is
an event whose id is its ``Nats-Msg-Id``, so sending the same event again (a retry after
a lost acknowledgement) stores it once (G3).

>>> async def example() -> None:  # doctest: +SKIP
...     async with GatewayClient("nats://127.0.0.1:4222") as client:
...         sent = await client.send_message("echo", "session-1", "hello")
...         terminal = await client.wait(sent.run_id, sent.session_id, timeout=30)
...         print(terminal.data)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import NamedTuple, Self

from nats.js.errors import NotFoundError
from pydantic import JsonValue

from eventstore.catalog import (
    CommandAsk,
    CommandAskData,
    CommandCancel,
    CommandCancelData,
    CommandSteer,
    CommandSteerData,
)
from eventstore.catalog_common import CancelMode, Content
from eventstore.codec import Undecodable
from eventstore.connection import ConnectOptions
from eventstore.envelope import Event
from eventstore.routing import TERMINAL_TYPES
from eventstore.settings import StoreSettings, nats_url_from_env
from eventstore.store import EventStore
from eventstore.subjects import run_end_subject, run_filter, session_filter
from gateway.errors import GatewayError, RunNotFoundError, RunNotWaitingError
from gateway.run_control import (
    SentCommand,
    live_runs,
    locate_run,
    resume_for_reply,
)
from runners.cancel import CancelReport, cancel_run
from runners.runtime import consumer_name

log = logging.getLogger(__name__)

Interceptor = Callable[[Event], Event]
"""``before_send(command) -> command``: called in order before a command is appended; it
may return a changed copy. An interceptor that raises aborts the send with its error."""

WORKER_PROBE_TIMEOUT = 1.0
"""How long :meth:`GatewayClient.send_message` looks for a polling worker. A live idle
worker renews its pull request at least every ``fetch_wait`` (1 s by default)."""


LIVENESS_CACHE_SECONDS = 1.0


class NoWorkerError(GatewayError):
    """No live worker serves the agent type a message is addressed to."""


class NotConnectedError(GatewayError):
    """The client was used before :meth:`GatewayClient.connect`."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    """What :meth:`GatewayClient.send_message` stored: the run's ids and the command's
    position (``message_id`` is the ``command.ask`` event id)."""

    run_id: str
    session_id: str
    message_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """What :meth:`GatewayClient.cancel` did: the command's position and the runs it
    ended now (``report.cancelled``) or found ended (``report.already_ended``)."""

    seq: int
    report: CancelReport


class StreamedEvent(NamedTuple):
    """An event and its stream sequence (its position in the log)."""

    seq: int
    event: Event


class GatewayClient:
    """Send commands to agent types and follow their runs.

    ``nats_url`` defaults to ``$JETLEDGER_NATS_URL``; ``settings`` to
    :meth:`StoreSettings.from_env`.
    """

    def __init__(
        self,
        nats_url: str = "",
        settings: StoreSettings | None = None,
        *,
        worker_probe_timeout: float = WORKER_PROBE_TIMEOUT,
    ) -> None:
        self.nats_url = nats_url or nats_url_from_env()
        self.settings = settings or StoreSettings.from_env()
        self.worker_probe_timeout = worker_probe_timeout
        self.interceptors: list[Interceptor] = []
        self._store: EventStore | None = None
        self._live_until: dict[str, float] = {}

    async def connect(self) -> Self:
        """Connect to NATS and make sure the stream exists (idempotent)."""
        if self._store is None:
            self._store = await EventStore.open(
                ConnectOptions(url=self.nats_url, name="jetledger-client"), self.settings
            )
        return self

    async def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def store(self) -> EventStore:
        if self._store is None:
            raise NotConnectedError("GatewayClient is not connected: await client.connect()")
        return self._store

    def add_interceptor(self, interceptor: Interceptor) -> None:
        """Run ``interceptor`` on every command before it is appended (in the order added)."""
        self.interceptors.append(interceptor)

    # -- commands ----------------------------------------------------------------

    async def send_message(
        self,
        target_agent_type: str,
        session_id: str,
        content: Content,
        *,
        user_code: str | None = None,
        metadata: dict[str, JsonValue] | None = None,
        target_worker_id: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        queue_if_no_worker: bool = False,
    ) -> SentMessage:
        """Ask ``target_agent_type`` to start a run (``command.ask``).

        Raises :class:`NoWorkerError` when no worker is polling the agent type's consumer,
        unless ``queue_if_no_worker``: then the command waits in the log for a worker.
        A message routed to ``target_worker_id`` skips that check.
        """
        must_be_served = target_worker_id is None and not queue_if_no_worker
        if must_be_served and not await self.has_live_worker(target_agent_type):
            raise NoWorkerError(
                f"no live worker serves agent type {target_agent_type!r}: start one with "
                f"'jetledger worker --worker-class module:Class', or queue the message"
            )
        command = CommandAsk(
            session_id=session_id,
            run_id=run_id or f"run-{uuid.uuid4().hex}",
            parent_run_id=parent_run_id,
            agent_type=target_agent_type,
            user_code=user_code,
            data=CommandAskData(
                content=content, metadata=metadata or {}, target_worker_id=target_worker_id
            ),
        )
        sent, seq = await self._append(command)
        return SentMessage(
            run_id=sent.run_id or "", session_id=sent.session_id or "", message_id=sent.id, seq=seq
        )

    async def send_command(self, command: Event) -> int:
        """Append any command event (after the interceptors); returns its stream sequence.
        Sending the same event twice stores it once (its id is the ``Nats-Msg-Id``)."""
        _sent, seq = await self._append(command)
        return seq

    async def cancel_task(
        self,
        run_id: str,
        session_id: str | None = None,
        reason: str = "",
        mode: CancelMode = "graceful",
        *,
        agent_type: str | None = None,
        target_worker_id: str | None = None,
        requested_by: str | None = None,
    ) -> int:
        """Cancel ``run_id`` and its whole subtree; returns the ``command.cancel``'s
        stream sequence. See :meth:`cancel` for what was cancelled."""
        outcome = await self.cancel(
            run_id,
            session_id,
            reason,
            mode,
            agent_type=agent_type,
            target_worker_id=target_worker_id,
            requested_by=requested_by,
        )
        return outcome.seq

    async def cancel(
        self,
        run_id: str,
        session_id: str | None = None,
        reason: str = "",
        mode: CancelMode = "graceful",
        *,
        agent_type: str | None = None,
        target_worker_id: str | None = None,
        requested_by: str | None = None,
    ) -> CancelOutcome:
        """Record ``command.cancel`` and end ``run_id`` and every descendant with
        ``run.cancelled`` right away, whether they run, wait or sit in a queue and whether
        their workers are alive or not. Handlers still running see ``ctx.cancelled``
        (``mode="force"`` also cancels them at their next await). Runs that had already
        ended are reported in ``already_ended`` and keep their outcome."""
        if session_id is None or agent_type is None:
            location = await locate_run(self.store, run_id)
            session_id = session_id or location.session_id
            agent_type = agent_type or location.agent_type
        cancel_command = CommandCancel(
            session_id=session_id,
            run_id=run_id,
            agent_type=agent_type,
            data=CommandCancelData(
                target_run_id=run_id,
                mode=mode,
                reason=reason or None,
                requested_by=requested_by,
                target_worker_id=target_worker_id,
            ),
        )
        command, seq = await self._append(cancel_command)
        report = await cancel_run(
            self.store,
            session_id,
            run_id,
            mode=mode,
            reason=reason or None,
            requested_by=requested_by or command.user_code,
            causation_id=command.id,
        )
        return CancelOutcome(seq=seq, report=report)

    async def cancel_session(
        self, session_id: str, *, mode: CancelMode = "graceful", reason: str = ""
    ) -> list[str]:
        """Cancel every live run of ``session_id`` (each with its subtree), whether it
        runs, waits or is still queued for a worker; returns the ids of the runs
        cancelled. Queued runs are found by reading the log's commands (see
        :func:`~gateway.run_control.live_runs`); a queued ``command.steer`` is not
        cancelled (it may still join a run rather than start one)."""
        cancelled: list[str] = []
        for location in await live_runs(self.store, session_id, include_queued=True):
            if location.run_id in cancelled:
                continue  # ended already as part of an earlier run's subtree
            outcome = await self.cancel(
                location.run_id,
                session_id,
                reason or f"session {session_id} cancelled",
                mode,
                agent_type=location.agent_type,
            )
            cancelled.extend(outcome.report.cancelled)
        return cancelled

    async def reply(
        self,
        run_id: str,
        answer: JsonValue = None,
        *,
        content: Content | None = None,
        user_code: str | None = None,
    ) -> SentCommand:
        """Answer the question a run asked with ``ctx.ask_user`` (``command.resume``).

        Raises :class:`RunNotWaitingError` when the run is not waiting for a reply (it
        ended, waits for something else) or the question was answered already, and
        :class:`RunNotFoundError` for a run the log does not know; neither stores anything.
        """
        location = await locate_run(self.store, run_id)
        command = resume_for_reply(location, answer, content, user_code)
        for interceptor in self.interceptors:
            command = interceptor(command)  # type: ignore[assignment]  # a resume stays one
        result = await self.store.append(command)
        if result.duplicate:
            raise RunNotWaitingError(f"the question of run {run_id!r} was answered already")
        return SentCommand(
            run_id=run_id,
            session_id=location.session_id,
            event_id=command.id,
            seq=result.seq or 0,
        )

    async def steer(
        self,
        session_id: str,
        content: Content,
        *,
        agent_type: str,
        user_code: str | None = None,
        target_run_id: str | None = None,
    ) -> SentCommand:
        """Publish ``command.steer`` for ``session_id`` to ``agent_type``'s workers."""
        steer_command = CommandSteer(
            session_id=session_id,
            run_id=target_run_id,
            agent_type=agent_type,
            user_code=user_code,
            data=CommandSteerData(content=content, target_run_id=target_run_id),
        )
        command, seq = await self._append(steer_command)
        return SentCommand(
            run_id=target_run_id or "", session_id=session_id, event_id=command.id, seq=seq
        )

    async def has_live_worker(self, agent_type: str) -> bool:
        """Whether a worker polls ``agent_type``'s consumer or holds one of its commands.

        A yes is remembered for ``LIVENESS_CACHE_SECONDS``: a client sending many commands
        should not pay a JetStream API round trip for each one.
        """
        loop = asyncio.get_running_loop()
        if self._live_until.get(agent_type, 0.0) > loop.time():
            return True
        deadline = loop.time() + self.worker_probe_timeout
        while True:
            try:
                info = await self.store.js.consumer_info(
                    self.settings.stream, consumer_name(agent_type)
                )
            except NotFoundError:
                return False  # no worker of this type ever started
            # A worker renews its pull request after each fetch, so a brief gap is normal.
            if (info.num_waiting or 0) > 0 or (info.num_ack_pending or 0) > 0:
                self._live_until[agent_type] = loop.time() + LIVENESS_CACHE_SECONDS
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def _append(self, command: Event) -> tuple[Event, int]:
        for interceptor in self.interceptors:
            command = interceptor(command)
        result = await self.store.append(command)
        if result.seq is None:  # single appends always carry their sequence
            raise GatewayError(f"the server stored {command.id} without a sequence")
        return command, result.seq

    # -- reading -----------------------------------------------------------------

    async def stream(
        self, session_id: str | None = None, run_id: str | None = None, from_seq: int = 1
    ) -> AsyncIterator[StreamedEvent]:
        """Events of a session or of one run from ``from_seq`` on, following live.

        The stream sequence orders them, so there is no gap and no duplicate. A run's
        stream ends after its terminal event; a session's stream runs until the caller
        stops iterating. Records that cannot be decoded are logged and skipped.
        """
        root = self.settings.root
        if run_id is not None:
            subject_filter = run_filter(run_id, root)
        elif session_id is not None:
            subject_filter = session_filter(session_id, root)
        else:
            raise ValueError("stream() needs a session_id or a run_id")
        records = self.store.records(from_seq, follow=True, subject_filter=subject_filter)
        async with contextlib.aclosing(records):
            async for record in records:
                if isinstance(record.item, Undecodable):
                    log.warning("skipping undecodable record %d on %s", record.seq, record.subject)
                    continue
                yield StreamedEvent(record.seq, record.item)
                if run_id is not None and record.item.type in TERMINAL_TYPES:
                    return

    async def wait(self, run_id: str, session_id: str, timeout: float = 60.0) -> Event:
        """The terminal event of a run, waiting up to ``timeout`` seconds for it.

        Raises :class:`TimeoutError` when the run has not ended by then.
        """
        subject = run_end_subject(session_id, run_id, self.settings.root)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            record = await self.store.last_on_subject(subject)
            if record is not None and not isinstance(record[1], Undecodable):
                return record[1]
            if loop.time() >= deadline:
                raise TimeoutError(f"run {run_id} did not end within {timeout:g}s")
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))


__all__ = [
    "CancelOutcome",
    "GatewayClient",
    "GatewayError",
    "Interceptor",
    "NoWorkerError",
    "NotConnectedError",
    "RunNotFoundError",
    "RunNotWaitingError",
    "SentCommand",
    "SentMessage",
    "StreamedEvent",
]
