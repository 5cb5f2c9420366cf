"""A Redis consumer group on a durable JetStream consumer.

The durable consumer does the delivery: each entry goes to one reader of the group,
``XACK`` acks it, and an entry nobody acks is delivered again after the ack wait. The
group keeps what Redis shows on top of that, in memory: the pending entries list (which
consumer holds which entry, since when, how often delivered) and the consumers.

While a consumer is alive (it read recently, or a connection that read as it is still
open) its pending entries get in-progress acks, so JetStream does not redeliver work a
live worker is still doing. A consumer that died stops getting them, and after the ack
wait its entries go to the next reader of the group with their delivery count: the
recovery real Redis never does for by-framework.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from nats.aio.client import Client as NatsClient

from eventstore.wire import publish_encoded, supports_bulk
from gateway.resp.stream_pull import (
    Delivery,
    Puller,
    pending_after,
    pull_now,
    pull_one,
    stream_seq_of,
)
from gateway.resp.stream_reads import Entry, entry_of

if TYPE_CHECKING:
    from gateway.resp.stream_space import StreamSpaceSettings


class LiveConnection(Protocol):
    """What a group needs of a client connection: whether it is gone."""

    closed: asyncio.Event


@dataclass(slots=True)
class PendingEntry:
    seq: int
    consumer: bytes
    deliveries: int
    delivered_at: float
    """``time.time()`` of the last delivery (XPENDING's idle time)."""
    reply: str
    """The JetStream ack subject of the last delivery."""


@dataclass(slots=True)
class GroupConsumer:
    name: bytes
    seen_at: float = field(default_factory=time.time)
    """Last read by this consumer (XINFO CONSUMERS ``inactive``)."""
    active_at: float = 0.0
    """Last read that returned entries (XINFO CONSUMERS ``idle`` counts from any read)."""
    connections: list[LiveConnection] = field(default_factory=list)

    def alive(self, now: float, alive_seconds: float) -> bool:
        self.connections = [c for c in self.connections if not c.closed.is_set()]
        return bool(self.connections) or now - self.seen_at < alive_seconds


@dataclass(slots=True)
class ConsumerGroup:
    name: bytes
    durable: str
    stream: str
    nc: NatsClient
    settings: StreamSpaceSettings
    puller: Puller
    last_delivered_seq: int = 0
    entries_read: int = 0
    pending: dict[int, PendingEntry] = field(default_factory=dict)
    consumers: dict[bytes, GroupConsumer] = field(default_factory=dict)

    def consumer(self, name: bytes, conn: LiveConnection | None = None) -> GroupConsumer:
        member = self.consumers.get(name)
        if member is None:
            member = self.consumers[name] = GroupConsumer(name)
        member.seen_at = time.time()
        if conn is not None and all(c is not conn for c in member.connections):
            member.connections.append(conn)
        return member

    async def read_new(
        self, member: GroupConsumer, count: int, block: float | None, closed: asyncio.Event
    ) -> list[Entry]:
        """``XREADGROUP ... >``: entries never delivered in this group (or due again)."""
        timeout = self.settings.request_timeout
        messages = await pull_now(self.puller, self.stream, self.durable, count, timeout)
        if not messages and block is not None:
            deadline = None if block == 0 else time.monotonic() + block
            while not messages and not closed.is_set():
                left = self.settings.block_poll_seconds
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0:
                        break
                messages = await pull_one(self.puller, self.stream, self.durable, left, timeout)
                member.seen_at = time.time()
            # More entries than the one that woke us: take them too (up to COUNT). The
            # delivery says how many are pending behind it, so the usual single entry
            # costs no second round trip before the reply.
            if messages and count > 1 and pending_after(messages[-1]) > 0:
                messages += await pull_now(
                    self.puller, self.stream, self.durable, count - 1, timeout
                )
        return [self._deliver(member, msg) for msg in messages]

    def _deliver(self, member: GroupConsumer, msg: Delivery) -> Entry:
        seq, deliveries = stream_seq_of(msg)
        now = time.time()
        self.pending[seq] = PendingEntry(seq, member.name, deliveries, now, msg.reply)
        member.active_at = now
        if seq > self.last_delivered_seq:
            self.last_delivered_seq = seq
            self.entries_read += 1
        return entry_of(msg.fields_header, msg.data, seq)

    def history(self, member: GroupConsumer, after_seq: int, count: int) -> list[PendingEntry]:
        """``XREADGROUP`` with an id: this consumer's pending entries after ``after_seq``;
        reading them again counts as a delivery, as in Redis."""
        mine = sorted(
            (p for p in self.pending.values() if p.consumer == member.name and p.seq > after_seq),
            key=lambda p: p.seq,
        )[:count]
        now = time.time()
        for entry in mine:
            entry.deliveries += 1
            entry.delivered_at = now
        return mine

    async def ack(self, seqs: list[int]) -> int:
        acked = 0
        replies: list[str] = []
        for seq in seqs:
            entry = self.pending.pop(seq, None)
            if entry is None:
                continue
            acked += 1
            if entry.reply:
                replies.append(entry.reply)
        await _publish_acks(self.nc, replies, b"+ACK")
        return acked

    async def keep_alive(self) -> None:
        """In-progress acks for entries held by live consumers (see the module doc)."""
        now = time.time()
        alive = {
            name
            for name, member in self.consumers.items()
            if member.alive(now, self.settings.consumer_alive_seconds)
        }
        replies = [
            entry.reply
            for entry in list(self.pending.values())
            if entry.consumer in alive and entry.reply
        ]
        await _publish_acks(self.nc, replies, b"+WPI")

    def pending_of(self, consumer: bytes) -> int:
        return sum(1 for p in self.pending.values() if p.consumer == consumer)


async def _publish_acks(nc: NatsClient, subjects: list[str], body: bytes) -> None:
    """The same acknowledgement to each of ``subjects``, as one write when nats-py's
    bulk path is there (``XACK`` of a batch of 100 was 100 publish calls)."""
    if not subjects:
        return
    if not supports_bulk(nc):
        for subject in subjects:
            await nc.publish(subject, body)
        return
    tail = b" %d\r\n%b\r\n" % (len(body), body)
    await publish_encoded(nc, b"".join([b"PUB " + subject.encode() + tail for subject in subjects]))
