"""The read-model commands of the CLI end to end: ``jetledger project|replay|verify|runs|
audit|export`` run as real subprocesses against a real nats-server, on events the test
appends to a stream of its own."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from helpers import free_port
from projectkit import cli, read_model, spawn_project, sqlite_url
from scenario import run_events, session_events, three_level_tree
from storekit import isolated_settings, open_store

from eventstore.envelope import Event
from eventstore.store import EventStore


async def append(store: EventStore, events: list[Event]) -> int:
    results = await store.append_many(events)
    assert all(r.ok for r in results)
    return results[-1].seq


def run_ids(events: list[Event]) -> list[str]:
    return list(dict.fromkeys(e.run_id for e in events if e.run_id))


def assert_clean_failure(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0, result
    assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


async def test_replay_until_seq_stops_exactly_there(nats_url: str, tmp_path: Path) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        first = await append(store, run_events("s1", "r-early", text="early answer"))
        await append(store, run_events("s1", "r-late", text="late answer"))
        until = first + 1  # the late run's command.ask, not its end
        url = sqlite_url(tmp_path / "r.db")
        result = await cli(
            settings, "replay", "--nats-url", nats_url, "--to", url, "--until-seq", str(until)
        )
        assert result.returncode == 0, result.stderr
        assert f"up to sequence {until}" in result.stderr
        async with read_model(url) as backend:
            assert await backend.checkpoint() == until
            assert await backend.active_version() == 1
            early = await backend.get_run("r-early")
            assert early is not None and early.status == "completed"
            late = await backend.get_run("r-late")
            assert late is not None and late.status != "completed"
            assert [r.seq for r in await backend.run_events("r-late")] == [until]


async def test_replay_until_time_stops_before_the_second_burst(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        first_burst = run_events("s1", "r-first", text="first burst") + run_events(
            "s1", "r-first-b", text="also first"
        )
        last_of_first = await append(store, first_burst)
        # --until-time has whole-second resolution: put the moment on a second boundary
        moment = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
        await asyncio.sleep((moment - datetime.now(UTC)).total_seconds() + 0.1)
        await append(store, run_events("s1", "r-second", text="second burst"))
        url = sqlite_url(tmp_path / "r.db")
        result = await cli(
            settings,
            "replay",
            "--nats-url",
            nats_url,
            "--to",
            url,
            "--until-time",
            moment.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        assert result.returncode == 0, result.stderr
        async with read_model(url) as backend:
            assert await backend.checkpoint() == last_of_first
            assert await backend.active_version() == 1
            assert await backend.get_run("r-first-b") is not None
            assert await backend.get_run("r-second") is None


async def test_replay_from_seq_on_a_fresh_target_starts_there(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        skipped = await append(store, run_events("s1", "r-skipped", text="never replayed"))
        last = await append(store, run_events("s1", "r-kept", text="replayed"))
        start = skipped + 1
        path = tmp_path / "r.db"
        result = await cli(
            settings,
            "replay",
            "--nats-url",
            nats_url,
            "--to",
            sqlite_url(path),
            "--from-seq",
            str(start),
        )
        assert result.returncode == 0, result.stderr
        async with read_model(sqlite_url(path)) as backend:
            assert await backend.checkpoint() == last
            assert await backend.active_version() == 1
            assert await backend.get_run("r-skipped") is None
            kept = await backend.get_run("r-kept")
            assert kept is not None and kept.status == "completed"
        with sqlite3.connect(path) as conn:
            low, high, count = conn.execute(
                "SELECT min(seq), max(seq), count(*) FROM jl_v1_events"
            ).fetchone()
        assert (low, high, count) == (start, last, last - start + 1)


async def test_verify_is_equal_then_names_a_corrupted_table(nats_url: str, tmp_path: Path) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        events = [event for _, _, event in session_events("s-verify", runs=6)]
        await append(store, events)
        path = tmp_path / "live.db"
        url = sqlite_url(path)
        replayed = await cli(settings, "replay", "--nats-url", nats_url, "--to", url)
        assert replayed.returncode == 0, replayed.stderr
        good = await cli(settings, "verify", "--nats-url", nats_url, "--db", url)
        assert good.returncode == 0, good.stderr
        assert "equal" in good.stderr and "differences" not in good.stderr
        victim = run_ids(events)[2]
        with sqlite3.connect(path) as conn:
            changed = conn.execute(
                "UPDATE jl_v1_runs SET status = 'failed' WHERE run_id = ? AND status = 'completed'",
                (victim,),
            ).rowcount
        assert changed == 1
        bad = await cli(settings, "verify", "--nats-url", nats_url, "--db", url)
        assert bad.returncode == 1, bad.stderr
        assert "1 differences" in bad.stderr
        assert f"runs ('{victim}',)" in bad.stderr
        assert "Traceback" not in bad.stderr


async def test_runs_lists_the_completed_runs(nats_url: str, tmp_path: Path) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        completed = ["r-ok-1", "r-ok-2", "r-ok-3"]
        for run_id in completed:
            await append(store, run_events("s-runs", run_id, text=f"done {run_id}"))
        await append(store, run_events("s-runs", "r-broken", text="this fails", fail=True))
        url = sqlite_url(tmp_path / "r.db")
        assert (await cli(settings, "replay", "--nats-url", nats_url, "--to", url)).returncode == 0
        listed = await cli(settings, "runs", "--db", url, "--status", "completed")
        assert listed.returncode == 0, listed.stderr
        for run_id in completed:
            assert run_id in listed.stdout
        assert "r-broken" not in listed.stdout
        failed = await cli(settings, "runs", "--db", url, "--status", "failed")
        assert failed.returncode == 0, failed.stderr
        assert "r-broken" in failed.stdout and "r-ok-1" not in failed.stdout


async def test_audit_prints_the_whole_tree_and_rejects_unknown_runs(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        root, events = three_level_tree("s-tree")
        await append(store, events)
        ids = run_ids(events)
        assert len(ids) == 4 and ids[0] == root
        url = sqlite_url(tmp_path / "r.db")
        assert (await cli(settings, "replay", "--nats-url", nats_url, "--to", url)).returncode == 0
        grandchild = ids[-1]
        shown = await cli(settings, "audit", grandchild, "--db", url)
        assert shown.returncode == 0, shown.stderr
        for run_id in ids:
            assert run_id in shown.stdout, (run_id, shown.stdout)
        assert shown.stdout.index(root) < shown.stdout.index(grandchild)
        missing = await cli(settings, "audit", "no-such-run", "--db", url)
        assert missing.returncode == 1
        assert_clean_failure(missing, "not in the read model")


async def test_export_jsonl_writes_one_line_per_stored_message(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        events = run_events("s1", "r-x1", text="exported") + run_events("s1", "r-x2", text="too")
        await append(store, events)
        await store.js.publish(f"{settings.root}.data.s1.r-x.out", b"{not json")
        last = await store.last_seq()
        out = tmp_path / "f.jsonl"
        result = await cli(
            settings, "export", "--nats-url", nats_url, "--format", "jsonl", "--out", str(out)
        )
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert [line["seq"] for line in lines] == list(range(1, last + 1))
        assert all(line["subject"].startswith(f"{settings.root}.") for line in lines)
        decoded = [line for line in lines if "event" in line]
        assert [line["event"]["id"] for line in decoded] == [e.id for e in events]
        assert [line["event"]["type"] for line in decoded] == [e.type for e in events]
        assert "undecodable" in lines[-1] and lines[-1]["undecodable"]


async def test_export_duckdb_and_parquet_hold_every_event(nats_url: str, tmp_path: Path) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        events = [event for _, _, event in session_events("s-export", runs=4)]
        last = await append(store, events)
        duck_path = tmp_path / "export.duckdb"
        parquet_path = tmp_path / "events.parquet"
        exports = await asyncio.gather(
            *(
                cli(settings, "export", "--nats-url", nats_url, "--format", kind, "--out", str(out))
                for kind, out in (("duckdb", duck_path), ("parquet", parquet_path))
            )
        )
        for result in exports:
            assert result.returncode == 0, result.stderr
        with duckdb.connect(str(duck_path), read_only=True) as conn:
            row = conn.execute("SELECT count(*), min(seq), max(seq) FROM jl_v1_events").fetchone()
            assert row == (len(events), 1, last)
        with duckdb.connect() as conn:
            row = conn.execute(
                "SELECT count(*), min(seq), max(seq) FROM read_parquet(?)", [str(parquet_path)]
            ).fetchone()
            assert row == (len(events), 1, last)


async def test_project_applies_everything_and_stops_on_sigint(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    url = sqlite_url(tmp_path / "live.db")
    async with open_store(nats_url, settings) as store:
        await append(store, run_events("s1", "r-before", text="already there"))
        process = spawn_project(settings, nats_url, url)
        async with read_model(url) as backend:
            try:

                async def applied(seq: int) -> bool:
                    for _ in range(300):  # bounded: 15 s
                        if await backend.checkpoint() >= seq or process.poll() is not None:
                            break
                        await asyncio.sleep(0.05)
                    return await backend.checkpoint() >= seq

                assert await applied(await store.last_seq()), "the catch-up never finished"
                # it follows the log: events appended now are applied too
                last = await append(store, run_events("s1", "r-after", text="arrived later"))
                assert await applied(last), "the projector did not follow the log"
                assert await backend.checkpoint() == last
                after = await backend.get_run("r-after")
                assert after is not None and after.status == "completed"
                assert process.poll() is None
                process.send_signal(signal.SIGINT)
                _, stderr = await asyncio.to_thread(process.communicate, timeout=15)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
        assert process.returncode == 0, stderr
        assert "projector stopped" in stderr
        assert "Traceback" not in stderr


async def test_replay_to_an_unknown_url_fails_readably(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        await append(store, run_events("s1", "r-1", text="anything"))
        result = await cli(settings, "replay", "--nats-url", nats_url, "--to", "nonsense://x")
        assert_clean_failure(result, "unknown read-model database URL")


async def test_export_until_seq_bounds_the_export_even_at_zero(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        await append(store, run_events("s1", "r-1", text="some answer"))
        for until, expected in ((3, [1, 2, 3]), (0, [])):
            out = tmp_path / f"until{until}.jsonl"
            result = await cli(
                settings,
                "export",
                "--nats-url",
                nats_url,
                "--out",
                str(out),
                "--until-seq",
                str(until),
            )
            assert result.returncode == 0, result.stderr
            lines = out.read_text(encoding="utf-8").splitlines()
            assert [json.loads(line)["seq"] for line in lines] == expected


async def test_an_unreachable_server_fails_readably(tmp_path: Path) -> None:
    dead_url = f"nats://127.0.0.1:{free_port()}"  # a port nobody listens on
    settings = isolated_settings()
    replayed = await cli(
        settings, "replay", "--nats-url", dead_url, "--to", sqlite_url(tmp_path / "r.db")
    )
    assert replayed.returncode == 1
    assert_clean_failure(replayed, "cannot reach NATS")
    verified = await cli(
        settings, "verify", "--nats-url", dead_url, "--db", sqlite_url(tmp_path / "r.db")
    )
    assert verified.returncode == 1
    assert_clean_failure(verified, "cannot reach NATS")
