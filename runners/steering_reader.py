"""A run's side of its steering inbox (see :mod:`runners.steering`): ``ctx.next_steering``.

Items already injected are returned again from the run's journal (``steering.injected``
events, in order) without recording anything, so a handler re-invoked after a wait or a
crash sees the same messages in the same order; after those, new ``queued`` items are
read from a KV watch on the run's prefix and each is recorded as ``steering.injected``
before the handler gets it. A read that timed out is not recorded: replayed, it may
return a message that arrived since.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js.kv import KeyValue

from eventstore.catalog import (
    SteeringDropped,
    SteeringDroppedData,
    SteeringInjected,
    SteeringInjectedData,
)
from eventstore.envelope import Event
from runners.steering import QUEUED, Inbox, SteeringMessage, content_json

log = logging.getLogger(__name__)

Emit = Callable[[Event], Awaitable[None]]


class SteeringReader:
    """What ``ctx.next_steering`` reads: first the items the run's journal says were
    injected already (in order, recording nothing), then new ``queued`` items."""

    def __init__(
        self,
        inbox: Inbox,
        recorded: list[SteeringInjected],
        *,
        envelope: Callable[[], dict[str, Any]],
        emit: Emit,
        cancelled: asyncio.Event,
    ) -> None:
        self.inbox = inbox
        self._recorded = recorded
        self._replayed = 0
        self.injected: set[str] = {event.data.steer_event_id for event in recorded}
        self._envelope = envelope
        self._emit = emit
        self._cancelled = cancelled
        self._queue: asyncio.Queue[KeyValue.Entry] = asyncio.Queue()
        self._watcher: KeyValue.KeyWatcher | None = None
        self._pump: asyncio.Task[None] | None = None

    async def next(self, timeout: float | None) -> SteeringMessage | None:
        """The next message, or None after ``timeout`` seconds or once cancelled."""
        if self._replayed < len(self._recorded):
            event = self._recorded[self._replayed]
            self._replayed += 1
            return SteeringMessage(event.data.steer_event_id, content_json(event.data.content))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._cancelled.is_set():
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            entry = await self._next_entry(remaining)
            if entry is None:
                return None
            value = json.loads(entry.value or b"null")
            if not isinstance(value, dict) or value.get("state") != QUEUED:
                continue
            steer_id = str(value["steer_event_id"])
            if steer_id in self.injected:
                continue
            self.injected.add(steer_id)
            envelope = {**self._envelope(), "causation_id": steer_id}
            await self._emit(
                SteeringInjected(
                    **envelope,
                    id=f"{self.inbox.run_id}:steer:{steer_id}",
                    data=SteeringInjectedData(steer_event_id=steer_id, content=value["content"]),
                )
            )
            return SteeringMessage(steer_id, value["content"])
        return None

    async def _next_entry(self, timeout: float | None) -> KeyValue.Entry | None:
        if self._pump is None:
            self._watcher = await self.inbox.watch()
            self._pump = asyncio.create_task(self._pump_entries(self._watcher))
        getting = asyncio.ensure_future(self._queue.get())
        cancelled = asyncio.ensure_future(self._cancelled.wait())
        try:
            await asyncio.wait({getting, cancelled}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            cancelled.cancel()
            if not getting.done():
                getting.cancel()
        return getting.result() if getting.done() and not getting.cancelled() else None

    async def _pump_entries(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None and entry.operation is None:
                await self._queue.put(entry)

    async def stop(self) -> None:
        """Stop watching (the handler is done)."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        if self._watcher is not None:
            with contextlib.suppress(Exception):  # the connection may be closing
                await self._watcher.stop()  # type: ignore[no-untyped-call]
            self._watcher = None

    async def close(self) -> None:
        """At the run's end, before its terminal event: record unread items as dropped."""
        await self.stop()

        async def drop(value: dict[str, Any]) -> None:
            steer_id = str(value["steer_event_id"])
            envelope = {**self._envelope(), "causation_id": steer_id}
            await self._emit(
                SteeringDropped(
                    **envelope,
                    id=f"{self.inbox.run_id}:steer-dropped:{steer_id}",
                    data=SteeringDroppedData(
                        steer_event_id=steer_id, reason="run_ended", content=value.get("content")
                    ),
                )
            )

        dropped = await self.inbox.close(self.injected, drop)
        if dropped:
            log.info("run %s ended with %d unread steering messages", self.inbox.run_id, dropped)


__all__ = ["SteeringReader"]
