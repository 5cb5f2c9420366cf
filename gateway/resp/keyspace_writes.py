"""How the keyspace writes one key: batches checked by revision, and write-behind.

Changes of one key queue (:mod:`change_queue`) and reach :meth:`KeyWriter.apply_batch`
together: they are applied in order on the key's value and the result is written once,
checked by the entry's revision and retried on conflict. With ``kv_write_behind`` a
change that needs no confirmation is answered once it is decided, and its write is
acknowledged behind the reply (decision 27); such a write lingers ``kv_write_linger``
so that the key's next changes join it, and a blind ``SET`` of a key not cached here
is written without reading it (decision 29).

Split from :mod:`keyspace` because the write path alone holds the state of write-behind
(the values answered early, their versions, the ``INFO`` counters) and the rules of when
it applies; :class:`~gateway.resp.keyspace.Keyspace` keeps the reads, the key listings
and the stream keys, and asks this writer for the value answered early.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.resp.change_queue import ChangeQueues, QueuedChange
from gateway.resp.hash_encodings import HashEncodings
from gateway.resp.keyspace_changes import (
    NOTHING,
    Change,
    Outcome,
    Unchanged,
    ValueTooLarge,
    alive,
    live,
    maybe_too_large,
    now_ms,
)
from gateway.resp.kv_cache import ABSENT, Absent, KVCache
from gateway.resp.kvstore import KVRecord, KVStore, RevisionConflict
from gateway.resp.replies import WRONGTYPE, CommandError
from gateway.resp.settings import RespSettings
from gateway.resp.values import StoredValue

R = TypeVar("R")

StreamCheck = Callable[[bytes], Awaitable[bool]]
"""``Keyspace.is_stream`` / ``Keyspace.delete_stream``: the stream keys are not the
writer's, but a new value for a stream key replaces or refuses it."""


class KeyWriter:
    """The write path of one keyspace: its change queues and what was answered early."""

    def __init__(
        self,
        kv: KVStore,
        cache: KVCache,
        settings: RespSettings,
        *,
        is_stream: StreamCheck,
        delete_stream: StreamCheck,
    ) -> None:
        self.kv = kv
        self.cache = cache
        self.settings = settings
        self._is_stream = is_stream
        self._delete_stream = delete_stream
        self.queues = ChangeQueues(self.apply_batch)
        self._hash_texts = HashEncodings()
        self.settled: dict[str, tuple[StoredValue | None, int]] = {}
        """Values answered early whose write is not acknowledged yet (write-behind), each
        with a version (``_versions``) so a finished write forgets only its own value.
        Reads of the keyspace answer with them; the dict is never replaced."""
        self._versions = itertools.count(1)
        self.early_replies = 0
        """Replies sent before their write was acknowledged (``INFO stats``)."""
        self.lost_writes = 0
        """Writes behind an early reply that then failed (``INFO stats``)."""

    async def settle_early(self, timeout: float) -> None:
        """Return once every write answered early is stored (or failed), waiting at most
        ``timeout`` seconds: lingering writes go out at once. Called when another adapter
        greets this one, after write-behind has been turned off here, so no new early
        reply joins them while this waits. It waits for every write under way, a
        superset: those of other keys take the same few milliseconds."""
        self.queues.cut_lingers()
        if self.settled:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.queues.drained()

    async def record(self, kv_key: str) -> KVRecord | None:
        """The key's last message, from the cache when it is known there."""
        if self.cache.lookup(kv_key) is not None:
            await self.cache.sync()
            cached = self.cache.lookup(kv_key)
            if cached is not None:
                return None if isinstance(cached, Absent) else cached
        epoch = self.cache.epoch()
        record = await self.kv.get(kv_key)
        self.cache.store(kv_key, ABSENT if record is None else record, epoch)
        return record

    def decided_base(self, kv_key: str) -> StoredValue | None:
        """The value a change of ``kv_key`` can be decided on at once (write-behind): the
        value of a write in flight that was answered early, with nothing undecided
        waiting behind it. ``None``: the change goes through the queue (absent keys too:
        their stream-type rules need a wait). A key with nothing in line is decided by
        its flusher: deciding it here on the cached value saved no measurable time and
        widened the window in which a write of another adapter is not seen yet."""
        if (
            kv_key in self.settled
            and self.queues.busy(kv_key)
            and not self.queues.waiting(kv_key)
            and self._write_behind_allowed()
        ):
            return alive(self.settled[kv_key][0])
        return None

    def decide_now(
        self,
        kv_key: str,
        key: bytes,
        change: Callable[[StoredValue | None], Change[R]],
        base: StoredValue,
    ) -> R:
        """Answer ``change`` on ``base`` and queue it for the key's next write (where it
        is applied again, in order, on the stored value: changes are pure). Saves the
        loop turns of the queue, and the wait for a write in flight of the same key."""
        decided = change(base)  # a CommandError is the reply and changes nothing
        if isinstance(decided.value, Unchanged):
            return decided.reply
        if decided.value is not None and maybe_too_large(decided.value, self.kv.max_value_size):
            try:
                self._encoded(kv_key, decided.value)
            except ValueTooLarge as exc:
                raise CommandError(str(exc)) from None
        version = next(self._versions)
        self.settled[kv_key] = (decided.value, version)
        self.queues.submit_decided(kv_key, key, change, decided.reply, version)
        self.early_replies += 1
        return decided.reply

    async def apply_batch(self, kv_key: str, batch: list[QueuedChange]) -> None:
        """Apply ``batch`` in order on the key's value and write the result once."""
        try:
            version = await self._apply_batch_once(kv_key, batch)
        except BaseException:
            # Not stored (or not known to be): forget what was answered early and read
            # the server's value next time.
            if self.settled.pop(kv_key, NOTHING) is not NOTHING:
                self.cache.drop(kv_key)
                self.lost_writes += sum(item.answered_early for item in batch)
            raise
        settled = self.settled.get(kv_key)
        if settled is not None and (settled[1] == version or not self.queues.queued(kv_key)):
            # Stored, and no change decided on top of it waits for the next write.
            del self.settled[kv_key]

    async def _apply_batch_once(self, kv_key: str, batch: list[QueuedChange]) -> int | None:
        """Decide and write ``batch``; the version of the value it answered early with."""
        key = batch[0].key
        version: int | None = None
        conflicts = 0
        trust_cache = True
        # A blind first change decides the value whatever the key held: no read, and an
        # unconditional write (nothing older can conflict with it).
        blind = batch[0].blind and not self.cache.knows(kv_key)
        lingered = False
        while True:
            epoch = self.cache.epoch()
            record: KVRecord | None = None
            if not blind:
                record = await self.record(kv_key) if trust_cache else await self._fresh(kv_key)
            outcome = await self._decide(key, live(record), batch)
            if not outcome.changed:
                outcome.settle(batch)
                return version
            if outcome.delete_stream:
                await self._delete_stream(key)
            early = self._may_answer_early(outcome)
            encoded: tuple[bytes | None, float | None] | None = None
            if not early or self._maybe_too_large(outcome.value):
                try:
                    encoded = self._encoded(kv_key, outcome.value)
                except ValueTooLarge as exc:
                    await self._apply_apart(kv_key, batch, exc)
                    return None
            if early:
                version = self._answer_early(kv_key, batch, outcome) or version
                if not lingered and self._lingers(batch, outcome):
                    # Answered already: wait a little for the key's next changes (decided
                    # at once on this value meanwhile, or one that waits for the write)
                    # and write them all in one message.
                    lingered = True
                    more = await self.queues.linger(kv_key, self.settings.kv_write_linger)
                    if more:
                        batch.extend(more)  # the caller's list: a failure reaches them too
                        continue
            body, ttl = encoded if encoded is not None else self._encoded(kv_key, outcome.value)
            try:
                revision = None if blind else 0 if record is None else record.revision
                written = await self._put(kv_key, revision, outcome.value, body, ttl)
            except RevisionConflict:
                # Another adapter wrote the key (or a message expired): read it afresh.
                self.cache.drop(kv_key)
                trust_cache = False
                conflicts += 1
                await self._back_off(conflicts)
                continue
            self.cache.store(kv_key, written, epoch)
            outcome.settle(batch)
            return version

    async def _apply_apart(
        self, kv_key: str, batch: list[QueuedChange], exc: ValueTooLarge
    ) -> None:
        if len(batch) == 1:
            raise CommandError(str(exc)) from None
        # Together too large: each change alone may still fit (or fail alone).
        for item in batch:
            await self._apply_batch_once(kv_key, [item])

    def _answer_early(self, kv_key: str, batch: list[QueuedChange], outcome: Outcome) -> int | None:
        """Send the replies of ``batch`` before its write (decision 27): the value is
        decided and in line (a conflict re-applies the changes; a failure is reported).
        The version the value is held under for reads, if it is the newest."""
        version = None
        newest = self.settled.get(kv_key, (None, 0))[1]
        if newest <= max(item.ahead for item in batch):
            # Else changes decided ahead on top of this value are shown already.
            version = next(self._versions)
            self.settled[kv_key] = (outcome.value, version)
        self.early_replies += outcome.settle(batch, early=True)
        return version

    async def _back_off(self, conflicts: int) -> None:
        if conflicts >= self.settings.cas_retries:
            raise CommandError(
                f"ERR jetledger redis: key changed concurrently {conflicts} times "
                "in a row; try again"
            ) from None
        await asyncio.sleep(random.uniform(0, self.settings.cas_backoff * conflicts))

    def _may_answer_early(self, outcome: Outcome) -> bool:
        """Write-behind applies unless NATS is known to be away (the write would fail
        for sure) or another adapter writes to the bucket: then a value decided here may
        be stale, and only the revision check of the write can tell. ``kv_cache_sync``
        promises that a reply seen anywhere is seen by every later read of every
        adapter, which only a stored write can keep (decision 27)."""
        return not outcome.delete_stream and self._write_behind_allowed()

    def _maybe_too_large(self, value: StoredValue | None) -> bool:
        return value is not None and maybe_too_large(value, self.kv.max_value_size)

    def _lingers(self, batch: list[QueuedChange], outcome: Outcome) -> bool:
        """Whether the write of ``batch`` may wait ``kv_write_linger`` for more changes:
        every reply of it is sent, the value is not a delete, and no other adapter of the
        bucket announced itself lately (its reads only see stored writes: lingering would
        widen that window from an acknowledgement to the linger)."""
        return (
            self.settings.kv_write_linger > 0
            and outcome.value is not None
            and not any(item.confirm for item in batch)
            and self.cache.peerless_for(self.settings.kv_write_behind_quiet_seconds)
        )

    def _write_behind_allowed(self) -> bool:
        # Not while another adapter serves the bucket, even one that has not written yet:
        # a client answered here before the write is stored may next write the key there,
        # and that write (a plain SET is not revision-checked) could be stored first.
        quiet = self.settings.kv_write_behind_quiet_seconds
        return (
            self.settings.kv_write_behind
            and not self.settings.kv_cache_sync
            and self.kv.connected
            and self.cache.alone_for(quiet)
            and self.cache.peerless_for(quiet)
        )

    async def _fresh(self, kv_key: str) -> KVRecord | None:
        epoch = self.cache.epoch()
        record = await self.kv.get(kv_key)
        self.cache.store(kv_key, ABSENT if record is None else record, epoch)
        return record

    async def _decide(
        self, key: bytes, current: StoredValue | None, batch: list[QueuedChange]
    ) -> Outcome:
        """Run the changes in order; a change that raises fails alone."""
        is_stream = current is None and await self._is_stream(key)
        outcome = Outcome(current)
        for item in batch:
            try:
                change = item.change(outcome.value)
            except CommandError as exc:
                outcome.replies.append(exc)
                outcome.wrote.append(False)
                continue
            new = change.value
            if isinstance(new, Unchanged) or (new is None and outcome.value is None):
                outcome.replies.append(change.reply)
                outcome.wrote.append(False)
                continue
            if outcome.value is None and new is not None and is_stream:
                if not item.replaces_stream:
                    outcome.replies.append(CommandError(WRONGTYPE))
                    outcome.wrote.append(False)
                    continue
                outcome.delete_stream, is_stream = True, False
            outcome.value, outcome.changed = new, True
            outcome.replies.append(change.reply)
            outcome.wrote.append(True)
        return outcome

    def _encoded(self, kv_key: str, new: StoredValue | None) -> tuple[bytes | None, float | None]:
        """The body to store (``None``: a delete marker) and its per-message TTL."""
        if new is None:
            self._hash_texts.forget(kv_key)
            return None, None
        ttl = None
        if new.expire_at_ms is not None:
            ttl = (new.expire_at_ms - now_ms()) / 1000 + 1
        body = self._hash_texts.encode(kv_key, new)
        if len(body) > self.kv.max_value_size:
            raise ValueTooLarge(
                f"ERR value too large for jetledger redis: {len(body)} bytes stored, the NATS "
                f"server takes at most {self.kv.max_value_size} per key (max_payload)"
            )
        return body, ttl

    async def _put(
        self,
        kv_key: str,
        revision: int | None,
        new: StoredValue | None,
        body: bytes | None,
        ttl: float | None,
    ) -> KVRecord:
        if body is None:
            marker = await self.kv.delete(kv_key, revision, self.settings.tombstone_ttl_seconds)
            return KVRecord(None, marker)
        return KVRecord(body, await self.kv.put(kv_key, body, revision, ttl), decoded=new)


__all__ = ["KeyWriter", "StreamCheck"]
