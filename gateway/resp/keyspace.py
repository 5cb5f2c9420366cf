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
hashes are encoded field by field (decision 29). That write path is
:class:`~gateway.resp.keyspace_writes.KeyWriter`; this module keeps the keyspace's
reads, key listings and its connection.

Stream keys live in the :class:`~gateway.resp.stream_space.StreamSpace`; the keyspace
asks it so that ``TYPE``, ``EXISTS``, ``DEL``, ``KEYS`` and ``SCAN`` cover them too, and
so that a type command on a stream key answers ``WRONGTYPE``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from nats.aio.client import Client as NatsClient

from eventstore.store import EventStore
from gateway.resp.key_names import decode_key, encode_key, glob_match
from gateway.resp.keyspace_changes import UNCHANGED, Change, alive, live, now_ms, peek, utf8
from gateway.resp.keyspace_writes import KeyWriter
from gateway.resp.kv_cache import WRITER_HEADER, KVCache
from gateway.resp.kv_connection import connect
from gateway.resp.kvstore import KVStore
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
        self._writer = KeyWriter(
            self.kv,
            self.cache,
            settings,
            is_stream=self.is_stream,
            delete_stream=self.delete_stream,
        )
        self._queues = self._writer.queues
        self.cache.before_greeting_answer = self._writer.settle_early
        self._settled = self._writer.settled
        """Values answered early and not stored yet: a read answers with them."""

    @property
    def early_replies(self) -> int:
        """Replies sent before their write was acknowledged (``INFO stats``)."""
        return self._writer.early_replies

    @property
    def lost_writes(self) -> int:
        """Writes behind an early reply that then failed (``INFO stats``)."""
        return self._writer.lost_writes

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
        return live(await self._writer.record(kv_key))

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
        base = None if confirm else self._writer.decided_base(kv_key)
        if base is not None:
            return self._writer.decide_now(kv_key, key, change, base)
        reply: R = await self._queues.submit(
            kv_key,
            key,
            change,
            replaces_stream=replaces_stream,
            confirm=confirm or not self.settings.kv_write_behind,
            blind=blind,
        )
        return reply

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
