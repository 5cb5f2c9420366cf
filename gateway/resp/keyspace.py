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
value this adapter knows, and its write is acknowledged behind the reply (decision 27).

Stream keys live in the :class:`~gateway.resp.stream_space.StreamSpace`; the keyspace
asks it so that ``TYPE``, ``EXISTS``, ``DEL``, ``KEYS`` and ``SCAN`` cover them too, and
so that a type command on a stream key answers ``WRONGTYPE``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eventstore.store import EventStore
from gateway.resp.change_queue import ChangeQueues, QueuedChange
from gateway.resp.key_names import decode_key, encode_key, glob_match
from gateway.resp.kv_cache import ABSENT, WRITER_HEADER, Absent, KVCache
from gateway.resp.kvstore import KVRecord, KVStore, RevisionConflict
from gateway.resp.replies import WRONGTYPE, CommandError
from gateway.resp.settings import RespSettings
from gateway.resp.values import Kind, StoredValue

if TYPE_CHECKING:
    from gateway.resp.stream_space import StreamSpace

R = TypeVar("R")


class Unchanged:
    """Returned by a change function that leaves the key as it is."""


UNCHANGED = Unchanged()
_NOTHING = object()


class Change(Generic[R]):
    """What a change function decided: the new value (``None`` deletes) and the reply."""

    __slots__ = ("reply", "value")

    def __init__(self, value: StoredValue | Unchanged | None, reply: R) -> None:
        self.value = value
        self.reply = reply


def _utf8(key: bytes) -> bool:
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def now_ms() -> int:
    return int(time.time() * 1000)


class ValueTooLarge(Exception):
    """A key's new value does not fit in one NATS message."""


def _live(record: KVRecord | None) -> StoredValue | None:
    if record is None or record.body is None:
        return None
    value: StoredValue | None = record.decoded
    if value is None:
        # Decoded once per record: change functions never modify a value in place.
        value = record.decoded = StoredValue.decode(record.body)
    return None if value.expired(now_ms()) else value


def _peek(current: StoredValue | None) -> Change[StoredValue | None]:
    return Change(UNCHANGED, current)


def _alive(value: StoredValue | None) -> StoredValue | None:
    return None if value is None or value.expired(now_ms()) else value


def _maybe_too_large(value: StoredValue, limit: int) -> bool:
    """Whether the encoded value could exceed ``limit`` (a cheap bound: every byte
    escaped as ``\\u00XX``, every item with room for its punctuation and score)."""
    data = value.data
    if isinstance(data, bytes):
        size, items = len(data), 1
    elif isinstance(data, dict):
        size = sum(len(k) + (len(v) if isinstance(v, bytes) else 0) for k, v in data.items())
        items = len(data)
    else:
        size, items = sum(len(item) for item in data), len(data)
    return 6 * size + 32 * items + 128 > limit


class _Outcome:
    """What a batch of changes decided: the final value and one reply (or error) each."""

    __slots__ = ("changed", "delete_stream", "replies", "value", "wrote")

    def __init__(self, value: StoredValue | None) -> None:
        self.value = value
        self.changed = False
        self.delete_stream = False
        self.replies: list[Any] = []
        self.wrote: list[bool] = []
        """Per change: whether it changed the value (a read or a no-op did not)."""

    def settle(self, batch: list[QueuedChange], *, early: bool = False) -> int:
        """Hand out the replies; ``early``: only those of changes that need no
        confirmation, before the write is acknowledged. How many were handed out."""
        settled = 0
        for item, reply, wrote in zip(batch, self.replies, self.wrote, strict=True):
            if item.reply.done():  # the caller went away; its change still counted
                continue
            if early and item.confirm:
                continue
            if isinstance(reply, CommandError):
                item.reply.set_exception(reply)
            else:
                item.reply.set_result(reply)
                item.answered_early = early and wrote
            settled += 1
        return settled


class Keyspace:
    """The non-stream keys of all databases."""

    def __init__(
        self, store: EventStore, settings: RespSettings, streams: StreamSpace | None = None
    ) -> None:
        self.settings = settings
        self.streams = streams
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
        self._settled: dict[str, tuple[StoredValue | None, int]] = {}
        """Values answered early whose write is not acknowledged yet (write-behind), each
        with a version (``_versions``) so a finished write forgets only its own value."""
        self._versions = itertools.count(1)
        self.early_replies = 0
        """Replies sent before their write was acknowledged (``INFO stats``)."""
        self.lost_writes = 0
        """Writes behind an early reply that then failed (``INFO stats``)."""

    async def start(self) -> None:
        await self.kv.ensure()
        await self.cache.start()

    async def close(self) -> None:
        # Writes behind early replies get the shutdown time to reach the server.
        await self._queues.close(grace=self.settings.shutdown_timeout)
        await self.cache.close()

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
                return _alive(self._settled[kv_key][0])
            # A change of this key is queued or being written: read in line with it,
            # so a client sees its own pipelined writes.
            value: StoredValue | None = await self._queues.submit(
                kv_key, key, _peek, announce=False, confirm=False
            )
            return value
        return _live(await self._record(kv_key))

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
    ) -> R:
        """Apply ``change`` atomically: read, decide, write if the revision is unchanged.

        ``change`` gets the live value (``None``: absent or expired) and may be called
        again after a conflict, so it must not have side effects. Changes of one key
        queue and are written together (:mod:`change_queue`). A new value for a key that
        is a stream is WRONGTYPE unless ``replaces_stream`` (``SET``), which deletes the
        stream first.

        ``confirm``: answer only once the write is acknowledged, even with write-behind
        (compare-and-set style commands: SET NX/XX/GET, INCR, pops, lease scripts).
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
            return _alive(self._settled[kv_key][0])
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
        if decided.value is not None and _maybe_too_large(decided.value, self.kv.max_value_size):
            try:
                self._encoded(decided.value)
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
            if self._settled.pop(kv_key, _NOTHING) is not _NOTHING:
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
        while True:
            epoch = self.cache.epoch()
            record = await self._record(kv_key) if trust_cache else await self._fresh(kv_key)
            outcome = await self._decide(key, _live(record), batch)
            if not outcome.changed:
                outcome.settle(batch)
                return version
            if outcome.delete_stream:
                await self.delete_stream(key)
            try:
                body, ttl = self._encoded(outcome.value)
            except ValueTooLarge as exc:
                if len(batch) == 1:
                    raise CommandError(str(exc)) from None
                # Together too large: each change alone may still fit (or fail alone).
                for item in batch:
                    await self._apply_batch_once(kv_key, [item])
                return None
            if self._may_answer_early(outcome):
                # The value is decided and in line: the replies need not wait for the
                # server (a conflict re-applies the changes; a failure is reported).
                newest = self._settled.get(kv_key, (None, 0))[1]
                if newest <= max(item.ahead for item in batch):
                    # Else changes decided ahead on top of this value are shown already.
                    version = next(self._versions)
                    self._settled[kv_key] = (outcome.value, version)
                self.early_replies += outcome.settle(batch, early=True)
            try:
                written = await self._put(kv_key, record, outcome.value, body, ttl)
            except RevisionConflict:
                # Another adapter wrote the key (or a message expired): read it afresh.
                self.cache.drop(kv_key)
                trust_cache = False
                conflicts += 1
                if conflicts >= self.settings.cas_retries:
                    raise CommandError(
                        f"ERR jetledger redis: key changed concurrently {conflicts} times "
                        "in a row; try again"
                    ) from None
                await asyncio.sleep(random.uniform(0, self.settings.cas_backoff * conflicts))
                continue
            self.cache.store(kv_key, written, epoch)
            outcome.settle(batch)
            return version

    def _may_answer_early(self, outcome: _Outcome) -> bool:
        """Write-behind applies unless NATS is known to be away (the write would fail
        for sure) or another adapter writes to the bucket: then a value decided here may
        be stale, and only the revision check of the write can tell. ``kv_cache_sync``
        promises that a reply seen anywhere is seen by every later read of every
        adapter, which only a stored write can keep (decision 27)."""
        return not outcome.delete_stream and self._write_behind_allowed()

    def _write_behind_allowed(self) -> bool:
        return (
            self.settings.kv_write_behind
            and not self.settings.kv_cache_sync
            and self.kv.connected
            and self.cache.alone_for(self.settings.kv_write_behind_quiet_seconds)
        )

    async def _fresh(self, kv_key: str) -> KVRecord | None:
        epoch = self.cache.epoch()
        record = await self.kv.get(kv_key)
        self.cache.store(kv_key, ABSENT if record is None else record, epoch)
        return record

    async def _decide(
        self, key: bytes, current: StoredValue | None, batch: list[QueuedChange]
    ) -> _Outcome:
        """Run the changes in order; a change that raises fails alone."""
        is_stream = current is None and await self.is_stream(key)
        outcome = _Outcome(current)
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

    def _encoded(self, new: StoredValue | None) -> tuple[bytes | None, float | None]:
        """The body to store (``None``: a delete marker) and its per-message TTL."""
        if new is None:
            return None, None
        ttl = None
        if new.expire_at_ms is not None:
            ttl = (new.expire_at_ms - now_ms()) / 1000 + 1
        body = new.encode()
        if len(body) > self.kv.max_value_size:
            raise ValueTooLarge(
                f"ERR value too large for jetledger redis: {len(body)} bytes stored, the NATS "
                f"server takes at most {self.kv.max_value_size} per key (max_payload)"
            )
        return body, ttl

    async def _put(
        self,
        kv_key: str,
        record: KVRecord | None,
        new: StoredValue | None,
        body: bytes | None,
        ttl: float | None,
    ) -> KVRecord:
        revision = 0 if record is None else record.revision
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
        if self.streams is None or not _utf8(key):
            return False
        return await self.streams.exists(key)

    async def delete_stream(self, key: bytes) -> bool:
        if self.streams is None or not _utf8(key):
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
