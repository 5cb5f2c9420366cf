"""The adapter's cache of its KV bucket, kept true by watching the bucket's subjects.

Every write to a key is a publish on ``$KV.<bucket>.<key>``, so a core subscription to
the bucket sees each write of every adapter as it reaches the server. This adapter's own
writes carry a ``Jl-Redis-Writer`` header naming it and are cached from their
acknowledgement (on the keyspace's own ``no_echo`` connection they do not even come
back; decision 29); any other write to a key drops that key from the cache (a write the
server then refuses only costs one read more). ``FLUSHDB`` is an API call, not a publish,
so it is announced on a subject of its own and clears every adapter's cache. Adapters
also announce themselves on a presence subject, so that one knows whether another may
be reading what it writes (a lingering write is seen late there). A starting adapter
greets the others and serves clients only once answered; each answers after turning its
write-behind off and storing what it had answered early.

A value is stored in the cache only if no foreign write to its key was seen since the
read (or write) that produced it began: :meth:`KVCache.epoch` before the request,
:meth:`KVCache.store` after. Writes are revision-checked by the server whatever the
cache holds, so a stale entry can never be written over; a read may miss a write made
through another adapter for as long as that write's message takes to arrive here (one
NATS hop) unless ``kv_cache_sync`` is set, which makes every cached read wait for a
PING round trip first (see docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from gateway.resp.kvstore import KVRecord

WRITER_HEADER = "Jl-Redis-Writer"
GREETING_SECONDS = 2.0
"""How long a starting adapter waits for another one to answer its greeting (alone, the
server's "no responders" ends the wait at once)."""
SETTLE_BEFORE_ANSWER_SECONDS = 1.0
"""How long a greeted adapter waits for its writes answered early to be stored before it
answers (well inside the greeter's wait)."""
PRESENCE_EVERY = 10.0
"""Seconds between two announcements of an adapter on its bucket's presence subject."""
SYNC_DRAIN_STEPS = 1000
"""Loop turns a sync waits for the invalidations it flushed to be handled (they are
handled without awaiting, so a few turns always suffice)."""


class Absent:
    """Cached knowledge that a key has no message at all (revision 0)."""


ABSENT = Absent()
CachedRecord = KVRecord | Absent


class KVCache:
    """Last known record per key of one bucket, for reads and for the next CAS."""

    def __init__(self, nc: NatsClient, bucket: str, *, size: int, sync: bool) -> None:
        self._nc = nc
        self._size = size
        self._sync_reads = sync
        self.writer_id = uuid.uuid4().hex
        self._prefix = f"$KV.{bucket}."
        self.flush_subject = f"_JL.redis.{bucket}.flushed"
        self._records: OrderedDict[str, CachedRecord] = OrderedDict()
        self._epoch = 0
        self._dropped_at: OrderedDict[str, int] = OrderedDict()
        self._forgotten_upto = 0
        """Highest epoch of a drop no longer remembered per key: older reads may not fill."""
        self._subscriptions: list[Subscription] = []
        self._handled = 0
        self._next_sync: asyncio.Future[None] | None = None
        self.hits = 0
        self.misses = 0
        self.writes_seen = 0
        """Writes to the bucket the watch received (with ``no_echo``: other adapters')."""
        self._foreign_at = -float("inf")
        """``time.monotonic()`` of the last write of another adapter seen here."""
        self.presence_subject = f"_JL.redis.{bucket}.adapters"
        self._peer_at = -float("inf")
        """``time.monotonic()`` of the last announcement of another adapter seen here."""
        self._announcer: asyncio.Task[None] | None = None
        self.before_greeting_answer: Callable[[float], Awaitable[None]] | None = None
        """Set by the keyspace: waits (up to the seconds given) for the writes answered
        early here to be stored, before a starting adapter is told this one exists."""

    def use(self, nc: NatsClient) -> None:
        """Watch the bucket over ``nc`` (before :meth:`start`)."""
        self._nc = nc

    async def start(self) -> None:
        self._subscriptions = [
            await self._nc.subscribe(self._prefix + ">", cb=self._on_write),
            await self._nc.subscribe(self.flush_subject, cb=self._on_flush),
            await self._nc.subscribe(self.presence_subject, cb=self._on_presence),
        ]
        # A request: once any other adapter has answered, it knows of this one too (it
        # answers after noting it), so neither lingers a write the other may read. Alone,
        # the server answers "no responders" at once.
        with contextlib.suppress(TimeoutError, NoRespondersError):
            await self._nc.request(
                self.presence_subject, self.writer_id.encode(), timeout=GREETING_SECONDS
            )
            self._peer_at = time.monotonic()
        self._announcer = asyncio.ensure_future(self._announce())

    async def _announce(self) -> None:
        """Remind the other adapters of the bucket every ``PRESENCE_EVERY`` seconds that
        this one is here (and may read what they write)."""
        while True:
            await asyncio.sleep(PRESENCE_EVERY)
            # A connection lost meanwhile skips one announcement, not all later ones.
            with contextlib.suppress(NatsError):
                await self._nc.publish(self.presence_subject, self.writer_id.encode())

    async def _on_presence(self, msg: Msg) -> None:
        self._handled += 1
        if msg.data != self.writer_id.encode():
            self._peer_at = time.monotonic()  # from now on, no reply here is sent early
            if msg.reply:
                # The greeter serves clients once answered: a write answered early here
                # must be stored by then, or a client's next write of that key through
                # the greeter (a blind SET) could be stored before it and be overwritten.
                if self.before_greeting_answer is not None:
                    await self.before_greeting_answer(SETTLE_BEFORE_ANSWER_SECONDS)
                await self._nc.publish(msg.reply, self.writer_id.encode())

    def peerless_for(self, seconds: float) -> bool:
        """Whether no other adapter of the bucket announced itself for ``seconds``."""
        return time.monotonic() - self._peer_at >= seconds

    async def close(self) -> None:
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
            self._announcer = None
        for subscription in self._subscriptions:
            if not self._nc.is_closed:
                await subscription.unsubscribe()
        self._subscriptions = []

    # -- invalidation ------------------------------------------------------------

    async def _on_write(self, msg: Msg) -> None:
        self._handled += 1
        self.writes_seen += 1
        headers = msg.headers or {}
        if headers.get(WRITER_HEADER) == self.writer_id:
            return
        self._drop_foreign(msg.subject[len(self._prefix) :])

    async def _on_flush(self, msg: Msg) -> None:
        self._handled += 1
        self.clear()

    def _drop_foreign(self, key: str) -> None:
        self._foreign_at = time.monotonic()
        self._epoch += 1
        self._records.pop(key, None)
        self._dropped_at[key] = self._epoch
        self._dropped_at.move_to_end(key)
        while len(self._dropped_at) > 4 * self._size:
            _, epoch = self._dropped_at.popitem(last=False)
            self._forgotten_upto = max(self._forgotten_upto, epoch)

    def alone_for(self, seconds: float) -> bool:
        """Whether no other adapter's write to the bucket was seen for ``seconds``."""
        return time.monotonic() - self._foreign_at >= seconds

    def clear(self) -> None:
        """Forget everything (FLUSHDB here or elsewhere); reads in flight may not fill."""
        self._epoch += 1
        self._forgotten_upto = self._epoch
        self._records.clear()
        self._dropped_at.clear()

    # -- lookups and fills -------------------------------------------------------

    def epoch(self) -> int:
        """Take before a read or write whose outcome will be :meth:`store`\\ d."""
        return self._epoch

    def knows(self, key: str) -> bool:
        """Whether ``key``'s record is cached (not counted as a hit or a miss)."""
        return key in self._records

    def lookup(self, key: str) -> CachedRecord | None:
        """The cached record (``ABSENT``: known not to exist), ``None`` if unknown."""
        record = self._records.get(key)
        if record is None:
            self.misses += 1
            return None
        self.hits += 1
        self._records.move_to_end(key)
        return record

    def store(self, key: str, record: CachedRecord, since_epoch: int) -> None:
        """Cache ``record`` unless a foreign write to ``key`` was seen since ``since_epoch``."""
        if since_epoch < self._forgotten_upto or self._dropped_at.get(key, -1) > since_epoch:
            return
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self._size:
            self._records.popitem(last=False)

    def drop(self, key: str) -> None:
        self._records.pop(key, None)

    # -- read barrier ------------------------------------------------------------

    async def sync_now(self) -> None:
        """Return once every write acknowledged before this call has been seen here,
        whatever ``kv_cache_sync`` says."""
        await self._round_trip()

    async def sync(self) -> None:
        """With ``kv_cache_sync``: return once every write the server acknowledged to
        anyone before this call has been seen here. Concurrent callers share one PING."""
        if not self._sync_reads:
            return
        if self._next_sync is None:
            self._next_sync = asyncio.ensure_future(self._round_trip())
        await asyncio.shield(self._next_sync)

    async def _round_trip(self) -> None:
        # Callers that arrive after the PING went out must not join it: clear first.
        self._next_sync = None
        await self._nc.flush()
        # The PONG came after every message the server had queued for us; those are in
        # the subscriptions' queues now and are handled within a few loop turns.
        target = self._handled + sum(sub.pending_msgs for sub in self._subscriptions)
        for _ in range(SYNC_DRAIN_STEPS):
            if self._handled >= target:
                return
            await asyncio.sleep(0)


__all__ = ["ABSENT", "WRITER_HEADER", "Absent", "CachedRecord", "KVCache"]
