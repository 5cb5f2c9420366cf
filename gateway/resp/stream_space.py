"""``StreamSpace``: Redis streams on the JetStream log (the adapter's stream half).

Entries are events of the one log (``XADD`` = append, see :mod:`stream_keys` for the key
map and :mod:`byframework_events` for the event types); ids are ``<stream seq>-0``
(:mod:`stream_ids`); groups are durable consumers (:mod:`stream_groups`). What Redis keeps
about a key beyond its entries (that it exists, its groups, where a ``DEL`` cut it off)
lives in a KV bucket, one JSON value per key, loaded at start.

``DEL`` cannot erase an immutable log: it records the key's current end as its floor, and
every read starts above it; ``XADD ... MAXLEN`` is accepted and trims nothing (the log's
retention bounds it). Both are in docs/decisions.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NoKeysError, NotFoundError

from eventstore.jsapi import api_request
from eventstore.publish import Outgoing
from eventstore.store import EventStore
from gateway.resp.append_order import AppendOrders, KeyAppends
from gateway.resp.append_recovery import AppendRecovery, Unacknowledged
from gateway.resp.byframework_events import (
    FIELDS_IN_BODY,
    Fields,
    encode_fields,
)
from gateway.resp.entry_bodies import entry_body
from gateway.resp.replies import CommandError
from gateway.resp.stream_appends import PipelinedAppends, Prepared, fast_ack
from gateway.resp.stream_groups import ConsumerGroup
from gateway.resp.stream_keys import StreamTarget, target_for
from gateway.resp.stream_meta import StreamMeta, b64, durable_name
from gateway.resp.stream_pull import Puller
from gateway.resp.stream_reads import Entry, read_backwards, read_entries

log = logging.getLogger(__name__)

TARGET_CACHE_SIZE = 10_000
BUSYGROUP = "BUSYGROUP Consumer Group name already exists"


@dataclass(frozen=True, slots=True)
class StreamSpaceSettings:
    """Stream behaviour of the adapter; every wait is a setting so tests run fast."""

    ack_wait_seconds: float = 60.0
    """An entry pending on a dead consumer is delivered again after this long."""
    consumer_alive_seconds: float = 15.0
    """A consumer that read within this long (or still has its connection) is alive."""
    progress_interval_seconds: float = 10.0
    """How often live consumers' pending entries get in-progress acks (< ack wait)."""
    max_deliver: int = -1
    """Deliveries per entry before JetStream gives up (-1: never, as in Redis)."""
    block_poll_seconds: float = 1.0
    """Longest single wait inside a blocking read; also bounds the reaction to a disconnect."""
    meta_bucket: str = "jl_redis_streams"
    """KV bucket with each stream key's existence, groups and DEL floor."""
    request_timeout: float = 5.0
    lean_appends: bool = True
    """Pipelined appends on a lean connection of their own (``stream_appends``)."""


class StreamSpace:
    """Every Redis stream of one deployment (see the module doc)."""

    def __init__(self, store: EventStore, settings: StreamSpaceSettings | None = None) -> None:
        self.store = store
        self.settings = settings or StreamSpaceSettings()
        self.nc = store.nc
        self.stream = store.settings.stream
        self.root = store.settings.root
        self._metas: dict[str, StreamMeta] = {}
        """By subject filter: a v1 key and its v2 spelling are one stream."""
        self._groups: dict[tuple[str, bytes], ConsumerGroup] = {}
        self._kv: Any = None
        self._keep_alive: asyncio.Task[None] | None = None
        self._targets: dict[bytes, StreamTarget] = {}
        self._appends = PipelinedAppends(
            store, self.settings.request_timeout, lean=self.settings.lean_appends
        )
        self._orders = AppendOrders()
        self._recovery = AppendRecovery(self.nc, self._appends, self.settings.request_timeout)
        self._puller = Puller(self.nc, self._appends.lean_link)

    @property
    def appends(self) -> int:
        """Entries appended through this adapter (``INFO stats``)."""
        return self._appends.published

    async def start(self) -> None:
        self._kv = await self.store.js.create_key_value(
            bucket=self.settings.meta_bucket, history=1, replicas=self.store.settings.replicas
        )
        with contextlib.suppress(NoKeysError):
            for name in await self._kv.keys():
                entry = await self._kv.get(name)
                if entry.value:
                    meta = StreamMeta.from_json(entry.value)
                    self._metas[self.identity(meta.key)] = meta
        self._keep_alive = asyncio.create_task(self._keep_alive_loop())

    async def close(self) -> None:
        await self._appends.close()
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keep_alive
            self._keep_alive = None

    async def _keep_alive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_interval_seconds)
            for group in list(self._groups.values()):
                try:
                    await group.keep_alive()
                except (NatsError, OSError):  # a hiccup must not end redelivery protection
                    log.exception("in-progress acks for group %r failed", group.name)

    # -- keys --------------------------------------------------------------------

    def target(self, key: bytes) -> StreamTarget:
        # Every stream command maps its key several times; mapping is pure but not cheap.
        target = self._targets.get(key)
        if target is None:
            target = target_for(key, self.root)
            if len(self._targets) >= TARGET_CACHE_SIZE:
                self._targets.clear()
            self._targets[key] = target
        return target

    def identity(self, key: bytes) -> str:
        """What names a stream: its subject filter (shared by a key's v1 and v2 spellings)."""
        return self.target(key).filter

    def meta(self, key: bytes) -> StreamMeta:
        identity = self.identity(key)
        meta = self._metas.get(identity)
        if meta is None:
            meta = self._metas[identity] = StreamMeta(key)
        return meta

    async def _save(self, meta: StreamMeta) -> None:
        await self._kv.put("k." + b64(self.identity(meta.key).encode()), meta.to_json())

    def stream_keys(self) -> list[bytes]:
        return [meta.key for meta in self._metas.values() if meta.exists]

    async def exists(self, key: bytes) -> bool:
        meta = self._metas.get(self.identity(key))
        return meta is not None and meta.exists

    async def delete(self, key: bytes) -> bool:
        """``DEL``: the key's entries so far disappear from every read, and its groups go."""
        meta = self._metas.get(self.identity(key))
        if meta is None or not meta.exists:
            return False
        target = self.target(key)
        meta.floor_seq = await self.store.last_seq()
        meta.floor_count = await self._subject_count(target)
        for name, durable in list(meta.groups.items()):
            self._groups.pop((self.identity(key), name), None)
            with contextlib.suppress(NotFoundError):
                await self.store.js.delete_consumer(self.stream, durable)
        meta.groups.clear()
        meta.exists = False
        await self._save(meta)
        return True

    async def _mark_exists(self, meta: StreamMeta) -> None:
        if not meta.exists:
            meta.exists = True
            await self._save(meta)

    # -- entries -----------------------------------------------------------------

    def _prepared(self, key: bytes, fields: Fields) -> tuple[Outgoing, str]:
        """The entry's event and its ``Jl-Redis-Fields`` header value: the fields, or
        ``=`` when the body gives them back exactly (see :mod:`entry_bodies`)."""
        target = self.target(key)
        event_id, run_id, body, exact = entry_body(target, fields)
        outgoing = Outgoing(event_id, target.subject_for(run_id), body)
        return outgoing, FIELDS_IN_BODY if exact else encode_fields(fields)

    async def add(self, key: bytes, fields: Fields) -> int:
        """``XADD key * ...``: append one event; returns its stream sequence. The same
        path as a pipeline of one (the lean link when there is one)."""
        (result,) = await self.add_many([(key, fields)])
        if isinstance(result, CommandError):
            raise result
        return result

    async def add_many(
        self,
        entries: list[tuple[bytes, Fields]],
        *,
        after: asyncio.Future[None] | None = None,
        published: asyncio.Future[None] | None = None,
    ) -> list[int | CommandError]:
        """Pipelined XADD commands, published in order before any acknowledgement is
        awaited (:mod:`gateway.resp.stream_appends`), so sequences (ids) follow the order
        of ``entries``. One result each: the sequence, or the error of that entry alone
        (an entry without acknowledgement: :mod:`gateway.resp.append_recovery`).
        ``after`` and ``published``: see :meth:`PipelinedAppends.publish_all`."""
        records: dict[bytes, KeyAppends] = {}
        for key, _ in entries:
            if key not in records:
                records[key] = self._orders.enter(self.identity(key))
        try:
            sent = await self._appends.publish_all(
                (self._prepared_or_error(key, fields, records[key]) for key, fields in entries),
                len(entries),
                after=after,
                published=published,
            )
            results: list[int | CommandError] = []
            unacknowledged: list[Unacknowledged] = []
            positions: list[int] = []
            for outcome in sent:
                if isinstance(outcome, CommandError):
                    results.append(outcome)
                    continue
                outgoing, fields_header, record, token, data = outcome
                if data is None:
                    positions.append(len(results))
                    unacknowledged.append((record, token, outgoing, fields_header))
                    results.append(0)  # replaced below
                else:
                    results.append(fast_ack(outgoing, data))
            if unacknowledged:  # no await before: its trouble ends whatever happens
                answers = await self._recovery.answer(unacknowledged)
                for position, answer in zip(positions, answers, strict=True):
                    results[position] = answer
        finally:
            for key, record in records.items():
                self._orders.leave(self.identity(key), record)
        for key in records:  # usually one key
            meta = self.meta(key)
            if not meta.exists and any(
                type(result) is int and entry[0] == key
                for entry, result in zip(entries, results, strict=True)
            ):
                await self._mark_exists(meta)
        return results

    def _prepared_or_error(
        self, key: bytes, fields: Fields, record: KeyAppends
    ) -> Prepared | CommandError:
        try:
            outgoing, fields_header = self._prepared(key, fields)
        except CommandError as error:
            return error
        return outgoing, fields_header, record

    async def length(self, key: bytes) -> int:
        meta = self._metas.get(self.identity(key))
        if meta is None or not meta.exists:
            return 0
        return max(0, await self._subject_count(self.target(key)) - meta.floor_count)

    async def _subject_count(self, target: StreamTarget) -> int:
        info = await api_request(
            self.nc,
            f"$JS.API.STREAM.INFO.{self.stream}",
            {"subjects_filter": target.filter},
            timeout=self.settings.request_timeout,
        )
        counts = info.get("state", {}).get("subjects") or {}
        return int(sum(int(count) for count in counts.values()))

    def floor(self, key: bytes) -> int:
        meta = self._metas.get(self.identity(key))
        return meta.floor_seq if meta is not None else 0

    async def range(self, key: bytes, first_seq: int, last_seq: int, count: int) -> list[Entry]:
        """Entries with ``first_seq <= seq <= last_seq``, oldest first, at most ``count``."""
        first_seq = max(first_seq, self.floor(key) + 1)
        return await read_entries(
            self.nc,
            self.stream,
            self.target(key).filter,
            first_seq,
            count,
            timeout=self.settings.request_timeout,
            until_seq=last_seq,
            link=await self._appends.lean_link(),
        )

    async def range_reverse(
        self, key: bytes, first_seq: int, last_seq: int, count: int
    ) -> list[Entry]:
        """Like :meth:`range`, newest first."""
        floor = max(first_seq - 1, self.floor(key))
        last_seq = min(last_seq, await self.store.last_seq())
        return await read_backwards(
            self.nc,
            self.stream,
            self.target(key).filter,
            floor,
            last_seq,
            count=count,
            timeout=self.settings.request_timeout,
            link=await self._appends.lean_link(),
        )

    async def entry_at(self, key: bytes, seq: int) -> Entry | None:
        """The entry stored at ``seq`` if it belongs to ``key`` and is above its floor."""
        if seq <= self.floor(key):
            return None
        found = await self.range(key, seq, seq, 1)
        return found[0] if found else None

    async def last_seq(self) -> int:
        return await self.store.last_seq()

    @contextlib.asynccontextmanager
    async def notifications(self, keys: list[bytes]) -> Any:
        """An event set whenever an entry is stored under any of ``keys``.

        Appends are plain NATS messages on the keys' subjects, so a core subscription
        sees them as they are stored: blocked readers wake at once, without polling.
        """
        woken = asyncio.Event()

        async def wake(_msg: Any) -> None:
            woken.set()

        subscriptions = [await self.nc.subscribe(self.target(k).filter, cb=wake) for k in keys]
        try:
            yield woken
        finally:
            for subscription in subscriptions:
                await subscription.unsubscribe()

    # -- groups ------------------------------------------------------------------

    async def create_group(self, key: bytes, group: bytes, start_seq: int, mkstream: bool) -> None:
        """``XGROUP CREATE``; ``start_seq`` is the first sequence the group may deliver."""
        meta = self.meta(key)
        if not meta.exists:
            if not mkstream:
                raise CommandError(
                    "ERR The XGROUP subcommand requires the key to exist. Note that for "
                    "CREATE you may want to use the MKSTREAM option to create an empty "
                    "stream automatically."
                )
            meta.exists = True
        if group in meta.groups:
            raise CommandError(BUSYGROUP)
        durable = durable_name(self.identity(key), group)
        with contextlib.suppress(NotFoundError):  # a leftover of a DEL'd key's group
            await self.store.js.delete_consumer(self.stream, durable)
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=self.target(key).filter,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(start_seq, meta.floor_seq + 1, 1),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait_seconds,
            max_deliver=self.settings.max_deliver,
            max_ack_pending=-1,
        )
        await self.store.js.add_consumer(self.stream, config)
        meta.groups[group] = durable
        await self._save(meta)
        self._groups[(self.identity(key), group)] = self._new_group(group, durable, start_seq - 1)

    async def destroy_group(self, key: bytes, group: bytes) -> int:
        meta = self._metas.get(self.identity(key))
        if meta is None or group not in meta.groups:
            return 0
        durable = meta.groups.pop(group)
        self._groups.pop((self.identity(key), group), None)
        with contextlib.suppress(NotFoundError):
            await self.store.js.delete_consumer(self.stream, durable)
        await self._save(meta)
        return 1

    def _new_group(self, name: bytes, durable: str, last_seq: int) -> ConsumerGroup:
        return ConsumerGroup(
            name, durable, self.stream, self.nc, self.settings, self._puller, max(0, last_seq)
        )

    async def group(self, key: bytes, group: bytes) -> ConsumerGroup | None:
        """The group, rebuilt from its durable consumer after an adapter restart."""
        found = self._groups.get((self.identity(key), group))
        if found is not None:
            return found
        meta = self._metas.get(self.identity(key))
        if meta is None or group not in meta.groups:
            return None
        durable = meta.groups[group]
        try:
            info = await self.store.js.consumer_info(self.stream, durable)
            delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
        except NotFoundError:
            return None
        found = self._groups[(self.identity(key), group)] = self._new_group(
            group, durable, delivered
        )
        return found

    async def groups(self, key: bytes) -> list[ConsumerGroup]:
        meta = self._metas.get(self.identity(key))
        names = list(meta.groups) if meta is not None else []
        found = [await self.group(key, name) for name in names]
        return [group for group in found if group is not None]
