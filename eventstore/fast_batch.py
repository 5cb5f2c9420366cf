"""``append_many`` with ADR-50 fast-ingest batches (nats-server 2.14+, ``allow_batched``).

The server stores each message as it arrives and confirms progress with a flow
acknowledgement every ``flow`` messages instead of one acknowledgement per message;
per-message refusals arrive as ``err`` replies naming the batch sequence. The batch is
identified by the reply subject ``<inbox>.<flow>.<gap mode>.<batch seq>.<op>.$FI`` and
closed by an end-of-batch marker that is not stored.

When acknowledgements stop (server restart, network), everything after the last flow
acknowledgement is sent again in a new batch with the same ``Nats-Msg-Id`` values, so
events that did reach the log are dropped as duplicates and the rest are stored once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient

from eventstore.prepared import PreparedEvents
from eventstore.publish import MSG_ID
from eventstore.reply_inbox import ReplyInbox
from eventstore.settings import StoreSettings
from eventstore.types import AppendResult
from eventstore.wire import Frame, msg_id_frame, publish_encoded, publish_frames, supports_bulk

log = logging.getLogger(__name__)

ERR_FAST_BATCH_NOT_ENABLED = 10205
MAX_OUTSTANDING_WINDOWS = 3


class FastIngestUnavailable(Exception):
    """The stream or server does not accept fast-ingest batches."""


class _Op(IntEnum):
    START = 0
    APPEND = 1
    COMMIT = 2
    END_OF_BATCH = 3


@dataclass(slots=True)
class _BatchState:
    """What the server said about one batch, updated from the reply inbox."""

    flow: int
    on_progress: Callable[[int], None] | None = None
    started: bool = False
    """The server acknowledged the first message (that ack carries sequence 0)."""
    acked: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    final: dict[str, object] | None = None
    fatal: str | None = None
    fatal_code: int | None = None

    def on_reply(self, _tail: str, data: bytes) -> None:
        try:
            reply = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            # An empty body is a no-responders status while the stream is not ready.
            self.fatal = f"unreadable reply {data[:80]!r}"
            return
        if not isinstance(reply, dict):
            self.fatal = f"unexpected reply {data[:80]!r}"
            return
        kind = reply.get("type")
        if kind == "ack":
            self.started = True
            self.acked = max(self.acked, int(reply.get("seq", 0)))
            self.flow = max(1, int(reply.get("msgs", self.flow)))
            if self.on_progress is not None:
                self.on_progress(self.acked)
        elif kind == "err":
            error = reply.get("error") or {}
            self.errors[int(reply.get("seq", 0))] = str(error.get("description", "refused"))
        elif kind == "gap":
            self.fatal = f"server saw a gap after batch sequence {reply.get('last_seq')}"
        elif isinstance(reply.get("error"), dict):
            self.fatal = str(reply["error"].get("description", "refused"))
            self.fatal_code = int(reply["error"].get("err_code", 0))
        elif "stream" in reply:
            self.final = reply


@dataclass(slots=True)
class _Batch:
    """One fast batch over a list of event indices, skipping refused events."""

    nc: NatsClient
    events: PreparedEvents
    indices: list[int]
    settings: StoreSettings
    state: _BatchState
    inbox: ReplyInbox
    sent: list[int] = field(default_factory=list)
    """Event indices in batch-sequence order (batch seq n is ``sent[n - 1]``)."""
    cursor: int = 0
    """Next position in ``indices`` to consider."""
    bulk: bool = False
    """Frames may be written straight into the connection's buffer (see wire.py)."""

    def next_frames(self, limit: int, op: _Op) -> list[Frame]:
        frames: list[Frame] = []
        prefix = self.reply_prefix()
        while len(frames) < limit and self.cursor < len(self.indices):
            index = self.indices[self.cursor]
            self.cursor += 1
            item = self.events.sendable(index)
            if item is None:
                continue
            self.sent.append(index)
            reply = f"{prefix}{len(self.sent)}.{int(op)}.$FI"
            frames.append(Frame(item.subject, item.body, ((MSG_ID, item.event_id),), reply))
        return frames

    async def send_next(self, limit: int, op: _Op) -> None:
        """Send up to ``limit`` more events; the hot loop of a bulk append."""
        if not self.bulk:
            await publish_frames(self.nc, self.next_frames(limit, op))
            return
        prefix = self.reply_prefix()
        tail = f".{int(op)}.$FI"
        chunk: list[bytes] = []
        sent, indices, events = self.sent, self.indices, self.events
        while len(chunk) < limit and self.cursor < len(indices):
            index = indices[self.cursor]
            self.cursor += 1
            item = events.sendable(index)
            if item is None:
                continue
            sent.append(index)
            reply = f"{prefix}{len(sent)}{tail}"
            chunk.append(msg_id_frame(item.subject, item.body, item.event_id, reply))
        if chunk:
            await publish_encoded(self.nc, b"".join(chunk))

    def reply_prefix(self) -> str:
        return f"{self.inbox.prefix}.{self.settings.flow_window}.fail."

    def end_frame(self) -> Frame:
        # The end-of-batch marker commits the batch without being stored itself.
        first = self.events.item(self.sent[0])
        reply = f"{self.reply_prefix()}{len(self.sent) + 1}.{int(_Op.END_OF_BATCH)}.$FI"
        return Frame(first.subject, b"", (), reply)

    async def wait(self, done: Callable[[], bool]) -> bool:
        """Wait until ``done()`` holds or no reply arrives for ``request_timeout``."""
        while not done():
            if self.state.fatal is not None:
                return False
            self.inbox.activity.clear()
            try:
                await asyncio.wait_for(self.inbox.activity.wait(), self.settings.request_timeout)
            except TimeoutError:
                return done()
        return True

    async def run(self) -> None:
        state = self.state
        first = self.next_frames(1, _Op.START)
        if not first:
            return
        await publish_frames(self.nc, first)
        if not await self.wait(lambda: state.started or state.final is not None):
            if state.fatal_code == ERR_FAST_BATCH_NOT_ENABLED:
                raise FastIngestUnavailable(state.fatal or "fast ingest not enabled")
            return
        while self.cursor < len(self.indices):
            windows = max(1, min(MAX_OUTSTANDING_WINDOWS, self.settings.max_inflight // state.flow))
            limit = state.flow * windows

            def window_open(in_flight: int = len(self.sent), limit: int = limit) -> bool:
                return in_flight - state.acked < limit

            if not await self.wait(window_open):
                return
            await self.send_next(state.flow, _Op.APPEND)
        await publish_frames(self.nc, [self.end_frame()])
        await self.wait(lambda: state.final is not None)

    def confirmed(self) -> int:
        """How many of ``sent`` the server has processed (stored or refused)."""
        if self.state.final is not None and "seq" in self.state.final:
            return len(self.sent)
        return min(self.state.acked, len(self.sent))


async def _await_connection(nc: NatsClient, timeout: float) -> None:
    # nats-py has no "connected" event to wait on; poll its state, bounded by timeout.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not nc.is_connected and not nc.is_closed and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def append_fast(
    nc: NatsClient,
    events: PreparedEvents,
    settings: StoreSettings,
    progress: Callable[[int], None] | None = None,
) -> list[AppendResult]:
    """Append ``events`` in fast-ingest batches; raises FastIngestUnavailable up front.

    ``progress`` is called with the number of events settled so far.
    """
    results: dict[int, AppendResult] = {}
    pending = list(range(len(events)))
    delay = settings.append_retry_backoff
    for attempt in range(settings.append_retries + 1):
        if not pending or nc.is_closed:
            break
        if attempt:
            log.info("fast batch: resending %d unconfirmed events", len(pending))
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.request_timeout)
            await _await_connection(nc, settings.request_timeout * 2)
        settled_before = len(results)

        def report(acked: int, base: int = settled_before) -> None:
            if progress is not None:
                progress(base + acked)

        state = _BatchState(flow=max(1, settings.flow_window), on_progress=report)
        async with ReplyInbox(nc, state.on_reply) as inbox:
            batch = _Batch(nc, events, pending, settings, state, inbox, bulk=supports_bulk(nc))
            try:
                await batch.run()
            except (nats_errors.OutboundBufferLimitError, nats_errors.ConnectionClosedError) as exc:
                log.warning("fast batch interrupted: %s", type(exc).__name__)
        pending = _settle(batch, results)
        if progress is not None:
            progress(len(results))
    for index in pending:
        item = events.item(index)
        results[index] = AppendResult(
            item.event_id,
            item.subject,
            duplicate=None,
            error=f"no acknowledgement after {settings.append_retries + 1} attempts; "
            "the event may or may not be stored: retry with the same id",
        )
    return [results[index] for index in range(len(events))]


def _settle(batch: _Batch, results: dict[int, AppendResult]) -> list[int]:
    """Record what the batch settled; return the indices still to send, in order."""
    confirmed = batch.confirmed()
    final = batch.state.final
    last_seq = int(str(final["seq"])) if final is not None and "seq" in final else None
    errors = batch.state.errors
    last_position = len(batch.sent) - 1
    for position, index in enumerate(batch.sent[:confirmed]):
        item = batch.events.item(index)
        results[index] = AppendResult(
            item.event_id,
            item.subject,
            last_seq if position == last_position else None,
            None,
            errors.get(position + 1) if errors else None,
        )
    still_pending = []
    for index in batch.indices:
        if index in results:
            continue
        refusal = batch.events.refusal(index)
        if refusal is not None:
            results[index] = refusal
        else:
            still_pending.append(index)
    return still_pending


__all__ = ["FastIngestUnavailable", "append_fast"]
