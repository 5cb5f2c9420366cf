"""``EventStore``: the JetStream log of DESIGN §3 behind one small API.

>>> async def example() -> None:  # doctest: +SKIP
...     async with await EventStore.open("nats://127.0.0.1:4222") as store:
...         result = await store.append(event)
...         async for seq, item in store.read(from_seq=1):
...             print(seq, item)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Literal, Self

from nats.aio.client import Client as NatsClient
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from eventstore.atomic_batch import append_atomic
from eventstore.blobs import Blobs
from eventstore.bulk_reader import read_bulk, read_bulk_batches
from eventstore.codec import decode, encode
from eventstore.connection import ConnectOptions, connect, parse_version
from eventstore.envelope import Event
from eventstore.fast_batch import FastIngestUnavailable, append_fast
from eventstore.jsapi import api_request
from eventstore.log_end import last_log_seq
from eventstore.prepared import HEADER_ALLOWANCE, PreparedEvents
from eventstore.provision import FAST_INGEST_VERSION, EnsureReport, ensure_buckets, ensure_stream
from eventstore.publish import Outgoing, publish_one, publish_one_result
from eventstore.raw_connection import RawConnection, RawUnsupported
from eventstore.reading import ReadRange, consume
from eventstore.routing import subject_for
from eventstore.settings import StoreSettings
from eventstore.types import AppendResult, Record, StoredRecord

log = logging.getLogger(__name__)

BatchMode = Literal["auto", "fast", "atomic", "single"]


class EventStore:
    """Append to, read and follow the log; KV and object helpers under ``blobs``."""

    def __init__(self, nc: NatsClient, settings: StoreSettings | None = None) -> None:
        self.nc = nc
        self.settings = settings or StoreSettings.from_env()
        self.js = nc.jetstream(timeout=self.settings.request_timeout)
        self.server_version = parse_version(str(nc.connected_server_version))
        self.blobs = Blobs(self.js, self.settings.object_bucket)
        self._fast_ingest = self.server_version >= FAST_INGEST_VERSION
        self.connect_options: ConnectOptions | None = None
        """Set by :meth:`open`; lets :meth:`records` read in bulk on a connection of its own."""

    @classmethod
    async def open(
        cls,
        options: ConnectOptions | str | None = None,
        settings: StoreSettings | None = None,
        *,
        ensure: bool = True,
    ) -> Self:
        """Connect (refusing servers older than 2.12.1) and, by default, ``ensure``."""
        if isinstance(options, str):
            options = ConnectOptions(url=options)
        nc = await connect(options)
        store = cls(nc, settings)
        store.connect_options = options or ConnectOptions()
        if ensure:
            try:
                await store.ensure()
            except BaseException:
                await nc.close()
                raise
        return store

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def ensure(self) -> EnsureReport:
        """Create or update the stream, KV buckets and object store (idempotent)."""
        report = await ensure_stream(self.nc, self.settings, self.server_version)
        await ensure_buckets(self.js, self.settings)
        return report

    # -- writing -----------------------------------------------------------------

    def outgoing(self, event: Event) -> Outgoing:
        return Outgoing(event.id, subject_for(event, self.settings.root), encode(event))

    async def append(
        self,
        event: Event,
        expected_last_subject_seq: int | None = None,
    ) -> AppendResult:
        """Store one event; ``Nats-Msg-Id`` is its id (G3).

        ``expected_last_subject_seq`` is the stream sequence of the last message on the
        event's subject (0: the subject must be empty); a mismatch raises
        :class:`~eventstore.errors.ConcurrencyError` with the actual sequence. A refused
        event raises :class:`~eventstore.errors.AppendError`; a duplicate is not an
        error: the result says ``duplicate=True`` and gives the original sequence.
        """
        return await publish_one(
            self.nc, self.outgoing(event), self.settings, expected_last_subject_seq
        )

    async def append_many(
        self,
        events: Sequence[Event],
        *,
        mode: BatchMode = "auto",
        progress: Callable[[int], None] | None = None,
    ) -> list[AppendResult]:
        """Store many events fast, in order, with one result per event (same order).

        Nothing raises for a single event: a refused or unconfirmed event has ``error``
        set and can be appended again with the same id. ``mode``: ``fast`` uses
        fast-ingest batches (server 2.14+; on an older server it falls back to atomic
        batches, and a stream without ``allow_batched`` raises FastIngestUnavailable),
        ``atomic`` all-or-nothing batches with a sequence per event, ``single`` one
        publish per event; ``auto`` picks fast when the server has it. ``progress`` is
        called with the number of events settled so far (stored or refused), for
        progress bars.
        """
        prepared = PreparedEvents(events, self.outgoing, self._size_limit())
        if mode == "single":
            return await self._append_single(prepared, progress)
        if mode in ("auto", "fast") and self._fast_ingest:
            try:
                return await append_fast(self.nc, prepared, self.settings, progress)
            except FastIngestUnavailable as exc:
                if mode == "fast":
                    raise
                log.info("fast ingest unavailable (%s); using atomic batches", exc)
                self._fast_ingest = False
        return await append_atomic(self.nc, prepared, self.settings, progress)

    def _size_limit(self) -> int:
        server_limit = int(self.nc.max_payload or self.settings.max_msg_size) - HEADER_ALLOWANCE
        return min(self.settings.max_msg_size, server_limit)

    async def _append_single(
        self, prepared: PreparedEvents, progress: Callable[[int], None] | None
    ) -> list[AppendResult]:
        results = []
        for index in range(len(prepared)):
            refusal = prepared.refusal(index)
            if refusal is None:
                refusal = await publish_one_result(self.nc, prepared.item(index), self.settings)
            results.append(refusal)
            if progress is not None:
                progress(len(results))
        return results

    # -- reading -----------------------------------------------------------------

    def read(
        self,
        from_seq: int = 1,
        *,
        until_seq: int | None = None,
        subject_filter: str | None = None,
        start_time: datetime | None = None,
    ) -> AsyncIterator[Record]:
        """Stored records from ``from_seq`` (or ``start_time``) to ``until_seq`` or the
        end of the log as it is when the read reaches it."""
        window = ReadRange(from_seq, until_seq, start_time, subject_filter, follow=False)
        return _without_subjects(consume(self.js, window, self.settings))

    def subscribe(
        self, from_seq: int = 1, subject_filter: str | None = None
    ) -> AsyncIterator[Record]:
        """Like :meth:`read`, then follow new events as they are appended, forever."""
        window = ReadRange(from_seq, None, None, subject_filter, follow=True)
        return _without_subjects(consume(self.js, window, self.settings))

    def records(
        self,
        from_seq: int = 1,
        *,
        follow: bool = False,
        until_seq: int | None = None,
        subject_filter: str | None = None,
    ) -> AsyncGenerator[StoredRecord]:
        """Like :meth:`read` / :meth:`subscribe` (``follow``), with each record's subject.

        Reads in bulk (batched direct gets on a lean connection of its own) when the store
        was opened with :meth:`open` and its options allow it, else through an ordered
        consumer; both give the same records.
        """
        if self.connect_options is not None and self._bulk_reads_work():
            return read_bulk(
                self.connect_options,
                self.settings,
                from_seq=from_seq,
                until_seq=until_seq,
                subject_filter=subject_filter,
                follow=follow,
            )
        window = ReadRange(from_seq, until_seq, None, subject_filter, follow=follow)
        return consume(self.js, window, self.settings)

    def record_batches(
        self,
        from_seq: int = 1,
        *,
        follow: bool = False,
        until_seq: int | None = None,
        subject_filter: str | None = None,
    ) -> AsyncGenerator[list[StoredRecord]]:
        """:meth:`records` in non-empty lists, for consumers that work in batches.

        A bulk read gives the records that arrived together; the ordered-consumer
        fallback gives one record per list.
        """
        if self.connect_options is not None and self._bulk_reads_work():
            return read_bulk_batches(
                self.connect_options,
                self.settings,
                from_seq=from_seq,
                until_seq=until_seq,
                subject_filter=subject_filter,
                follow=follow,
            )
        window = ReadRange(from_seq, until_seq, None, subject_filter, follow=follow)
        return _singletons(consume(self.js, window, self.settings))

    def _bulk_reads_work(self) -> bool:
        """Whether settings and connect options allow a lean connection for bulk reads."""
        if self.connect_options is None or not self.settings.bulk_reads:
            return False
        try:
            RawConnection(self.connect_options)
        except RawUnsupported as exc:
            log.info("bulk reads unavailable (%s); using an ordered consumer", exc)
            return False
        return True

    async def last_on_subject(self, subject: str) -> Record | None:
        """The last record on ``subject`` by direct get, or ``None`` if there is none."""
        try:
            raw = await self.js.get_last_msg(self.settings.stream, subject, direct=True)
        except NotFoundError:
            return None
        return self._decode_raw(raw, subject)

    async def on_subject(self, subject: str, from_seq: int = 1) -> AsyncIterator[Record]:
        """Every record on ``subject`` (wildcards allowed) from ``from_seq`` on, by direct
        gets over the main connection: one round trip per record, no consumer and no
        connection of its own, which suits short per-run reads such as a run's journal."""
        async for record in self.stored_on_subject(subject, from_seq):
            yield record.seq, record.item

    async def stored_on_subject(
        self, subject: str, from_seq: int = 1
    ) -> AsyncIterator[StoredRecord]:
        """:meth:`on_subject` with each record's own subject (useful with wildcards)."""
        seq = from_seq
        while True:
            try:
                raw = await self.js.get_msg(
                    self.settings.stream, seq=seq, subject=subject, direct=True, next=True
                )
            except NotFoundError:
                return
            seq, item = self._decode_raw(raw, subject)
            yield StoredRecord(seq, raw.subject or subject, item)
            seq += 1

    def _decode_raw(self, raw: RawStreamMsg, subject: str) -> Record:
        seq = int(raw.seq or 0)
        headers = {k: str(v) for k, v in (raw.headers or {}).items()}
        return seq, decode(
            raw.data or b"",
            seq=seq,
            subject=raw.subject or subject,
            stored_at=raw.time,
            max_size=self.settings.max_msg_size,
            headers=headers,
        )

    async def seq_before(self, moment: datetime) -> int:
        """The last stream sequence stored before ``moment`` (0 if none)."""
        async with contextlib.aclosing(
            consume(self.js, ReadRange(start_time=moment), self.settings)
        ) as records:
            async for record in records:
                return record.seq - 1
        return await self.last_seq()

    async def last_seq(self) -> int:
        """The stream's last sequence (0 for an empty log)."""
        info = await api_request(
            self.nc,
            f"$JS.API.STREAM.INFO.{self.settings.stream}",
            timeout=self.settings.request_timeout,
        )
        return int(info["state"]["last_seq"])

    async def last_log_seq(self, after: int = 0) -> int:
        """The sequence of the log's last event (0 for an empty log): unlike
        :meth:`last_seq`, never a held timer's, which no reader of the log reaches.
        ``after``: a sequence already applied (nothing past it: no further look-up)."""
        return await last_log_seq(self.nc, self.settings, await self.last_seq(), after)


async def _without_subjects(records: AsyncGenerator[StoredRecord]) -> AsyncIterator[Record]:
    try:
        async for record in records:
            yield record.seq, record.item
    finally:
        await records.aclose()  # unsubscribes the consumer now, not when collected


async def _singletons(
    records: AsyncGenerator[StoredRecord],
) -> AsyncGenerator[list[StoredRecord]]:
    async with contextlib.aclosing(records):
        async for record in records:
            yield [record]


__all__ = ["BatchMode", "EventStore"]
