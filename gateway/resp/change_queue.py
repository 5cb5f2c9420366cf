"""Group commit of read-modify-write changes, one queue per KV key.

Changes to one key from any client of this adapter line up in the key's queue, in the
order they were made. One flusher per key takes everything queued, applies the changes
in order to the key's value, and writes the result once, checked by revision; each
change's caller then gets the reply its change computed. A revision conflict (another
adapter wrote the key) re-reads the key and applies the whole batch again, so changes
must be pure. Three HINCRBY commands and an ``EXPIRE`` of one ``EXEC`` cost one write, and
64 concurrent increments of one field cost a few.

With write-behind (decision 27) the replies of a batch whose changes need no
confirmation are released once the batch is decided, before its write is acknowledged;
the write still goes out, revision-checked, and a write that then fails is reported to
the connections that made its changes (``write_owner``).
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


LostWriteSink = Callable[[bytes, BaseException], None]
"""Told about a change whose reply was sent early and whose write then failed."""

write_owner: ContextVar[LostWriteSink | None] = ContextVar("write_owner", default=None)
"""Set by each connection: where a lost early-acknowledged change of it is reported."""


@dataclass(slots=True)
class QueuedChange:
    key: bytes
    change: Callable[[Any], Any]
    """``StoredValue | None -> Change``, pure (it may run again after a conflict)."""
    replaces_stream: bool
    reply: asyncio.Future[Any]
    confirm: bool = True
    """Reply only once the write is acknowledged (compare-and-set style commands)."""
    on_lost: LostWriteSink | None = None
    answered_early: bool = False
    """Its reply was sent before its write was acknowledged (write-behind)."""
    ahead: int = 0
    """Decided on the value of a write still in flight (``submit_decided``): the version
    of the value it made; its reply is already set."""
    blind: bool = False
    """Its new value does not depend on the key's value (a plain ``SET``): a batch it
    starts need not read the key first, and its write needs no revision check."""


BatchApplier = Callable[[str, list[QueuedChange]], Awaitable[None]]


class ChangeQueues:
    """The per-key queues of one keyspace; ``apply`` settles every reply of a batch."""

    def __init__(self, apply: BatchApplier) -> None:
        self._apply = apply
        self._queues: dict[str, list[QueuedChange]] = {}
        self._flushers: set[asyncio.Task[None]] = set()
        self._lingering: dict[str, asyncio.Future[None]] = {}
        """Keys whose flusher waits for more changes, woken by an undecided change."""

    def busy(self, kv_key: str) -> bool:
        """Whether a change of ``kv_key`` is queued or being written."""
        return kv_key in self._queues

    def queued(self, kv_key: str) -> bool:
        """Whether a change of ``kv_key`` waits for the next write (decided or not)."""
        return bool(self._queues.get(kv_key))

    def waiting(self, kv_key: str) -> bool:
        """Whether a change of ``kv_key`` is queued and not yet decided."""
        return any(not item.ahead for item in self._queues.get(kv_key, ()))

    def submit_decided(
        self, kv_key: str, key: bytes, change: Callable[[Any], Any], reply: Any, version: int
    ) -> None:
        """Queue a change already decided (and answered) on the value of the write in
        flight; it is applied again, in order, on the acknowledged value."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(reply)
        item = QueuedChange(key, change, False, future, False, write_owner.get(), True, version)
        self._queue(kv_key).append(item)

    def submit(
        self,
        kv_key: str,
        key: bytes,
        change: Callable[[Any], Any],
        *,
        replaces_stream: bool = False,
        announce: bool = True,
        confirm: bool = True,
        blind: bool = False,
    ) -> asyncio.Future[Any]:
        """Queue ``change``; the future gets its reply (or its error) once written, or
        once decided when ``confirm`` is false and the keyspace writes behind."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(kv_key).append(
            QueuedChange(
                key, change, replaces_stream, reply, confirm, write_owner.get(), blind=blind
            )
        )
        hook = change_queued.get()
        if announce and hook is not None and not hook.done():
            hook.set_result(None)
        lingering = self._lingering.get(kv_key)
        if lingering is not None and not lingering.done():
            lingering.set_result(None)  # someone waits for this reply: write now
        return reply

    async def linger(self, kv_key: str, seconds: float) -> list[QueuedChange]:
        """Wait up to ``seconds`` (less if an undecided change of ``kv_key`` arrives), then
        take every change queued meanwhile, in order, for the flusher's write in progress:
        those decided at once (``submit_decided``) and the one that cut the wait short
        (a ``DEL`` after a ``SET``: one write, not two in a row)."""
        queue = self._queues.get(kv_key)
        if queue is None:
            return []
        if not self.waiting(kv_key):
            woken = asyncio.get_running_loop().create_future()
            self._lingering[kv_key] = woken
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await woken
            finally:
                del self._lingering[kv_key]
        taken = queue[:]
        queue.clear()
        return taken

    def _queue(self, kv_key: str) -> list[QueuedChange]:
        queue = self._queues.get(kv_key)
        if queue is None:
            queue = self._queues[kv_key] = []
            # A task, not a call: changes made in this loop turn join the first batch.
            flusher = asyncio.ensure_future(self._flush(kv_key, flush_gate.get()))
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return queue

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
            if item.answered_early:
                if item.on_lost is not None:
                    item.on_lost(item.key, exc)  # answered, then not stored: reported
            elif not item.reply.done():
                item.reply.set_exception(exc)

    def cut_lingers(self) -> None:
        """Wake every flusher that waits for more changes: its write goes out now."""
        for woken in self._lingering.values():
            if not woken.done():
                woken.set_result(None)

    async def drained(self) -> None:
        """Return once every change queued so far is written (or has failed): commands
        that ask the server about the whole bucket (KEYS, SCAN, DBSIZE, FLUSHDB) must
        not miss, or outlive, a write answered early."""
        flushers = [flusher for flusher in self._flushers if not flusher.done()]
        if flushers:
            await asyncio.wait(flushers)

    async def close(self, grace: float = 0.0) -> None:
        """Stop the flushers; ``grace`` seconds first let queued writes finish (writes
        behind whose replies were already sent)."""
        if self._flushers and grace > 0:
            await asyncio.wait(list(self._flushers), timeout=grace)
        for flusher in list(self._flushers):
            flusher.cancel()
        for flusher in list(self._flushers):
            with contextlib.suppress(asyncio.CancelledError):
                await flusher


__all__ = [
    "BatchApplier",
    "ChangeQueues",
    "LostWriteSink",
    "QueuedChange",
    "change_queued",
    "write_owner",
]
