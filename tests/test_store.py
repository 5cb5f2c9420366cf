"""The store against a real nats-server: round trips, dedupe (G3), OCC, bulk appends,
reads by sequence / time / subject, direct get, KV and objects."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from storekit import delta, isolated_settings, open_store

from eventstore import subjects
from eventstore.blobs import StoredObject
from eventstore.catalog_examples import example_events
from eventstore.codec import Undecodable
from eventstore.errors import AppendError, ConcurrencyError, ObjectIntegrityError
from eventstore.routing import subject_for
from eventstore.store import EventStore


async def collect(iterator, limit: int | None = None):  # type: ignore[no-untyped-def]
    out = []
    async for record in iterator:
        out.append(record)
        if limit is not None and len(out) >= limit:
            break
    return out


async def test_every_catalog_type_round_trips(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        examples = example_events()
        for event in examples:
            result = await store.append(event)
            assert result.ok and result.seq is not None and result.duplicate is False
        records = await collect(store.read(1))
        assert [event for _, event in records] == examples
        assert [seq for seq, _ in records] == list(range(1, len(examples) + 1))


async def test_same_event_twice_is_stored_once_and_reported_duplicate(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        event = delta(1)
        first = await store.append(event)
        second = await store.append(event)
        assert (first.duplicate, second.duplicate) == (False, True)
        assert second.seq == first.seq
        assert await store.last_seq() == 1


async def test_expected_last_subject_seq_zero_succeeds_once(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        await store.append(delta(0, run_id="other"))  # moves the stream, not this subject
        first = await store.append(delta(1), expected_last_subject_seq=0)
        with pytest.raises(ConcurrencyError) as caught:
            await store.append(delta(2), expected_last_subject_seq=0)
        assert caught.value.actual_last_seq == first.seq
        assert caught.value.expected_last_seq == 0
        follow_up = await store.append(delta(3), expected_last_subject_seq=first.seq)
        assert follow_up.ok and follow_up.seq == 3


async def test_append_many_stores_100k_in_order(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        events = [delta(i) for i in range(100_000)]
        results = await store.append_many(events)
        assert all(result.ok for result in results), [r for r in results if not r.ok][:3]
        assert [result.event_id for result in results] == [event.id for event in events]
        assert await store.last_seq() == 100_000
        seqs, ids = [], []
        async for seq, event in store.read(1):
            seqs.append(seq)
            ids.append(event.id)
        assert len(seqs) == 100_000
        assert all(a < b for a, b in itertools.pairwise(seqs))
        assert ids == [event.id for event in events]


@pytest.mark.parametrize("mode", ["atomic", "single"])
async def test_append_many_other_modes_give_sequences(nats_url: str, mode: str) -> None:
    async with open_store(nats_url, isolated_settings(batch_size=100)) as store:
        events = [delta(i) for i in range(2_500 if mode == "atomic" else 300)]
        results = await store.append_many(events, mode=mode)  # type: ignore[arg-type]
        assert [r.seq for r in results] == list(range(1, len(events) + 1))
        assert all(r.ok and r.duplicate is False for r in results)


async def test_append_many_reports_duplicates_and_oversize_per_event(nats_url: str) -> None:
    async with open_store(nats_url, isolated_settings(max_msg_size=4096)) as store:
        already = [delta(i) for i in range(5)]
        await store.append_many(already, mode="atomic")
        huge = delta(99, size=8000)
        fresh = [delta(i) for i in range(5, 10)]
        for mode in ("atomic", "fast"):
            results = await store.append_many([*already, huge, *fresh], mode=mode)  # type: ignore[arg-type]
            assert not results[5].ok and "exceeds" in (results[5].error or "")
            assert all(r.ok for i, r in enumerate(results) if i != 5)
        atomic_again = await store.append_many(already, mode="atomic")
        assert all(r.duplicate is True for r in atomic_again)
        assert [r.seq for r in atomic_again] == [1, 2, 3, 4, 5]
        assert await store.last_seq() == 10


async def test_read_by_range_filter_and_time(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        root = store.settings.root
        await store.append_many([delta(i, session_id="a", run_id="ra") for i in range(5)])
        cutoff = datetime.now(UTC)
        await asyncio.sleep(0.05)
        await store.append_many([delta(i, session_id="b", run_id="rb") for i in range(5)])
        middle = await collect(store.read(3, until_seq=6))
        assert [seq for seq, _ in middle] == [3, 4, 5, 6]
        only_b = await collect(store.read(1, subject_filter=subjects.session_filter("b", root)))
        assert [seq for seq, _ in only_b] == [6, 7, 8, 9, 10]
        by_run = await collect(store.read(1, subject_filter=subjects.run_filter("ra", root)))
        assert len(by_run) == 5
        since = await collect(store.read(start_time=cutoff))
        assert [seq for seq, _ in since] == [6, 7, 8, 9, 10]
        assert await collect(store.read(11)) == []
        nothing = subjects.session_filter("nobody", root)
        assert await collect(store.read(1, subject_filter=nothing)) == []
        later = datetime.now(UTC) + timedelta(hours=1)
        assert await collect(store.read(start_time=later)) == []


async def test_subscribe_replays_then_follows(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        await store.append_many([delta(i) for i in range(3)])
        seen: list[int] = []

        async def follow() -> None:
            async for seq, _event in store.subscribe(2):
                seen.append(seq)
                if len(seen) == 4:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        await store.append(delta(10))
        await store.append(delta(11))
        await asyncio.wait_for(task, 10)
        assert seen == [2, 3, 4, 5]


async def test_last_on_subject_by_direct_get(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        first, second = delta(1), delta(2)
        await store.append_many([first, second, delta(3, run_id="elsewhere")])
        record = await store.last_on_subject(subject_for(second, store.settings.root))
        assert record is not None and record[0] == 2 and record[1] == second
        missing = subjects.run_out_subject("s1", "nope", store.settings.root)
        assert await store.last_on_subject(missing) is None


async def test_unroutable_or_refused_appends_raise_clear_errors(nats_url: str) -> None:
    async with open_store(nats_url, isolated_settings(max_msg_size=2048)) as store:
        with pytest.raises(AppendError, match="exceeds the 2048-byte"):
            await store.append(delta(1, size=4000))


async def test_kv_and_object_helpers(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        bucket = store.settings.kv_buckets[0]
        revision = await store.blobs.kv_put(bucket, "session.s1.lang", {"lang": "en"})
        entry = await store.blobs.kv_get(bucket, "session.s1.lang")
        assert entry is not None and entry.value == {"lang": "en"} and entry.revision == revision
        with pytest.raises(ConcurrencyError):
            await store.blobs.kv_create(bucket, "session.s1.lang", 1)
        with pytest.raises(ConcurrencyError):
            await store.blobs.kv_update(bucket, "session.s1.lang", 2, last_revision=revision + 5)
        await store.blobs.kv_update(bucket, "session.s1.lang", 3, last_revision=revision)
        await store.blobs.kv_delete(bucket, "session.s1.lang")
        assert await store.blobs.kv_get(bucket, "session.s1.lang") is None
        with pytest.raises(ValueError, match="invalid KV key"):
            await store.blobs.kv_put(bucket, "has space", 1)

        data = b"\x00artifact" * 50_000
        ref = await store.blobs.put_object("run-1/report.bin", data)
        assert ref.size == len(data) and len(ref.sha256) == 64
        assert await store.blobs.get_object(ref) == data
        tampered = StoredObject(ref.bucket, ref.name, ref.size, "0" * 64)
        with pytest.raises(ObjectIntegrityError):
            await store.blobs.get_object(tampered)


async def test_bad_bodies_come_out_as_undecodable(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        subject = subjects.run_out_subject("s1", "r1", store.settings.root)
        bodies = [
            b"not json at all",
            b"[1, 2, 3]",
            b'{"type": "no.such.type", "session_id": "s1", "data": {}}',
            b'{"type": "message.delta", "session_id": "s1", "data": {"text": "x", "index": 0}}',
            b'{"type": "message.delta", "session_id": "s1", "run_id": "r1", "data": {"text": "'
            + b"x" * 3000
            + b'", "index": 0}}',
            b"\xff\xfe\x00binary",
        ]
        for body in bodies:
            await store.js.publish(subject, body)
        await store.append(delta(7))
        reader_settings = isolated_settings(
            stream=store.settings.stream, root=store.settings.root, max_msg_size=2048
        )
        reader = EventStore(store.nc, reader_settings)
        records = await collect(reader.read(1))
        assert len(records) == 7
        reasons = [item.reason for _, item in records[:6] if isinstance(item, Undecodable)]
        assert len(reasons) == 6, records
        assert "not JSON" in reasons[0]
        assert "JSON list" in reasons[1]
        assert "unknown event type" in reasons[2]
        assert "run_id" in reasons[3]
        assert "exceeds" in reasons[4]
        last = records[6][1]
        assert not isinstance(last, Undecodable) and last.type == "message.delta"


@pytest.mark.parametrize("count", [1, 2, 3, 7])
async def test_small_bulk_appends_never_wait_for_a_timeout(nats_url: str, count: int) -> None:
    # With a 30 s request timeout, any wait on a missing acknowledgement would show up as
    # tens of seconds; a correct exchange takes milliseconds. The bound is deliberately loose.
    async with open_store(nats_url, isolated_settings(request_timeout=30.0)) as store:
        loop = asyncio.get_running_loop()
        for mode in ("fast", "atomic"):
            started = loop.time()
            results = await store.append_many([delta(i) for i in range(count)], mode=mode)
            assert all(r.ok for r in results)
            assert loop.time() - started < 10, f"{mode} append_many of {count} waited"


def test_text_no_read_model_can_store_is_rejected_at_decode() -> None:
    from eventstore.codec import decode

    base = '{"type": "message.delta", "session_id": "s1", "run_id": "r1", "data": {"text": "%s"}}'
    for text in ("\\u0000", "a\\ud800b", "\\udfff"):
        record = decode((base % text).encode(), seq=5, subject="jl.data.s1.r1.out")
        assert isinstance(record, Undecodable), text
        assert "surrogate" in record.reason
    fine = decode((base % "caf\\u00e9 \\ud83d\\ude00").encode(), seq=6, subject="x")
    assert not isinstance(fine, Undecodable)
    assert fine.data.text == "café 😀"  # type: ignore[attr-defined]
