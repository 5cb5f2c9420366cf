"""Concurrent bulk readers each get their own records, in order, once; a cancelled
follower stops.

Both found by ``jetledger up``: the projector, ``send --stream`` and the API's live tails
read at the same time, and when every bulk reader shared one reply inbox each received
the others' replies too (the projector died on "got 2 after 3"); and a projector told to
stop just as the log grew hung, because ``asyncio.wait_for`` on Python 3.11 swallows a
cancellation that arrives as the read completes."""

from __future__ import annotations

import asyncio
import contextlib
import random

from storekit import delta, open_store

from eventstore.store import EventStore

EVENTS = 60
FOLLOW_WITHIN = 20.0
CANCELS = 150  # the race hit about 1 in 30 cancellations before the fix
STOPS_WITHIN = 2.0


async def follow(store: EventStore, subject_filter: str | None, count: int) -> list[int]:
    seqs: list[int] = []
    records = store.records(1, follow=True, subject_filter=subject_filter)
    async with contextlib.aclosing(records):
        async for record in records:
            seqs.append(record.seq)
            if len(seqs) == count:
                break
    return seqs


async def test_concurrent_following_readers_do_not_see_each_others_replies(
    nats_url: str,
) -> None:
    async with open_store(nats_url) as store:
        root = store.settings.root
        readers = [
            asyncio.create_task(follow(store, None, 2 * EVENTS)),
            asyncio.create_task(follow(store, f"{root}.data.a.>", EVENTS)),
            asyncio.create_task(follow(store, f"{root}.data.b.>", EVENTS)),
        ]
        await asyncio.sleep(0.2)  # every reader is polling the empty log
        for index in range(EVENTS):
            await store.append(delta(index, session_id="a"))
            await store.append(delta(index, session_id="b"))
            if index % 10 == 0:
                await asyncio.sleep(0.05)  # let readers fall back to polling mid-way
        every, only_a, only_b = await asyncio.wait_for(asyncio.gather(*readers), FOLLOW_WITHIN)
    assert every == list(range(1, 2 * EVENTS + 1))
    assert only_a == list(range(1, 2 * EVENTS + 1, 2))
    assert only_b == list(range(2, 2 * EVENTS + 1, 2))


async def test_a_follower_cancelled_as_records_arrive_stops(nats_url: str) -> None:
    async def follow(store: EventStore) -> None:
        async with contextlib.aclosing(store.records(1, follow=True)) as records:
            async for _record in records:
                pass

    hung = 0
    async with open_store(nats_url) as store:
        for index in range(CANCELS):
            follower = asyncio.create_task(follow(store))
            await asyncio.sleep(0.02)
            await store.append(delta(index))
            await asyncio.sleep(random.random() * 0.003)  # cancel around the arrival
            follower.cancel()
            done, _ = await asyncio.wait({follower}, timeout=STOPS_WITHIN)
            if not done:
                hung += 1
                follower.cancel()  # a second cancel gets through; do not leak the reader
                await asyncio.wait({follower}, timeout=STOPS_WITHIN)
    assert hung == 0, f"{hung} of {CANCELS} cancelled followers kept reading"
