"""Live fan-out: one follower of the log per subject filter, shared by every tail of it.

200 browsers tailing one busy session cost one JetStream reader, and each event is
encoded to an SSE frame once. A tail joins in three steps that leave no gap and no
duplicate: (1) the hub for its filter is running, following the log from some sequence;
(2) the tail subscribes, so every record the hub reads from now on is queued for it;
(3) the tail replays the log from its own start to the end *as it is then*, which
reaches at least where the hub was at (2). It then drains its queue, skipping sequences
it already replayed. A tail whose queue overflows (a client too slow for the session) is
closed with an error frame; it reconnects with ``Last-Event-ID`` and replays what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from nats.errors import Error as NatsError

from eventstore.codec import Undecodable
from eventstore.errors import EventStoreError
from eventstore.routing import TERMINAL_TYPES
from eventstore.store import EventStore
from eventstore.types import StoredRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One event ready to send: its sequence, whether it ends a run, the SSE bytes."""

    seq: int
    terminal: bool
    data: bytes


def frame_of(record: StoredRecord) -> Frame | None:
    if isinstance(record.item, Undecodable):
        log.warning("skipping undecodable record %d on %s", record.seq, record.subject)
        return None
    event = record.item
    body = event.model_dump_json()
    return Frame(
        record.seq,
        event.type in TERMINAL_TYPES,
        f"id: {record.seq}\nevent: {event.type}\ndata: {body}\n\n".encode(),
    )


def error_frame(code: str, message: str) -> bytes:
    body = json.dumps({"code": code, "message": message, "details": {}})
    return f"event: error\ndata: {body}\n\n".encode()


class TailClosed(Exception):
    """The hub stopped feeding this tail (NATS away, or the tail fell too far behind)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Subscriber:
    limit: int
    """Frames it may have queued; the queue holds one more slot for the closing notice,
    so closing never drops a queued frame (which would be a gap before the resume)."""
    queue: asyncio.Queue[Frame | TailClosed] = field(init=False)
    overflowed: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.limit + 1)


@dataclass(eq=False)
class Hub:
    subject_filter: str
    subscribers: set[Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def publish(self, item: Frame | TailClosed) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.overflowed:
                continue
            if subscriber.queue.qsize() < subscriber.limit or isinstance(item, TailClosed):
                subscriber.queue.put_nowait(item)
                continue
            subscriber.overflowed = True
            self.subscribers.discard(subscriber)
            subscriber.queue.put_nowait(
                TailClosed("slow_consumer", "too far behind: reconnect with Last-Event-ID")
            )


class FanOut:
    """The hubs of one API process, by subject filter."""

    def __init__(self, store: EventStore, queue_frames: int) -> None:
        self.store = store
        self.queue_frames = queue_frames
        self._hubs: dict[str, Hub] = {}
        self._lock = asyncio.Lock()

    async def _follow(self, hub: Hub, from_seq: int) -> None:
        records = self.store.records(from_seq, follow=True, subject_filter=hub.subject_filter)
        try:
            async with contextlib.aclosing(records):
                async for record in records:
                    frame = frame_of(record)
                    if frame is not None:
                        hub.publish(frame)
        except (EventStoreError, NatsError, OSError) as exc:
            log.warning("live tail of %s stopped: %s", hub.subject_filter, exc)
            await self._fail(hub, TailClosed("nats_unavailable", f"NATS is not available: {exc}"))
        except Exception:  # a boundary: the tails must hear of it, not hang
            log.exception("live tail of %s failed", hub.subject_filter)
            await self._fail(hub, TailClosed("internal_error", "the live tail failed"))

    async def _fail(self, hub: Hub, notice: TailClosed) -> None:
        hub.publish(notice)
        async with self._lock:
            if self._hubs.get(hub.subject_filter) is hub:
                del self._hubs[hub.subject_filter]

    async def join(self, subject_filter: str) -> tuple[Hub, Subscriber]:
        """Subscribe to the hub of ``subject_filter`` (started if needed); pass the result
        to :meth:`frames`, which leaves the hub when it ends."""
        async with self._lock:
            hub = self._hubs.get(subject_filter)
            if hub is None:
                hub = Hub(subject_filter)
                start = await self.store.last_seq() + 1
                hub.task = asyncio.create_task(self._follow(hub, start))
                self._hubs[subject_filter] = hub
            subscriber = Subscriber(self.queue_frames)
            hub.subscribers.add(subscriber)
            return hub, subscriber

    async def _leave(self, hub: Hub, subscriber: Subscriber) -> None:
        async with self._lock:
            hub.subscribers.discard(subscriber)
            if hub.subscribers or self._hubs.get(hub.subject_filter) is not hub:
                return
            del self._hubs[hub.subject_filter]
        if hub.task is not None:
            hub.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hub.task

    async def close(self) -> None:
        async with self._lock:
            hubs, self._hubs = list(self._hubs.values()), {}
        for hub in hubs:
            if hub.task is not None:
                hub.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hub.task

    async def frames(
        self,
        joined: tuple[Hub, Subscriber],
        from_seq: int,
        *,
        ends_at_terminal: bool,
        heartbeat: float,
    ) -> AsyncGenerator[Frame | None]:
        """Frames from ``from_seq`` on, then live; ``None`` after ``heartbeat`` idle
        seconds. Ends after a terminal event when ``ends_at_terminal``. Raises
        :class:`TailClosed` when the live feed stops."""
        hub, subscriber = joined
        try:
            last = from_seq - 1
            replay = self.store.records(from_seq, subject_filter=hub.subject_filter)
            async with contextlib.aclosing(replay):
                async for record in replay:
                    frame = frame_of(record)
                    last = record.seq
                    if frame is not None:
                        yield frame
                        if ends_at_terminal and frame.terminal:
                            return
            while True:
                try:
                    async with asyncio.timeout(heartbeat):
                        item = await subscriber.queue.get()
                except TimeoutError:
                    yield None
                    continue
                if isinstance(item, TailClosed):
                    raise item
                if item.seq <= last:
                    continue  # replayed already
                last = item.seq
                yield item
                if ends_at_terminal and item.terminal:
                    return
        finally:
            await self._leave(hub, subscriber)


__all__ = ["FanOut", "Frame", "TailClosed", "error_frame", "frame_of"]
