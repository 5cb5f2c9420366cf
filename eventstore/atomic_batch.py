"""``append_many`` with ADR-50 atomic batches (nats-server 2.12.1+).

Events go out in batches of up to ``batch_size`` (server limit 1000) that the server
stores all-or-nothing, each event still carrying its ``Nats-Msg-Id``. Only the commit
message asks for an acknowledgement, whose sequence and count give every event's
sequence. Several batches are in flight at once, bounded by ``max_inflight`` events.

A batch the server refuses (for example because one id is a duplicate) or whose
acknowledgement never comes is replayed event by event through :func:`publish_one`,
which reports each event's own outcome; dedupe makes that replay safe.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient

from eventstore.prepared import PreparedEvents
from eventstore.publish import MSG_ID, Outgoing, publish_one_result
from eventstore.reply_inbox import ReplyInbox
from eventstore.settings import StoreSettings
from eventstore.types import AppendResult
from eventstore.wire import Frame, publish_frames

SERVER_MAX_BATCH = 1000
SERVER_MAX_OPEN_BATCHES = 50


def _batch_frames(chunk: Sequence[Outgoing], batch_id: str, reply: str) -> list[Frame]:
    last = len(chunk)
    frames = []
    for index, item in enumerate(chunk, 1):
        headers: tuple[tuple[str, str], ...] = (
            ("Nats-Batch-Id", batch_id),
            ("Nats-Batch-Sequence", str(index)),
            (MSG_ID, item.event_id),
        )
        if index == last:
            headers = (*headers, ("Nats-Batch-Commit", "1"))
        frames.append(Frame(item.subject, item.body, headers, reply if index == last else ""))
    return frames


def _results_from_ack(chunk: Sequence[Outgoing], data: bytes) -> list[AppendResult] | None:
    """Per-event results when the commit acknowledgement confirms the whole batch."""
    try:
        ack = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(ack, dict) or "error" in ack or ack.get("count") != len(chunk):
        return None
    first_seq = int(ack["seq"]) - len(chunk) + 1
    return [
        AppendResult(item.event_id, item.subject, seq=first_seq + offset)
        for offset, item in enumerate(chunk)
    ]


def _chunks(events: PreparedEvents, size: int) -> Iterator[tuple[list[int], list[Outgoing]]]:
    """Indices and items of the next ``size`` sendable events, encoded only when reached."""
    indices: list[int] = []
    for index in range(len(events)):
        if events.refusal(index) is None:
            indices.append(index)
            if len(indices) == size:
                yield indices, [events.item(i) for i in indices]
                indices = []
    if indices:
        yield indices, [events.item(i) for i in indices]


async def append_atomic(
    nc: NatsClient,
    events: PreparedEvents,
    settings: StoreSettings,
    progress: Callable[[int], None] | None = None,
) -> list[AppendResult]:
    """Append in atomic batches with a sequence per event; refused events get ``error``."""
    batch_size = max(1, min(settings.batch_size, SERVER_MAX_BATCH))
    window = max(1, min(settings.max_inflight // batch_size, SERVER_MAX_OPEN_BATCHES // 2))
    answers: dict[str, asyncio.Future[bytes]] = {}

    def on_reply(tail: str, data: bytes) -> None:
        future = answers.pop(tail, None)
        if future is not None and not future.done():
            future.set_result(data)

    results: dict[int, AppendResult] = {}
    in_flight: deque[tuple[list[int], list[Outgoing], asyncio.Future[bytes] | None]] = deque()
    loop = asyncio.get_running_loop()

    async def settle_oldest() -> None:
        indices, chunk, future = in_flight.popleft()
        data: bytes | None = None
        if future is not None:
            try:
                data = await asyncio.wait_for(future, settings.request_timeout)
            except TimeoutError:
                data = None
        confirmed = _results_from_ack(chunk, data) if data is not None else None
        if confirmed is None:
            # Refused or unknown outcome: let each event speak for itself.
            confirmed = [await publish_one_result(nc, item, settings) for item in chunk]
        results.update(zip(indices, confirmed, strict=True))
        if progress is not None:
            progress(len(results))

    async with ReplyInbox(nc, on_reply) as inbox:
        for indices, chunk in _chunks(events, batch_size):
            tail = uuid.uuid4().hex[:22]
            answer: asyncio.Future[bytes] = loop.create_future()
            answers[tail] = answer
            future: asyncio.Future[bytes] | None = answer
            try:
                await publish_frames(nc, _batch_frames(chunk, tail, inbox.reply_subject(tail)))
            except (nats_errors.OutboundBufferLimitError, nats_errors.ConnectionClosedError):
                future = None  # replayed event by event when settled
            in_flight.append((indices, chunk, future))
            while len(in_flight) >= window:
                await settle_oldest()
        while in_flight:
            await settle_oldest()
    for index in range(len(events)):
        if index not in results:
            refusal = events.refusal(index)
            assert refusal is not None  # every sendable event was settled above
            results[index] = refusal
    return [results[index] for index in range(len(events))]


__all__ = ["append_atomic"]
