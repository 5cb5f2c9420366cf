"""Coalescing of a run's token chunks into ``message.delta`` events (G8).

The first chunk after a quiet ``chunk_window`` goes out at once (time to first token is
not taxed), later ones at most once per window, joined; whatever is buffered is flushed
before the run's terminal event. On replay (G5) the characters already published are
skipped, and delta indexes continue after the journal's.

Separate from :mod:`runners.context` because the buffer, its timer task and its lock are
state of their own: :class:`~runners.context.AgentContext` only hands chunks in and
publishes the joined text it gets back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

PublishDelta = Callable[[str, int], Awaitable[None]]
"""Publishes one ``message.delta``: the joined text and the delta's index."""


class ChunkCoalescer:
    """The pieces of one run's answer, published as at most one delta per window."""

    def __init__(
        self, window: float, *, replay_chars: int, next_index: int, publish: PublishDelta
    ) -> None:
        self._window = window
        self._replay_chars = replay_chars
        """Characters of the answer already in the log (replay): not published again."""
        self._publish = publish
        self._chunks: list[str] = []
        self._index = next_index
        self._flush_task: asyncio.Task[None] | None = None
        self._last_flush = -math.inf
        """When the last delta went out (``time.monotonic``)."""
        self._lock = asyncio.Lock()

    def add(self, text: str) -> None:
        """Buffer ``text``; a delta goes out at once after a quiet window, else when the
        window since the last one ends."""
        if not text:
            return
        if self._replay_chars:
            skipped = min(self._replay_chars, len(text))
            self._replay_chars -= skipped
            text = text[skipped:]
            if not text:
                return
        self._chunks.append(text)
        if self._flush_task is None:
            wait = self._last_flush + self._window - time.monotonic()
            self._flush_task = asyncio.create_task(self._flush_later(wait))

    async def _flush_later(self, wait: float) -> None:
        if wait > 0:
            await asyncio.sleep(wait)
        self._flush_task = None
        await self.flush()

    async def flush(self) -> None:
        """Publish the buffered chunks now, as one delta."""
        async with self._lock:
            if self._flush_task is not None and self._flush_task is not asyncio.current_task():
                self._flush_task.cancel()
                self._flush_task = None
            if not self._chunks:
                return
            text, self._chunks = "".join(self._chunks), []
            index, self._index = self._index, self._index + 1
            self._last_flush = time.monotonic()
            await self._publish(text, index)


__all__ = ["ChunkCoalescer", "PublishDelta"]
