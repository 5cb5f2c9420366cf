"""Reading the log through ordered consumers (ADR-17): ephemeral, flow-controlled, and
recreated by nats-py from the last delivered sequence after a gap or a missed heartbeat.
Every message comes out as ``(seq, Event | Undecodable)``; nothing ends an iteration but
the caller or the end of the requested range (G6).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import api
from nats.js.client import JetStreamContext

from eventstore.codec import decode
from eventstore.settings import StoreSettings
from eventstore.types import StoredRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadRange:
    """Where a read starts and (for a bounded read) where it stops."""

    from_seq: int = 1
    until_seq: int | None = None
    start_time: datetime | None = None
    subject_filter: str | None = None
    follow: bool = False


def _consumer_config(window: ReadRange, settings: StoreSettings) -> api.ConsumerConfig:
    if window.start_time is not None:
        return api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_TIME,
            opt_start_time=window.start_time,
        )
    return api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(1, window.from_seq),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stored_at(reply: str) -> datetime:
    """The stored time from the ack subject's nanosecond token, truncated to microseconds.

    Integer arithmetic, not nats-py's float ``metadata.timestamp``: a foreign event's
    filled-in time must be identical whichever way the log is read (see bulk_reader).
    """
    tokens = reply.split(".")
    nanos = int(tokens[7] if len(tokens) == 9 else tokens[-3])  # v1 and v2 ack subjects
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def to_record(msg: Msg, settings: StoreSettings) -> StoredRecord:
    meta = msg.metadata
    seq = meta.sequence.stream
    headers = dict(msg.headers) if msg.headers else {}
    return StoredRecord(
        seq,
        msg.subject,
        decode(
            msg.data,
            seq=seq,
            subject=msg.subject,
            stored_at=_stored_at(msg.reply),
            max_size=settings.max_msg_size,
            headers=headers,
        ),
    )


READ_AHEAD = 4096
"""Messages buffered between nats-py and the reader; a full buffer slows the consumer
down through JetStream flow control instead of growing memory."""


async def consume(
    js: JetStreamContext, window: ReadRange, settings: StoreSettings
) -> AsyncGenerator[StoredRecord]:
    """Yield records in stream order; a bounded read stops at the end of its range."""
    # A callback feeding our own queue: nats-py's next_msg() creates a task and a uuid
    # per message, which was a third of the cost of reading the log.
    buffer: asyncio.Queue[Msg] = asyncio.Queue(maxsize=READ_AHEAD)
    subscription = await js.subscribe(
        window.subject_filter or settings.subjects_wildcard,
        stream=settings.stream,
        cb=buffer.put,
        ordered_consumer=True,
        idle_heartbeat=settings.subscribe_idle_heartbeat,
        config=_consumer_config(window, settings),
    )
    try:
        if not window.follow:
            info = await subscription.consumer_info()
            if info.num_pending == 0 and (
                info.delivered is None or not info.delivered.consumer_seq
            ):
                return
        while True:
            msg = await buffer.get()
            record = to_record(msg, settings)
            seq = record.seq
            if window.until_seq is not None and seq > window.until_seq:
                return
            yield record
            if not window.follow and (msg.metadata.num_pending == 0 or seq == window.until_seq):
                return
    finally:
        try:
            await subscription.unsubscribe()
        except NatsError as exc:
            # The connection may already be closed; the server drops the consumer anyway.
            log.debug("unsubscribe after read: %s", exc)


__all__ = ["ReadRange", "consume", "to_record"]
