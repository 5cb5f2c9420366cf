"""The projector runtime: fold the log into a read model, batch by batch, with the
checkpoint written in the same transaction as the rows (G4).

A crash anywhere leaves the read model at a batch boundary; a restart resumes from
``checkpoint + 1``. ``wait_for(seq)`` gives read-your-writes to an API in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from eventstore.store import EventStore
from eventstore.types import StoredRecord
from projections.contract import ReadModelBackend
from projections.fold import fold, keys_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProjectorSettings:
    batch_size: int = 2000
    """Most events applied in one transaction."""
    batch_wait: float = 0.05
    """Seconds a partial batch waits for more events before it is applied anyway."""
    queue_batches: int = 4
    """Batches read ahead while the previous one is written."""


@dataclass(frozen=True, slots=True)
class BatchApplied:
    """Reported after each committed batch (for progress bars and metrics)."""

    first_seq: int
    last_seq: int
    events: int
    seconds: float


class Projector:
    """Applies the log to one read-model backend."""

    def __init__(
        self,
        store: EventStore,
        backend: ReadModelBackend,
        settings: ProjectorSettings | None = None,
        *,
        on_batch: Callable[[BatchApplied], None] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings or ProjectorSettings()
        self.on_batch = on_batch
        self.checkpoint = 0
        self.start_seq = 1
        """Where an empty read model starts (replay ``--from-seq``)."""
        self.stream_last_seq = 0
        self._progress = asyncio.Condition()

    @property
    def lag(self) -> int:
        """Stream sequences not yet applied, as of the last :meth:`refresh_lag`."""
        return max(0, self.stream_last_seq - self.checkpoint)

    async def refresh_lag(self) -> int:
        """Ask the server for the stream's last sequence and return the lag."""
        self.stream_last_seq = max(self.stream_last_seq, await self.store.last_seq())
        return self.lag

    async def start(self) -> int:
        """Open the backend and read its checkpoint."""
        await self.backend.start()
        self.checkpoint = await self.backend.checkpoint()
        return self.checkpoint

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Follow the log and apply it until ``stop`` is set (or the task is cancelled)."""
        await self._apply_stream(follow=True, until_seq=None, stop=stop)

    async def catch_up(self, until_seq: int | None = None) -> int:
        """Apply everything up to ``until_seq`` (default: the stream's last sequence now)."""
        target = until_seq if until_seq is not None else await self.store.last_seq()
        self.stream_last_seq = max(self.stream_last_seq, target)
        if target > self.checkpoint:
            await self._apply_stream(follow=False, until_seq=target, stop=None)
        return self.checkpoint

    async def wait_for(self, seq: int, timeout: float) -> None:
        """Return once ``seq`` is applied; raise TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self.checkpoint >= seq)

    async def _apply_stream(
        self, *, follow: bool, until_seq: int | None, stop: asyncio.Event | None
    ) -> None:
        first = max(self.checkpoint + 1, self.start_seq)
        records = self.store.records(first, follow=follow, until_seq=until_seq)
        queue: asyncio.Queue[StoredRecord | None] = asyncio.Queue(
            maxsize=self.settings.batch_size * self.settings.queue_batches
        )
        reader = asyncio.create_task(self._read_into(records, queue))
        stopper = asyncio.create_task(stop.wait()) if stop is not None else None
        try:
            while True:
                batch = await self._next_batch(queue, stopper)
                if batch:
                    await self._apply(batch)
                if batch is None:
                    failure = (
                        reader.exception() if reader.done() and not reader.cancelled() else None
                    )
                    if failure is not None:
                        raise failure
                    return
                if stopper is not None and stopper.done():
                    return
        finally:
            for task in (reader, stopper):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await records.aclose()

    async def _read_into(
        self, records: AsyncGenerator[StoredRecord], queue: asyncio.Queue[StoredRecord | None]
    ) -> None:
        try:
            async for record in records:
                await queue.put(record)
        finally:
            await queue.put(None)  # end of a bounded read, or the reader failed

    async def _next_batch(
        self, queue: asyncio.Queue[StoredRecord | None], stopper: asyncio.Task[bool] | None
    ) -> list[StoredRecord] | None:
        """Up to ``batch_size`` records; ``None`` once the source has ended."""
        first_get = asyncio.ensure_future(queue.get())
        waiters: set[asyncio.Future[Any]] = {first_get}
        if stopper is not None:
            waiters.add(stopper)
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if first_get not in done:
            first_get.cancel()
            return []
        first = first_get.result()
        if first is None:
            return None
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_wait
        while len(batch) < self.settings.batch_size:
            try:
                record = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    record = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if record is None:
                queue.put_nowait(None)  # let the next call see the end
                break
            batch.append(record)
        return batch

    async def _apply(self, batch: list[StoredRecord]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        snapshot = await self.backend.load(keys_for(batch))
        changes = fold(batch, snapshot)
        await self.backend.commit(changes)
        async with self._progress:
            self.checkpoint = changes.last_seq
            self.stream_last_seq = max(self.stream_last_seq, changes.last_seq)
            self._progress.notify_all()
        if self.on_batch is not None:
            self.on_batch(
                BatchApplied(batch[0].seq, batch[-1].seq, len(batch), loop.time() - started)
            )


__all__ = ["BatchApplied", "Projector", "ProjectorSettings"]
