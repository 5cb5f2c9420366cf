"""Group commit of read-modify-write changes, one queue per KV key.

Changes to one key from any client of this adapter line up in the key's queue, in the
order they were made. One flusher per key takes everything queued, applies the changes
in order to the key's value, and writes the result once, checked by revision; each
change's caller then gets the reply its change computed. A revision conflict (another
adapter wrote the key) re-reads the key and applies the whole batch again, so changes
must be pure. Three HINCRBY commands and an ``EXPIRE`` of one ``EXEC`` cost one write, and
64 concurrent increments of one field cost a few.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

change_queued: ContextVar[asyncio.Future[None] | None] = ContextVar("change_queued", default=None)
"""Set by ``EXEC`` around one queued command: resolved once that command's change is in
its key's queue, so the next command may start without overtaking it on that key."""

flush_gate: ContextVar[asyncio.Future[None] | None] = ContextVar("flush_gate", default=None)
"""Set by ``EXEC`` while it queues: a key whose queue it opens is written only once the
gate opens, so the transaction's later changes of that key join the same write."""


@dataclass(slots=True)
class QueuedChange:
    key: bytes
    change: Callable[[Any], Any]
    """``StoredValue | None -> Change``, pure (it may run again after a conflict)."""
    replaces_stream: bool
    reply: asyncio.Future[Any]


BatchApplier = Callable[[str, list[QueuedChange]], Awaitable[None]]


class ChangeQueues:
    """The per-key queues of one keyspace; ``apply`` settles every reply of a batch."""

    def __init__(self, apply: BatchApplier) -> None:
        self._apply = apply
        self._queues: dict[str, list[QueuedChange]] = {}
        self._flushers: set[asyncio.Task[None]] = set()

    def busy(self, kv_key: str) -> bool:
        """Whether a change of ``kv_key`` is queued or being written."""
        return kv_key in self._queues

    def submit(
        self,
        kv_key: str,
        key: bytes,
        change: Callable[[Any], Any],
        *,
        replaces_stream: bool = False,
        announce: bool = True,
    ) -> asyncio.Future[Any]:
        """Queue ``change``; the future gets its reply (or its error) once written."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(kv_key)
        if queue is None:
            queue = self._queues[kv_key] = []
            # A task, not a call: changes made in this loop turn join the first batch.
            flusher = asyncio.ensure_future(self._flush(kv_key, flush_gate.get()))
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        queue.append(QueuedChange(key, change, replaces_stream, reply))
        hook = change_queued.get()
        if announce and hook is not None and not hook.done():
            hook.set_result(None)
        return reply

    async def _flush(self, kv_key: str, gate: asyncio.Future[None] | None) -> None:
        if gate is not None:
            await asyncio.shield(gate)
        while True:
            queue = self._queues[kv_key]
            if not queue:
                del self._queues[kv_key]
                return
            batch = queue[:]
            queue.clear()
            try:
                await self._apply(kv_key, batch)
            except asyncio.CancelledError:
                stopping = ConnectionError("the adapter is stopping")
                self._fail(batch + self._queues.pop(kv_key, []), stopping)
                raise
            except Exception as exc:  # noqa: BLE001 - not swallowed: each caller of the batch raises it
                self._fail(batch, exc)

    @staticmethod
    def _fail(batch: list[QueuedChange], exc: BaseException) -> None:
        for item in batch:
            if not item.reply.done():
                item.reply.set_exception(exc)

    async def close(self) -> None:
        for flusher in list(self._flushers):
            flusher.cancel()
        for flusher in list(self._flushers):
            with contextlib.suppress(asyncio.CancelledError):
                await flusher


__all__ = ["BatchApplier", "ChangeQueues", "QueuedChange", "change_queued"]
