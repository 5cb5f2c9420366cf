"""``append_many`` with ADR-50 fast-ingest batches (nats-server 2.14+, ``allow_batched``).

The server stores each message as it arrives and confirms progress with a flow
acknowledgement every ``flow`` messages instead of one acknowledgement per message;
per-message refusals arrive as ``err`` replies naming the batch sequence. The batch is
identified by the reply subject ``<inbox>.<flow>.<gap mode>.<batch seq>.<op>.$FI``.

When acknowledgements stop (server restart, network), everything after the last flow
acknowledgement is sent again in a new batch with the same ``Nats-Msg-Id`` values, so
events that did reach the log are dropped as duplicates and the rest are stored once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient

from eventstore.publish import MSG_ID, Outgoing
from eventstore.reply_inbox import ReplyInbox
from eventstore.settings import StoreSettings
from eventstore.types import AppendResult
from eventstore.wire import Frame, publish_frames

log = logging.getLogger(__name__)

ERR_FAST_BATCH_NOT_ENABLED = 10205
MAX_OUTSTANDING_WINDOWS = 3


class FastIngestUnavailable(Exception):
    """The stream or server does not accept fast-ingest batches."""


class _Op(IntEnum):
    START = 0
    APPEND = 1
    COMMIT = 2


@dataclass(slots=True)
class _BatchState:
    acked: int = 0
    started: bool = False
    """The server acknowledged the first message (its ack carries sequence 0)."""
    flow: int = 1
    errors: dict[int, str] = field(default_factory=dict)
    final: dict[str, object] | None = None
    fatal: str | None = None
    fatal_code: int | None = None

    on_progress: Callable[[int], None] | None = None

    def on_reply(self, _tail: str, data: bytes) -> None:
        try:
            reply = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
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


@dataclass(frozen=True, slots=True)
class _BatchOutcome:
    confirmed: int
    """Leading messages of the batch known to be processed (stored or refused)."""
    errors: dict[int, str]
    """0-based position -> reason, for refused messages."""
    last_seq: int | None
    """Stream sequence of the last message, when the batch committed."""


async def _wait(
    inbox: ReplyInbox, state: _BatchState, done: Callable[[], bool], timeout: float
) -> bool:
    """Wait until ``done()`` holds or no reply arrives for ``timeout`` seconds."""
    while not done():
        if state.fatal is not None:
            return False
        inbox.activity.clear()
        try:
            await asyncio.wait_for(inbox.activity.wait(), timeout)
        except TimeoutError:
            return done()
    return True


async def _send_batch(
    nc: NatsClient,
    chunk: Sequence[Outgoing],
    settings: StoreSettings,
    on_progress: Callable[[int], None] | None = None,
) -> _BatchOutcome:
    state = _BatchState(flow=max(1, settings.flow_window), on_progress=on_progress)
    total = len(chunk)
    async with ReplyInbox(nc, state.on_reply) as inbox:
        prefix = f"{inbox.prefix}.{settings.flow_window}.fail."

        def frame(position: int, op: _Op) -> Frame:
            item = chunk[position]
            reply = f"{prefix}{position + 1}.{int(op)}.$FI"
            return Frame(item.subject, item.body, ((MSG_ID, item.event_id),), reply)

        def outcome() -> _BatchOutcome:
            errors = {seq - 1: reason for seq, reason in state.errors.items() if seq >= 1}
            if state.final is not None and "seq" in state.final:
                return _BatchOutcome(total, errors, int(str(state.final["seq"])))
            return _BatchOutcome(min(state.acked, total), errors, None)

        try:
            await publish_frames(nc, [frame(0, _Op.COMMIT if total == 1 else _Op.START)])
            first_done = await _wait(
                inbox,
                state,
                lambda: state.started or state.final is not None,
                settings.request_timeout,
            )
            if state.fatal_code == ERR_FAST_BATCH_NOT_ENABLED:
                raise FastIngestUnavailable(state.fatal or "fast ingest not enabled")
            if not first_done:
                return outcome()
            sent = 1
            while sent < total - 1:
                windows = max(1, min(MAX_OUTSTANDING_WINDOWS, settings.max_inflight // state.flow))

                def window_open(limit: int = sent, windows: int = windows) -> bool:
                    return limit - state.acked < state.flow * windows

                if not await _wait(inbox, state, window_open, settings.request_timeout):
                    return outcome()
                upto = min(total - 1, sent + state.flow)
                await publish_frames(nc, [frame(i, _Op.APPEND) for i in range(sent, upto)])
                sent = upto
            if total > 1:
                await publish_frames(nc, [frame(total - 1, _Op.COMMIT)])
            await _wait(inbox, state, lambda: state.final is not None, settings.request_timeout)
        except (nats_errors.OutboundBufferLimitError, nats_errors.ConnectionClosedError) as exc:
            log.warning("fast batch interrupted: %s", type(exc).__name__)
        return outcome()


async def _await_connection(nc: NatsClient, timeout: float) -> None:
    # nats-py has no "connected" event to wait on; poll its state, bounded by timeout.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not nc.is_connected and not nc.is_closed and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def append_fast(
    nc: NatsClient,
    items: Sequence[Outgoing],
    settings: StoreSettings,
    progress: Callable[[int], None] | None = None,
) -> list[AppendResult]:
    """Append ``items`` in fast-ingest batches; raises FastIngestUnavailable up front.

    ``progress`` is called with the number of leading events confirmed so far.
    """
    results: list[AppendResult | None] = [None] * len(items)
    pending = list(range(len(items)))
    delay = settings.append_retry_backoff
    for attempt in range(settings.append_retries + 1):
        if not pending or nc.is_closed:
            break
        if attempt:
            log.info("fast batch: resending %d unconfirmed events", len(pending))
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.request_timeout)
            await _await_connection(nc, settings.request_timeout * 2)
        done_before = len(items) - len(pending)

        def report(acked: int, base: int = done_before) -> None:
            if progress is not None:
                progress(base + min(acked, len(items) - base))

        outcome = await _send_batch(nc, [items[i] for i in pending], settings, report)
        for position in range(outcome.confirmed):
            index = pending[position]
            item = items[index]
            reason = outcome.errors.get(position)
            is_last = position == len(pending) - 1
            results[index] = AppendResult(
                item.event_id,
                item.subject,
                seq=outcome.last_seq if is_last and outcome.last_seq is not None else None,
                duplicate=None,
                error=reason,
            )
        pending = pending[outcome.confirmed :]
        if progress is not None:
            progress(len(items) - len(pending))
    for index in pending:
        item = items[index]
        results[index] = AppendResult(
            item.event_id,
            item.subject,
            duplicate=None,
            error=f"no acknowledgement after {settings.append_retries + 1} attempts; "
            "the event may or may not be stored: retry with the same id",
        )
    return [result for result in results if result is not None]


__all__ = ["FastIngestUnavailable", "append_fast"]
