"""Redis keys on JetStream KV: strings, hashes, sets, sorted sets and lists.

Each Redis key is one KV entry ``d<db>.<encoded key>`` holding a
:class:`~gateway.resp.values.StoredValue`. Every change is a read-modify-write checked
by the entry's revision and retried on conflict, so concurrent ``HINCRBY`` or
``SET NX`` from any number of clients (and adapters) are as atomic as in Redis. TTLs
are kept with the value and enforced on every read to the millisecond; the message
also carries a per-message TTL so the server drops expired keys by itself.

Stream keys live in the :class:`~gateway.resp.stream_space.StreamSpace`; the keyspace
asks it so that ``TYPE``, ``EXISTS``, ``DEL``, ``KEYS`` and ``SCAN`` cover them too, and
so that a type command on a stream key answers ``WRONGTYPE``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eventstore.store import EventStore
from gateway.resp.key_locks import KeyLocks
from gateway.resp.key_names import decode_key, encode_key, glob_match
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


class Keyspace:
    """The non-stream keys of all databases."""

    def __init__(
        self, store: EventStore, settings: RespSettings, streams: StreamSpace | None = None
    ) -> None:
        self.settings = settings
        self.streams = streams
        self._key_locks = KeyLocks()
        self._written: OrderedDict[str, KVRecord] = OrderedDict()
        self.kv = KVStore(
            store.nc,
            settings.kv_bucket,
            timeout=settings.request_timeout,
            replicas=settings.kv_replicas,
        )

    async def start(self) -> None:
        await self.kv.ensure()

    @staticmethod
    def _kv_key(db: int, key: bytes) -> str:
        return f"d{db}.{encode_key(key)}"

    async def read(self, db: int, key: bytes) -> StoredValue | None:
        """The live value of ``key`` (``None`` if absent or expired)."""
        record = await self.kv.get(self._kv_key(db, key))
        if record is None or record.body is None:
            return None
        value = StoredValue.decode(record.body)
        return None if value.expired(now_ms()) else value

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
        again after a conflict, so it must not have side effects. A new value for a key
        that is a stream is WRONGTYPE unless ``replaces_stream`` (``SET``), which deletes
        the stream first.
        """
        kv_key = self._kv_key(db, key)
        async with self._key_locks.hold(kv_key):
            return await self._mutate(key, kv_key, change, replaces_stream)

    async def _mutate(
        self,
        key: bytes,
        kv_key: str,
        change: Callable[[StoredValue | None], Change[R]],
        replaces_stream: bool,
    ) -> R:
        conflicts = 0
        cached = self._written.get(kv_key)
        while conflicts < self.settings.cas_retries:
            # The revision this adapter wrote last saves a read; a write based on it is
            # still checked by the server, and a decision not to write is not trusted.
            record = cached if cached is not None else await self.kv.get(kv_key)
            current = None
            if record is not None and record.body is not None:
                current = StoredValue.decode(record.body)
                if current.expired(now_ms()):
                    current = None
            outcome = change(current)
            if isinstance(outcome.value, Unchanged) or (outcome.value is None and current is None):
                if cached is not None:
                    cached = None
                    continue
                return outcome.reply
            try:
                await self._write(
                    key,
                    kv_key,
                    record=record,
                    current=current,
                    new=outcome.value,
                    replaces_stream=replaces_stream,
                )
            except RevisionConflict:
                self._written.pop(kv_key, None)
                cached = None
                conflicts += 1
                # Another adapter wrote the key: back off a little, with jitter.
                await asyncio.sleep(random.uniform(0, 0.001 * min(conflicts, 20)))
                continue
            return outcome.reply
        raise CommandError(
            f"ERR jetledger redis: key changed concurrently {self.settings.cas_retries} "
            "times in a row; try again"
        )

    async def _write(
        self,
        key: bytes,
        kv_key: str,
        *,
        record: KVRecord | None,
        current: StoredValue | None,
        new: StoredValue | None,
        replaces_stream: bool,
    ) -> None:
        revision = 0 if record is None else record.revision
        if new is None:
            marker = await self.kv.delete(kv_key, revision, self.settings.tombstone_ttl_seconds)
            self._remember(kv_key, KVRecord(None, marker))
            return
        if current is None and await self.is_stream(key):
            if not replaces_stream:
                raise CommandError(WRONGTYPE)
            await self.delete_stream(key)
        ttl = None
        if new.expire_at_ms is not None:
            ttl = (new.expire_at_ms - now_ms()) / 1000 + 1
        body = new.encode()
        if len(body) > self.kv.max_value_size:
            raise CommandError(
                f"ERR value too large for jetledger redis: {len(body)} bytes stored, the NATS "
                f"server takes at most {self.kv.max_value_size} per key (max_payload)"
            )
        self._remember(kv_key, KVRecord(body, await self.kv.put(kv_key, body, revision, ttl)))

    def _remember(self, kv_key: str, record: KVRecord) -> None:
        self._written[kv_key] = record
        self._written.move_to_end(kv_key)
        while len(self._written) > self.settings.write_cache_size:
            self._written.popitem(last=False)

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
        self._written.clear()
        await self.kv.purge_all(f"d{db}.")


__all__ = ["UNCHANGED", "Change", "Keyspace", "now_ms"]
