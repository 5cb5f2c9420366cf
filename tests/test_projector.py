"""The projector end to end: real nats-server, real SQLite (and the other backends in the
read-model suite). Exactly-once under kill -9 (G4), rebuild equality, duplicates after
the dedupe window, big transcripts, garbage, blue/green, audit."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest
from projectkit import read_model, spawn_project, sqlite_url
from scenario import run_events, session_events, three_level_tree
from storekit import isolated_settings, open_store

from eventstore.provision import timer_root
from eventstore.store import EventStore
from projections.audit import audit_tree
from projections.projector import Projector, ProjectorSettings
from projections.service import prepare
from projections.verify import verify


async def test_projects_a_session_and_equals_a_rebuild(nats_url: str, tmp_path: Path) -> None:
    async with open_store(nats_url) as store:
        expected = {}
        events = []
        for run_id, text, event in session_events("s-main", runs=12):
            expected[run_id] = text
            events.append(event)
        assert all(r.ok for r in await store.append_many(events))
        async with (
            read_model(sqlite_url(tmp_path / "live.db")) as live,
            read_model(sqlite_url(tmp_path / "scratch.db")) as scratch,
        ):
            projector = await prepare(store, live)
            assert projector.checkpoint == len(events)
            turns = await live.transcript("s-main")
            assistant = {t.run_id: t for t in turns if t.role == "assistant"}
            assert {run_id: turn.content for run_id, turn in assistant.items()} == expected
            assert [t.seq_from for t in turns] == sorted(t.seq_from for t in turns)
            session = await live.get_session("s-main")
            assert session is not None and session.run_count == 12
            report = await verify(store, live, scratch)
            assert report.equal, report.differences[:3]
            assert report.rows["events"] == len(events)


async def test_wait_for_gives_read_your_writes(nats_url: str, tmp_path: Path) -> None:
    async with (
        open_store(nats_url) as store,
        read_model(sqlite_url(tmp_path / "rm.db")) as backend,
    ):
        projector = await prepare(store, backend, settings=ProjectorSettings(batch_wait=0.01))
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop))
        result = await store.append_many(run_events("s1", "r-ryw", text="hello there"))
        await projector.wait_for(await store.last_seq(), timeout=10)
        run = await backend.get_run("r-ryw")
        assert run is not None and run.status == "completed"
        assert result[-1].ok
        with pytest.raises(TimeoutError):
            await projector.wait_for(10_000, timeout=0.2)
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_ten_thousand_deltas_across_fifty_runs(nats_url: str, tmp_path: Path) -> None:
    async with open_store(nats_url) as store:
        expected = {}
        events = []
        for run_id, text, event in session_events("s-big", runs=50, chunks=200, min_words=20):
            expected[run_id] = text
            events.append(event)
        deltas = sum(1 for e in events if e.type == "message.delta")
        assert deltas >= 10_000
        assert all(r.ok for r in await store.append_many(events))
        async with read_model(sqlite_url(tmp_path / "rm.db")) as backend:
            await prepare(store, backend, settings=ProjectorSettings(batch_size=777))
            turns = [t for t in await backend.transcript("s-big") if t.role == "assistant"]
        assert len(turns) == 50
        assert {t.run_id: t.content for t in turns} == expected


async def test_garbage_becomes_rejected_rows_and_projection_goes_on(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_store(nats_url) as store:
        root = store.settings.root
        await store.append_many(run_events("s1", "r-before", text="before"))
        for body in (b"{not json", b'{"type": "nope"}', b"\x00\x01"):
            await store.js.publish(f"{root}.data.s1.r-x.out", body)
        await store.append_many(run_events("s1", "r-after", text="after"))
        async with read_model(sqlite_url(tmp_path / "rm.db")) as backend:
            projector = await prepare(store, backend)
            assert projector.checkpoint == await store.last_seq()
            rejected = await backend.list_rejected()
            assert len(rejected) == 3 and all(r.reason for r in rejected)
            after = await backend.get_run("r-after")
            assert after is not None and after.status == "completed"


@pytest.mark.parametrize("kind", ["sqlite", "duckdb"])
async def test_duplicate_id_after_the_dedupe_window_is_projected_once(
    nats_url: str, tmp_path: Path, kind: str
) -> None:
    settings = isolated_settings(duplicate_window_seconds=1.0)
    async with open_store(nats_url, settings) as store:
        events = run_events("s1", "r-dup", text="only once please")
        await store.append_many(events, mode="atomic")
        await asyncio.sleep(1.5)
        url = (
            sqlite_url(tmp_path / "rm.db")
            if kind == "sqlite"
            else f"duckdb:///{tmp_path / 'rm.duckdb'}"
        )
        async with read_model(url) as backend:
            projector = await prepare(store, backend)
            again = await store.append(events[2])  # a delta, long after the window
            assert again.ok and again.duplicate is False  # the log now holds it twice
            await store.append(events[3])  # another old one, in the same (next) batch
            await projector.catch_up()
            assert projector.checkpoint == again.seq + 1
            rows = await backend.run_events("r-dup")
            assert [r.id for r in rows].count(events[2].id) == 1
            turn = next(t for t in await backend.transcript("s1") if t.role == "assistant")
            assert turn.content == "only once please"


async def test_schema_bump_rebuilds_blue_green_while_old_answers(
    nats_url: str, tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path / "rm.db")
    async with open_store(nats_url) as store:
        await store.append_many([e for _, _, e in session_events("s1", runs=20)])
        async with read_model(url, schema_version=1) as old:
            await prepare(store, old)
            assert await old.active_version() == 1
            old_runs = await old.counts()
            seen_during_rebuild: list[int | None] = []

            def check_old(_batch: object) -> None:
                seen_during_rebuild.append(None)

            async with read_model(url, schema_version=2) as new:
                small_batches = ProjectorSettings(batch_size=50)
                projector = Projector(store, new, small_batches, on_batch=check_old)
                await projector.start()
                rebuild = asyncio.create_task(projector.catch_up())
                while not rebuild.done():
                    assert await old.active_version() == 1
                    # the old tables still answer
                    assert (await old.counts())["runs"] == old_runs["runs"]
                    await asyncio.sleep(0.01)
                await rebuild
                assert len(seen_during_rebuild) > 1
                await new.activate()
                await new.drop_version(1)
                assert await new.active_version() == 2
                assert (await new.counts())["runs"] == old_runs["runs"]


async def test_prepare_rebuilds_when_the_active_version_is_older(
    nats_url: str, tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path / "rm.db")
    async with open_store(nats_url) as store:
        await store.append_many(run_events("s1", "r1", text="hi"))
        async with read_model(url, schema_version=1) as v1:
            await prepare(store, v1)
            async with read_model(url, schema_version=2) as v2:
                projector = await prepare(store, v2)
                assert projector.checkpoint == await store.last_seq()
                assert await v2.active_version() == 2
                assert (await v2.get_run("r1")) is not None


async def test_audit_shows_a_three_level_tree(nats_url: str, tmp_path: Path) -> None:
    async with open_store(nats_url) as store:
        root_id, events = three_level_tree("s-tree")
        await store.append_many(events)
        async with read_model(sqlite_url(tmp_path / "rm.db")) as backend:
            await prepare(store, backend)
            root = await audit_tree(backend, root_id)
            walk = [(depth, node.run.run_id, node.run.status) for depth, node in root.walk()]
            assert walk[0] == (0, root_id, "completed")
            depths = [depth for depth, _, _ in walk]
            assert depths.count(1) == 2 and depths.count(2) == 1
            grandchild = next(node for depth, node in root.walk() if depth == 2)
            assert grandchild.run.parent_run_id is not None
            statuses = sorted(status for depth, _, status in walk if depth == 1)
            assert statuses == ["completed", "failed"]
            # the tree looks the same from any node in it
            again = await audit_tree(backend, grandchild.run.run_id)
            assert [n.run.run_id for _, n in again.walk()] == [rid for _, rid, _ in walk]
            group = await backend.get_group(events[2].group_id or "")
            assert group is not None and group.status == "completed" and group.failed == 1


async def _keep_appending(store: EventStore, stop: asyncio.Event, paused: asyncio.Event) -> int:
    n = 0
    while not stop.is_set():
        if paused.is_set():
            await asyncio.sleep(0.02)
            continue
        n += 1
        await store.append_many(run_events(f"s{n % 7}", f"r-flow-{n}", text=f"flowing {n} " * 3))
        # A run every ~30 ms keeps batches flowing at every kill; faster, each round's
        # verify (a rebuild from sequence 1) made this test quadratic in minutes.
        await asyncio.sleep(0.03)
    return n


async def test_kill_9_the_projector_twenty_times_while_events_flow(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    db_url = sqlite_url(tmp_path / "live.db")
    rng = random.Random(20261121)
    async with open_store(nats_url, settings) as store:
        stop, paused = asyncio.Event(), asyncio.Event()
        appender = asyncio.create_task(_keep_appending(store, stop, paused))
        async with read_model(db_url) as live:
            try:
                for round_no in range(20):
                    before = await live.checkpoint()
                    log_path = tmp_path / f"project{round_no}.log"
                    with log_path.open("w") as log_file:
                        projector = spawn_project(
                            settings, nats_url, db_url, capture_output=False, log_file=log_file
                        )
                    for _ in range(400):  # until it is applying batches (bounded: 20 s)
                        if await live.checkpoint() > before or projector.poll() is not None:
                            break
                        await asyncio.sleep(0.05)
                    assert projector.poll() is None, (
                        f"the projector process died by itself (exit {projector.returncode}):\n"
                        + log_path.read_text()[-3000:]
                    )
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    projector.send_signal(signal.SIGKILL)
                    projector.wait(timeout=10)
                    # the restart: a projector resumes from what the killed one committed
                    paused.set()
                    resumed = Projector(store, live)
                    await resumed.start()
                    await resumed.catch_up()
                    scratch_url = sqlite_url(tmp_path / f"scratch{round_no}.db")
                    async with read_model(scratch_url) as scratch:
                        report = await verify(store, live, scratch)
                    assert report.equal, (round_no, report.differences[:3])
                    paused.clear()
            finally:
                stop.set()
                appended = await asyncio.wait_for(appender, 30)
        assert appended > 20


async def test_lag_reaches_zero_while_a_held_timer_is_the_newest_message(
    nats_url: str, tmp_path: Path
) -> None:
    async with (
        open_store(nats_url) as store,
        read_model(sqlite_url(tmp_path / "rm.db")) as backend,
    ):
        await store.append_many(run_events("s1", "r-timer", text="hi"))
        # A parked run's timer: a stream message outside the log, never applied.
        await store.js.publish(f"{timer_root(store.settings)}.s1.r-timer.w0", b"{}")
        projector = await prepare(store, backend)
        assert projector.checkpoint < await store.last_seq()
        assert await projector.refresh_lag() == 0
