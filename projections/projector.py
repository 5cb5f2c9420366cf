"""The projector runtime: fold the log into a read model, batch by batch, with the
checkpoint written in the same transaction as the rows (G4).

A crash anywhere leaves the read model at a batch boundary; a restart resumes from
``checkpoint + 1``. ``wait_for(seq)`` gives read-your-writes to an API in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from eventstore.store import EventStore
from eventstore.types import StoredRecord
from projections.contract import Changes, ReadModelBackend
from projections.fold import fold, keys_for
from projections.overlay import overlay

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProjectorSettings:
    batch_size: int = 2000
    """Most events applied in one transaction."""
    batch_wait: float = 0.05
    """Seconds a partial batch waits for more events before it is applied anyway."""
    queue_batches: int = 4
    """Read-ahead while a batch is written: up to ``4 * queue_batches`` lists of records
    (a list is what one socket read brought, typically a few hundred records)."""
    commits_in_flight: int = 2
    """Most batches committing at once, for a backend that queues commits in order
    (its ``commit_pipeline_depth``; others get one at a time)."""


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
        """The log's sequences not yet applied, as of the last :meth:`refresh_lag` (a
        held timer past the log's last event is not counted: no projector applies it)."""
        return max(0, self.stream_last_seq - self.checkpoint)

    async def refresh_lag(self) -> int:
        """Ask the server for the log's last sequence and return the lag."""
        # The log's end, not the stream's: a held timer is never applied (decision 21).
        log_end = await self.store.last_log_seq(after=self.checkpoint)
        self.stream_last_seq = max(self.stream_last_seq, log_end)
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
        """Apply everything up to ``until_seq`` (default: the log's last sequence now)."""
        target = until_seq
        if target is None:
            target = await self.store.last_log_seq(after=self.checkpoint)
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
        source = self.store.record_batches(first, follow=follow, until_seq=until_seq)
        queue: asyncio.Queue[list[StoredRecord] | None] = asyncio.Queue(
            maxsize=max(2, self.settings.queue_batches * 4)
        )
        batcher = _Batcher(queue, self.settings)
        reader = asyncio.create_task(self._read_into(source, queue))
        stopper = asyncio.create_task(stop.wait()) if stop is not None else None
        # Commits under way (oldest first), running while the next batch is folded.
        committing: deque[_Commit] = deque()
        try:
            while True:
                batch = await batcher.next(stopper)
                if batch:
                    await self._fold_and_commit(batch, committing)
                if batch is None:
                    failure = (
                        reader.exception() if reader.done() and not reader.cancelled() else None
                    )
                    if failure is not None:
                        raise failure
                    break
                if stopper is not None and stopper.done():
                    break
            while committing:  # a clean end leaves nothing half-applied
                await committing.popleft().task
        finally:
            tasks = [reader, stopper, *(commit.task for commit in committing)]
            for task in tasks:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await source.aclose()

    async def _read_into(
        self,
        source: AsyncGenerator[list[StoredRecord]],
        queue: asyncio.Queue[list[StoredRecord] | None],
    ) -> None:
        try:
            async for records in source:
                await queue.put(records)
        finally:
            await queue.put(None)  # end of a bounded read, or the reader failed

    async def _fold_and_commit(self, batch: list[StoredRecord], committing: deque[_Commit]) -> None:
        """Fold ``batch`` while the batches in ``committing`` commit, then start its own
        commit (appended to ``committing``).

        Commits are issued strictly in order, and everything before ``committing[0]``
        has committed; the rows of the batches still committing are laid over what the
        load found, oldest first (:func:`~projections.overlay.overlay`). With a backend
        that takes one commit at a time, this one starts only after the previous one
        ended (and raises its error, if any); one that queues commits in order gets the
        next while the previous is still being written.
        """
        started = asyncio.get_running_loop().time()
        keys = keys_for(batch)
        snapshot = await self.backend.load(keys)
        for pending in committing:
            overlay(snapshot, keys, pending.changes)
        changes = fold(batch, snapshot)
        depth = max(1, min(self.settings.commits_in_flight, _pipeline_depth(self.backend)))
        while committing and (len(committing) >= depth or committing[0].task.done()):
            await committing.popleft().task
        # No await between here and the commit's first step: commits start in order.
        task = asyncio.create_task(self._commit(batch, changes, started))
        committing.append(_Commit(changes, task))

    async def _commit(self, batch: list[StoredRecord], changes: Changes, started: float) -> None:
        await self.backend.commit(changes)
        async with self._progress:
            self.checkpoint = max(self.checkpoint, changes.last_seq)
            self.stream_last_seq = max(self.stream_last_seq, changes.last_seq)
            self._progress.notify_all()
        if self.on_batch is not None:
            elapsed = asyncio.get_running_loop().time() - started
            self.on_batch(BatchApplied(batch[0].seq, batch[-1].seq, len(batch), elapsed))


def _pipeline_depth(backend: ReadModelBackend) -> int:
    """How many commits ``backend`` takes at once, in order (an optional attribute:
    backends without it take one)."""
    depth = getattr(backend, "commit_pipeline_depth", 1)
    return depth if isinstance(depth, int) else 1


@dataclass(frozen=True, slots=True)
class _Commit:
    """A folded batch whose write is under way."""

    changes: Changes
    task: asyncio.Task[None]


class _Batcher:
    """Cuts the reader's lists into batches of at most ``batch_size`` records, waiting
    up to ``batch_wait`` for a partial batch to fill."""

    def __init__(
        self, queue: asyncio.Queue[list[StoredRecord] | None], settings: ProjectorSettings
    ) -> None:
        self._queue = queue
        self._settings = settings
        self._carry: list[StoredRecord] = []
        self._ended = False

    async def next(self, stopper: asyncio.Task[bool] | None) -> list[StoredRecord] | None:
        """The next batch; ``[]`` when ``stopper`` fired first, ``None`` once the source
        has ended and everything was handed out."""
        size = self._settings.batch_size
        batch, self._carry = self._carry[:size], self._carry[size:]
        if len(batch) >= size:
            return batch
        if not batch:
            if self._ended:
                return None
            first = await self._first(stopper)
            if first is None:
                return None if self._ended else []
            batch = first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.batch_wait
        while len(batch) < size and not self._ended:
            try:
                more = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    more = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if more is None:
                self._ended = True
                break
            batch.extend(more)
        batch, self._carry = batch[:size], batch[size:]
        return batch

    async def _first(self, stopper: asyncio.Task[bool] | None) -> list[StoredRecord] | None:
        getting = asyncio.ensure_future(self._queue.get())
        waiters: set[asyncio.Future[Any]] = {getting}
        if stopper is not None:
            waiters.add(stopper)
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if getting not in done:
            getting.cancel()
            return None
        first = getting.result()
        if first is None:
            self._ended = True
        return first


__all__ = ["BatchApplied", "Projector", "ProjectorSettings"]
