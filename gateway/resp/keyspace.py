"""Redis keys on JetStream KV: strings, hashes, sets, sorted sets and lists.

Each Redis key is one KV entry ``d<db>.<encoded key>`` holding a
:class:`~gateway.resp.values.StoredValue`. Every change is a read-modify-write checked
by the entry's revision and retried on conflict, so concurrent ``HINCRBY`` or
``SET NX`` from any number of clients (and adapters) are as atomic as in Redis. TTLs
are kept with the value and enforced on every read to the millisecond; the message
also carries a per-message TTL so the server drops expired keys by itself. Changes of
one key queue and are written together (:mod:`change_queue`); reads come from a cache
that a watch on the bucket keeps true (:mod:`kv_cache`).

Stream keys live in the :class:`~gateway.resp.stream_space.StreamSpace`; the keyspace
asks it so that ``TYPE``, ``EXISTS``, ``DEL``, ``KEYS`` and ``SCAN`` cover them too, and
so that a type command on a stream key answers ``WRONGTYPE``.
"""

from __future__ import annotations

import asyncio
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
    value = StoredValue.decode(record.body)
    return None if value.expired(now_ms()) else value


def _peek(current: StoredValue | None) -> Change[StoredValue | None]:
    return Change(UNCHANGED, current)


class _Outcome:
    """What a batch of changes decided: the final value and one reply (or error) each."""

    __slots__ = ("changed", "delete_stream", "replies", "value")

    def __init__(self, value: StoredValue | None) -> None:
        self.value = value
        self.changed = False
        self.delete_stream = False
        self.replies: list[Any] = []

    def settle(self, batch: list[QueuedChange]) -> None:
        for item, reply in zip(batch, self.replies, strict=True):
            if item.reply.done():  # the caller went away; its change still counted
                continue
            if isinstance(reply, CommandError):
                item.reply.set_exception(reply)
            else:
                item.reply.set_result(reply)


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

    async def start(self) -> None:
        await self.kv.ensure()
        await self.cache.start()

    async def close(self) -> None:
        await self._queues.close()
        await self.cache.close()

    @staticmethod
    def _kv_key(db: int, key: bytes) -> str:
        return f"d{db}.{encode_key(key)}"

    async def read(self, db: int, key: bytes) -> StoredValue | None:
        """The live value of ``key`` (``None`` if absent or expired)."""
        kv_key = self._kv_key(db, key)
        if self._queues.busy(kv_key):
            # A change of this key is queued or being written: read in line with it,
            # so a client sees its own pipelined writes.
            value: StoredValue | None = await self._queues.submit(
                kv_key, key, _peek, announce=False
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
    ) -> R:
        """Apply ``change`` atomically: read, decide, write if the revision is unchanged.

        ``change`` gets the live value (``None``: absent or expired) and may be called
        again after a conflict, so it must not have side effects. Changes of one key
        queue and are written together (:mod:`change_queue`). A new value for a key that
        is a stream is WRONGTYPE unless ``replaces_stream`` (``SET``), which deletes the
        stream first.
        """
        reply: R = await self._queues.submit(
            self._kv_key(db, key), key, change, replaces_stream=replaces_stream
        )
        return reply

    async def _apply_batch(self, kv_key: str, batch: list[QueuedChange]) -> None:
        """Apply ``batch`` in order on the key's value and write the result once."""
        key = batch[0].key
        conflicts = 0
        trust_cache = True
        while True:
            epoch = self.cache.epoch()
            record = await self._record(kv_key) if trust_cache else await self._fresh(kv_key)
            outcome = await self._decide(key, _live(record), batch)
            if not outcome.changed:
                outcome.settle(batch)
                return
            if outcome.delete_stream:
                await self.delete_stream(key)
            try:
                written = await self._write(kv_key, record, outcome.value)
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
            except ValueTooLarge as exc:
                if len(batch) == 1:
                    raise CommandError(str(exc)) from None
                # Together too large: each change alone may still fit (or fail alone).
                for item in batch:
                    await self._apply_batch(kv_key, [item])
                return
            self.cache.store(kv_key, written, epoch)
            outcome.settle(batch)
            return

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
                continue
            new = change.value
            if isinstance(new, Unchanged) or (new is None and outcome.value is None):
                outcome.replies.append(change.reply)
                continue
            if outcome.value is None and new is not None and is_stream:
                if not item.replaces_stream:
                    outcome.replies.append(CommandError(WRONGTYPE))
                    continue
                outcome.delete_stream, is_stream = True, False
            outcome.value, outcome.changed = new, True
            outcome.replies.append(change.reply)
        return outcome

    async def _write(
        self, kv_key: str, record: KVRecord | None, new: StoredValue | None
    ) -> KVRecord:
        revision = 0 if record is None else record.revision
        if new is None:
            marker = await self.kv.delete(kv_key, revision, self.settings.tombstone_ttl_seconds)
            return KVRecord(None, marker)
        ttl = None
        if new.expire_at_ms is not None:
            ttl = (new.expire_at_ms - now_ms()) / 1000 + 1
        body = new.encode()
        if len(body) > self.kv.max_value_size:
            raise ValueTooLarge(
                f"ERR value too large for jetledger redis: {len(body)} bytes stored, the NATS "
                f"server takes at most {self.kv.max_value_size} per key (max_payload)"
            )
        return KVRecord(body, await self.kv.put(kv_key, body, revision, ttl))

    async def delete(self, db: int, key: bytes) -> bool:
        """Delete ``key`` of any type (stream included); whether it existed."""

        def drop(current: StoredValue | None) -> Change[bool]:
            return Change(None if current is not None else UNCHANGED, current is not None)

        if await self.mutate(db, key, drop):
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
        self.cache.clear()
        await self.kv.purge_all(f"d{db}.", self.cache.flush_subject)


__all__ = ["UNCHANGED", "Change", "Keyspace", "now_ms"]
