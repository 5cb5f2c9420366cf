"""Redis keys on JetStream KV: strings, hashes, sets, sorted sets and lists.

Each Redis key is one KV entry ``d<db>.<encoded key>`` holding a
:class:`~gateway.resp.values.StoredValue`. Every change is a read-modify-write checked
by the entry's revision and retried on conflict, so concurrent ``HINCRBY`` or
``SET NX`` from any number of clients (and adapters) are as atomic as in Redis. TTLs
are kept with the value and enforced on every read to the millisecond; the message
also carries a per-message TTL so the server drops expired keys by itself. Changes of
one key queue and are written together (:mod:`change_queue`); reads come from a cache
that a watch on the bucket keeps true (:mod:`kv_cache`). With ``kv_write_behind`` a
change that needs no confirmation is answered once it is decided, in order, on the
value this adapter knows, and its write is acknowledged behind the reply (decision 27);
such a write lingers ``kv_write_linger`` first so that the key's next changes join it,
a plain ``SET`` of a key not cached here is written without reading it, and large
hashes are encoded field by field (decision 29).

Stream keys live in the :class:`~gateway.resp.stream_space.StreamSpace`; the keyspace
asks it so that ``TYPE``, ``EXISTS``, ``DEL``, ``KEYS`` and ``SCAN`` cover them too, and
so that a type command on a stream key answers ``WRONGTYPE``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from nats.aio.client import Client as NatsClient

from eventstore.store import EventStore
from gateway.resp.change_queue import ChangeQueues, QueuedChange
from gateway.resp.hash_encodings import HashEncodings
from gateway.resp.key_names import decode_key, encode_key, glob_match
from gateway.resp.keyspace_changes import (
    NOTHING,
    UNCHANGED,
    Change,
    Outcome,
    Unchanged,
    ValueTooLarge,
    alive,
    live,
    maybe_too_large,
    now_ms,
    peek,
    utf8,
)
from gateway.resp.kv_cache import ABSENT, WRITER_HEADER, Absent, KVCache
from gateway.resp.kv_connection import connect
from gateway.resp.kvstore import KVRecord, KVStore, RevisionConflict
from gateway.resp.replies import WRONGTYPE, CommandError
from gateway.resp.settings import RespSettings
from gateway.resp.values import Kind, StoredValue

R = TypeVar("R")

if TYPE_CHECKING:
    from gateway.resp.stream_space import StreamSpace


class Keyspace:
    """The non-stream keys of all databases."""

    def __init__(
        self, store: EventStore, settings: RespSettings, streams: StreamSpace | None = None
    ) -> None:
        self.settings = settings
        self.streams = streams
        self._store = store
        self._own_nc: NatsClient | None = None
        self.cache = KVCache(
            store.nc, settings.kv_bucket, size=settings.kv_cache_size, sync=settings.kv_cache_sync
        )
        self.kv = KVStore(
            store.nc,
            settings.kv_bucket,
            timeout=settings.request_timeout,
            replicas=settings.kv_replicas,
            writer_headers={WRITER_HEADER: self.cache.writer_id},
        )
        self._queues = ChangeQueues(self._apply_batch)
        self._hash_texts = HashEncodings()
        self._settled: dict[str, tuple[StoredValue | None, int]] = {}
        """Values answered early whose write is not acknowledged yet (write-behind), each
        with a version (``_versions``) so a finished write forgets only its own value."""
        self._versions = itertools.count(1)
        self.early_replies = 0
        """Replies sent before their write was acknowledged (``INFO stats``)."""
        self.lost_writes = 0
        """Writes behind an early reply that then failed (``INFO stats``)."""

    async def start(self) -> None:
        options = self._store.connect_options
        if self.settings.kv_own_connection and options is not None:
            # No echo: the bucket's watch would otherwise get back every value this
            # adapter writes (the whole value, ~390 KB per by-framework echo run) only to
            # skip it by its writer header.
            self._own_nc = await connect(options, no_echo=True, name_suffix="-redis-kv")
            self.kv.use(self._own_nc)
            self.cache.use(self._own_nc)
        try:
            await self.kv.ensure()
            await self.cache.start()
        except BaseException:
            if self._own_nc is not None:
                await self._own_nc.close()
            raise

    async def close(self) -> None:
        # Writes behind early replies get the shutdown time to reach the server.
        await self._queues.close(grace=self.settings.shutdown_timeout)
        await self.cache.close()
        if self._own_nc is not None and not self._own_nc.is_closed:
            await self._own_nc.close()

    async def stored(self) -> None:
        """Return once every change made so far is written (or has failed)."""
        await self._queues.drained()

    @staticmethod
    def _kv_key(db: int, key: bytes) -> str:
        return f"d{db}.{encode_key(key)}"

    async def read(self, db: int, key: bytes) -> StoredValue | None:
        """The live value of ``key`` (``None`` if absent or expired)."""
        kv_key = self._kv_key(db, key)
        if self._queues.busy(kv_key):
            if kv_key in self._settled and not self._queues.waiting(kv_key):
                # Answered early and being written: that is the key's value now.
                self.cache.hits += 1
                return alive(self._settled[kv_key][0])
            # A change of this key is queued or being written: read in line with it,
            # so a client sees its own pipelined writes.
            value: StoredValue | None = await self._queues.submit(
                kv_key, key, peek, announce=False, confirm=False
            )
            return value
        return live(await self._record(kv_key))

    async def _record(self, kv_key: str) -> KVRecord | None:
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

    async def read_kind(self, db: int, key: bytes, kind: Kind) -> Any:
        """The data of ``key`` if it holds ``kind``, ``None`` if absent; else WRONGTYPE."""
        value = await self.read(db, key)
        if value is None:
            await self._refuse_stream(key)
            return None
        return value.of_kind(kind)

    async def _refuse_stream(self, key: bytes) -> None:
        if await self.is_stream(key):
            raise CommandError(WRONGTYPE)

    async def mutate(
        self,
        db: int,
        key: bytes,
        change: Callable[[StoredValue | None], Change[R]],
        *,
        replaces_stream: bool = False,
        confirm: bool = False,
        blind: bool = False,
    ) -> R:
        """Apply ``change`` atomically: read, decide, write if the revision is unchanged.

        ``change`` gets the live value (``None``: absent or expired) and may be called
        again after a conflict, so it must not have side effects. Changes of one key
        queue and are written together (:mod:`change_queue`). A new value for a key that
        is a stream is WRONGTYPE unless ``replaces_stream`` (``SET``), which deletes the
        stream first.

        ``confirm``: answer only once the write is acknowledged, even with write-behind
        (compare-and-set style commands: SET NX/XX/GET, INCR, pops, lease scripts).

        ``blind``: ``change`` ignores the value it gets (a plain ``SET``): when the key is
        not cached, it is written without reading it first and without a revision
        check, as Redis's last ``SET`` wins (a key by-framework creates is never cached:
        the read was a round trip before the reply).
        """
        kv_key = self._kv_key(db, key)
        base = None if confirm else self._decided_base(kv_key)
        if base is not None:
            return self._decide_now(kv_key, key, change, base)
        reply: R = await self._queues.submit(
            kv_key,
            key,
            change,
            replaces_stream=replaces_stream,
            confirm=confirm or not self.settings.kv_write_behind,
            blind=blind,
        )
        return reply

    def _decided_base(self, kv_key: str) -> StoredValue | None:
        """The value a change of ``kv_key`` can be decided on at once (write-behind): the
        value of a write in flight that was answered early, with nothing undecided
        waiting behind it. ``None``: the change goes through the queue (absent keys too:
        their stream-type rules need a wait). A key with nothing in line is decided by
        its flusher: deciding it here on the cached value saved no measurable time and
        widened the window in which a write of another adapter is not seen yet."""
        if (
            kv_key in self._settled
            and self._queues.busy(kv_key)
            and not self._queues.waiting(kv_key)
            and self._write_behind_allowed()
        ):
            return alive(self._settled[kv_key][0])
        return None

    def _decide_now(
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
        self._settled[kv_key] = (decided.value, version)
        self._queues.submit_decided(kv_key, key, change, decided.reply, version)
        self.early_replies += 1
        return decided.reply

    async def _apply_batch(self, kv_key: str, batch: list[QueuedChange]) -> None:
        """Apply ``batch`` in order on the key's value and write the result once."""
        try:
            version = await self._apply_batch_once(kv_key, batch)
        except BaseException:
            # Not stored (or not known to be): forget what was answered early and read
            # the server's value next time.
            if self._settled.pop(kv_key, NOTHING) is not NOTHING:
                self.cache.drop(kv_key)
                self.lost_writes += sum(item.answered_early for item in batch)
            raise
        settled = self._settled.get(kv_key)
        if settled is not None and (settled[1] == version or not self._queues.queued(kv_key)):
            # Stored, and no change decided on top of it waits for the next write.
            del self._settled[kv_key]

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
                record = await self._record(kv_key) if trust_cache else await self._fresh(kv_key)
            outcome = await self._decide(key, live(record), batch)
            if not outcome.changed:
                outcome.settle(batch)
                return version
            if outcome.delete_stream:
                await self.delete_stream(key)
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
                    more = await self._queues.linger(kv_key, self.settings.kv_write_linger)
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
        newest = self._settled.get(kv_key, (None, 0))[1]
        if newest <= max(item.ahead for item in batch):
            # Else changes decided ahead on top of this value are shown already.
            version = next(self._versions)
            self._settled[kv_key] = (outcome.value, version)
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
        is_stream = current is None and await self.is_stream(key)
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

    async def delete(self, db: int, key: bytes) -> bool:
        """Delete ``key`` of any type (stream included); whether it existed."""

        def drop(current: StoredValue | None) -> Change[bool]:
            return Change(None if current is not None else UNCHANGED, current is not None)

        if await self.mutate(db, key, drop, confirm=True):
            return True
        return await self.delete_stream(key)

    async def is_stream(self, key: bytes) -> bool:
        """Whether ``key`` is a stream (stream keys are UTF-8: no other key can be one)."""
        if self.streams is None or not utf8(key):
            return False
        return await self.streams.exists(key)

    async def delete_stream(self, key: bytes) -> bool:
        if self.streams is None or not utf8(key):
            return False
        return await self.streams.delete(key)

    async def type_of(self, key: bytes, db: int = 0) -> str | None:
        """``string``/``hash``/``set``/``zset``/``list``/``stream`` or ``None``."""
        value = await self.read(db, key)
        if value is not None:
            return value.kind
        if await self.is_stream(key):
            return "stream"
        return None

    async def keys(self, db: int, pattern: bytes | None = None) -> list[bytes]:
        """Live keys of ``db`` (and every stream key), sorted, matching a glob ``pattern``."""
        prefix = f"d{db}."
        found: list[bytes] = []
        await self._queues.drained()  # the server lists keys: writes behind first
        for kv_key in await self.kv.keys(prefix):
            key = decode_key(kv_key[len(prefix) :])
            if (pattern is None or glob_match(pattern, key)) and await self.read(db, key):
                found.append(key)
        if self.streams is not None:
            for key in self.streams.stream_keys():
                if pattern is None or glob_match(pattern, key):
                    found.append(key)
        return sorted(set(found))

    async def scan(
        self, db: int, cursor: int, count: int, pattern: bytes | None, kind: str | None
    ) -> tuple[int, list[bytes]]:
        """One ``SCAN`` page: the cursor is a position in the sorted key list.

        Only the ``count`` candidates of the page are read, so a page costs ``count``
        KV reads whatever the size of the keyspace."""
        prefix = f"d{db}."
        await self._queues.drained()  # the server lists keys: writes behind first
        candidates = {decode_key(kv_key[len(prefix) :]) for kv_key in await self.kv.keys(prefix)}
        streams = set(self.streams.stream_keys()) if self.streams is not None else set()
        ordered = sorted(candidates | streams)
        page = ordered[cursor : cursor + count]
        next_cursor = cursor + count if cursor + count < len(ordered) else 0
        found = []
        for key in page:
            if pattern is not None and not glob_match(pattern, key):
                continue
            value = await self.read(db, key) if key in candidates else None
            key_kind: str | None = value.kind if value is not None else None
            if key_kind is None and key in streams:
                key_kind = "stream"
            if key_kind is not None and (kind is None or kind == key_kind):
                found.append(key)
        return next_cursor, found

    async def flush(self, db: int) -> None:
        # A write still in flight would land after the purge and bring its key back.
        await self._queues.drained()
        self.cache.clear()
        await self.kv.purge_all(f"d{db}.", self.cache.flush_subject)


__all__ = ["UNCHANGED", "Change", "Keyspace", "now_ms"]
