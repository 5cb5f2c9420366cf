"""A whole-log bulk read asks the server for every message in order (no subject filter,
which cost nats-server three times the CPU) and drops the stream's other subject
space, the timer schedules, itself: readers of the log must never see those."""

from __future__ import annotations

import contextlib

from storekit import delta, open_store

from eventstore.codec import Undecodable
from eventstore.provision import timer_root
from eventstore.store import EventStore
from eventstore.types import StoredRecord


async def collect(store: EventStore, **kwargs: object) -> list[StoredRecord]:
    async with contextlib.aclosing(store.records(**kwargs)) as records:  # type: ignore[arg-type]
        return [record async for record in records]


async def lists(store: EventStore, **kwargs: object) -> list[list[StoredRecord]]:
    source = store.record_batches(**kwargs)  # type: ignore[arg-type]
    async with contextlib.aclosing(source) as batches:
        return [batch async for batch in batches]


def summary(records: list[StoredRecord]) -> list[tuple[int, str, str]]:
    return [
        (r.seq, r.subject, r.item.reason if isinstance(r.item, Undecodable) else r.item.id)
        for r in records
    ]


async def test_timer_messages_in_the_stream_are_never_read(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        timers = timer_root(store.settings)
        await store.append_many([delta(i) for i in range(5)])  # seq 1-5
        for n in range(3):  # seq 6-8: not events, and outside <root>.>
            await store.js.publish(f"{timers}.s1.r1.w{n}", b'{"not": "an event"}')
        await store.append_many([delta(i) for i in range(5, 3005)])  # seq 9-3008
        for n in range(3, 2503):  # seq 3009-5508: more than one whole direct get
            await store.js.publish(f"{timers}.s1.r1.w{n}", b"{}")
        await store.append_many([delta(i) for i in range(3005, 3010)])  # seq 5509-5513

        bulk = await collect(store)
        assert [r.seq for r in bulk] == [*range(1, 6), *range(9, 3009), *range(5509, 5514)]
        assert all(r.subject.startswith(f"{store.settings.root}.") for r in bulk)
        assert not any(isinstance(r.item, Undecodable) for r in bulk)

        # the ordered consumer (filtered on <root>.> by the server) agrees
        options = store.connect_options
        store.connect_options = None
        ordered = await collect(store)
        store.connect_options = options
        assert summary(bulk) == summary(ordered)

        # reads that start or end among the timers
        assert [r.seq for r in await collect(store, from_seq=6, until_seq=10)] == [9, 10]
        assert [r.seq for r in await collect(store, from_seq=3008, until_seq=5509)] == [
            3008,
            5509,
        ]
        assert await collect(store, from_seq=3100, until_seq=5000) == []
        batches = await lists(store, from_seq=3009)
        assert [r.seq for batch in batches for r in batch] == list(range(5509, 5514))
        assert all(batches)  # a read that brought only timers hands out no empty list


async def test_a_subject_filter_still_goes_to_the_server(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        root = store.settings.root
        await store.append_many([delta(i, run_id=f"r{i % 4}") for i in range(2500)])
        wanted = await collect(store, subject_filter=f"{root}.data.s1.r3.>")
        assert [r.seq for r in wanted] == list(range(4, 2501, 4))
        # a filtered read bounded inside the log stops at the bound
        bounded = await collect(store, subject_filter=f"{root}.data.s1.r3.>", until_seq=2001)
        assert [r.seq for r in bounded] == list(range(4, 2001, 4))


async def test_the_log_ends_at_its_last_event_not_at_a_timer_after_it(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        timers = timer_root(store.settings)
        assert await store.last_log_seq() == 0  # empty stream
        await store.append_many([delta(i) for i in range(3)])  # seq 1-3
        assert await store.last_log_seq() == 3
        await store.js.publish(f"{timers}.s1.r1.w0", b"{}")  # seq 4: a held timer
        await store.js.publish(f"{timers}.s1.r1.w1", b"{}")  # seq 5
        assert await store.last_seq() == 5
        assert await store.last_log_seq() == 3  # what a projector can reach
        assert await store.last_log_seq(after=3) == 3
        await store.append_many([delta(3)])  # seq 6: the log's end again
        assert await store.last_log_seq(after=3) == 6
        assert await store.last_log_seq(after=6) == 6  # nothing past it: no look-up
        # A deleted newest message (a fired timer's schedule is removed) is no end either.
        await store.js.publish(f"{timers}.s1.r1.w2", b"{}")  # seq 7
        await store.js.delete_msg(store.settings.stream, 7)
        assert await store.last_log_seq() == 6
