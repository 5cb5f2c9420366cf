"""Projection benchmark: events/s into each read-model backend, replay time, lag under load.

Run by hand, not a test::

    python ops/bench/projection.py [--events 500000] [--backends sqlite,duckdb,postgresql]
        [--replay-events 1000000] [--lag-seconds 20] [--rate 5000] [--timeout 1800]
        [--gc-threshold 50000]

Starts an embedded nats-server (loopback, temporary store), fills a stream with
realistic sessions from ``tests/scenario.py`` and projects it. Progress goes to stderr,
the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import itertools
import logging
import os
import platform
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from eventstore.embedded import EmbeddedNatsServer
from eventstore.envelope import Event
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from projections.backends import open_backend
from projections.contract import ReadModelBackend
from projections.projector import Projector, ProjectorSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from scenario import session_events

log = logging.getLogger("bench.projection")

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
FILL_BATCH = 20_000
LAG_TICK = 0.02
"""Seconds between two appends of the load generator."""
LAG_POLL = 0.005
"""Seconds between two looks at the projector's checkpoint."""
TARGET_EVENTS_PER_S = {"sqlite": 30_000, "duckdb": 50_000, "postgresql": 20_000}
TARGET_REPLAY_S_PER_MILLION = 40.0
TARGET_LAG_P99_MS = 250.0
CLI_GC_THRESHOLD = 50_000
"""``gc.set_threshold(50_000, 20, 100)``: what ``jetledger project`` runs with."""


class BenchmarkError(RuntimeError):
    """The benchmark could not measure what it set out to (a refused append, a stall)."""


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    events: int
    seconds: float
    value: str
    target: str
    passed: bool | None  # None: no target, or the row failed to run
    cpu: str = "-"
    """CPU per event of this process (the projector) and of its reaped children (the
    SQLite write process), in us."""


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far of this process and of its children that have ended."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime


def cpu_per_event(before: tuple[float, float], events: int) -> str:
    """Since ``before``; call it once the backend is closed (its write process reaped)."""
    own, children = (now - then for now, then in zip(cpu_seconds(), before, strict=True))
    return f"{own / events * 1e6:.1f} + {children / events * 1e6:.1f}" if events else "-"


def realistic_events(prefix: str) -> Iterator[Event]:
    """Endless sessions of runs: commands, deltas, tool calls, state and terminal events."""
    for n in itertools.count():
        for _run_id, _text, event in session_events(f"{prefix}-{n}", runs=8, chunks=4):
            yield event


def take(events: Iterator[Event], count: int) -> list[Event]:
    return list(itertools.islice(events, count))


async def append_checked(store: EventStore, batch: list[Event]) -> int:
    """Append ``batch``; return the last stream sequence; raise if any event was refused."""
    results = await store.append_many(batch)
    refused = [r for r in results if not r.ok]
    if refused:
        raise BenchmarkError(f"{len(refused)} of {len(batch)} events refused: {refused[0].error}")
    last = results[-1].seq
    return last if last is not None else await store.last_seq()


async def fill(store: EventStore, events: Iterator[Event], count: int) -> Row:
    """Append ``count`` events in batches of ``FILL_BATCH`` (built outside the clock)."""
    seconds = 0.0
    done = 0
    while done < count:
        batch = take(events, min(FILL_BATCH, count - done))
        started = time.perf_counter()
        await append_checked(store, batch)
        seconds += time.perf_counter() - started
        done += len(batch)
    print(f"filled {done:,} events in {seconds:.1f} s", file=sys.stderr)
    return Row("fill (append_many)", done, seconds, f"{done / seconds:,.0f}", "-", None)


def backend_url(name: str, workdir: Path) -> str:
    if name == "sqlite":
        return f"sqlite+aiosqlite:///{workdir}/bench-{time.monotonic_ns()}.db"
    if name == "duckdb":
        return f"duckdb:///{workdir}/bench-{time.monotonic_ns()}.duckdb"
    if name == "postgresql":
        return POSTGRES_URL
    raise BenchmarkError(f"unknown backend {name!r}: use sqlite, duckdb or postgresql")


async def discard(backend: ReadModelBackend) -> None:
    """Close ``backend``; drop its tables when they live in a shared database."""
    try:
        if backend.name == "postgresql":
            drop_namespace = getattr(backend, "drop_namespace", None)
            if drop_namespace is not None:
                await drop_namespace()
            else:
                await backend.drop_version(backend.schema_version)
    finally:
        await backend.close()


@contextlib.asynccontextmanager
async def fresh_projector(store: EventStore, name: str, workdir: Path) -> AsyncIterator[Projector]:
    namespace = f"bench{os.getpid()}_{time.monotonic_ns() % 10**9}"
    backend = open_backend(backend_url(name, workdir), namespace=namespace)
    projector = Projector(store, backend, ProjectorSettings(batch_size=2000))
    try:
        await projector.start()
        yield projector
    finally:
        await discard(backend)


async def catch_up_rate(store: EventStore, name: str, workdir: Path, until_seq: int) -> Row:
    async with fresh_projector(store, name, workdir) as projector:
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        await projector.catch_up(until_seq)
        seconds = time.perf_counter() - started
        events = projector.checkpoint
    cpu = cpu_per_event(cpu_before, events)
    rate = events / seconds
    target = TARGET_EVENTS_PER_S[name]
    print(f"{name}: {events:,} events in {seconds:.1f} s ({rate:,.0f} ev/s)", file=sys.stderr)
    return Row(name, events, seconds, f"{rate:,.0f}", f">= {target:,} ev/s", rate >= target, cpu)


async def replay(store: EventStore, workdir: Path, count: int, events: Iterator[Event]) -> Row:
    missing = count - await store.last_seq()
    if missing > 0:
        print(f"replay: appending {missing:,} more events first", file=sys.stderr)
        await fill(store, events, missing)
    async with fresh_projector(store, "sqlite", workdir) as projector:
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        await projector.catch_up(count)
        seconds = time.perf_counter() - started
    cpu = cpu_per_event(cpu_before, count)
    # the target is for 1M events; a shorter replay is held to the same rate
    limit = TARGET_REPLAY_S_PER_MILLION * count / 1_000_000
    print(f"replay: {count:,} events in {seconds:.1f} s", file=sys.stderr)
    return Row(
        "replay sqlite",
        count,
        seconds,
        f"{count / seconds:,.0f}",
        f"<= {limit:.0f} s",
        seconds <= limit,
        cpu,
    )


async def load(
    store: EventStore, batches: list[list[Event]], appended: list[tuple[float, int]]
) -> None:
    """Append one batch every ``LAG_TICK`` seconds; record (completion time, last seq)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for tick, batch in enumerate(batches):
        await asyncio.sleep(max(0.0, start + tick * LAG_TICK - loop.time()))
        last_seq = await append_checked(store, batch)
        appended.append((loop.time(), last_seq))


async def watch(
    projector: Projector,
    appended: list[tuple[float, int]],
    lags: list[float],
    tasks: tuple[asyncio.Task[None], asyncio.Task[None]],
) -> None:
    """Poll the checkpoint; a batch's lag is when the checkpoint reached its last seq."""
    loop = asyncio.get_running_loop()
    loader = tasks[0]
    seen = 0
    while not (loader.done() and seen == len(appended)):
        now = loop.time()
        while seen < len(appended) and projector.checkpoint >= appended[seen][1]:
            lags.append(now - appended[seen][0])
            seen += 1
        if any(task.done() and task.exception() is not None for task in tasks):
            return  # the caller awaits both and so re-raises
        await asyncio.sleep(LAG_POLL)


async def lag_under_load(
    store: EventStore, workdir: Path, seconds: float, rate: int, events: Iterator[Event]
) -> Row:
    per_batch = max(1, round(rate * LAG_TICK))
    batches = [take(events, per_batch) for _ in range(round(seconds / LAG_TICK))]
    appended: list[tuple[float, int]] = []
    lags: list[float] = []
    async with fresh_projector(store, "sqlite", workdir) as projector:
        projector.start_seq = await store.last_seq() + 1  # follow the live tail only
        stop = asyncio.Event()
        runner = asyncio.create_task(projector.run(stop))
        started = time.perf_counter()
        loader = asyncio.create_task(load(store, batches, appended))
        try:
            async with asyncio.timeout(seconds + 120):
                await watch(projector, appended, lags, (loader, runner))
            await loader  # re-raises a failed append
        finally:
            stop.set()
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            await runner
        elapsed = time.perf_counter() - started
    count = sum(len(b) for b in batches)
    ms = sorted(lag * 1000 for lag in lags)
    p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"lag: {len(ms)} batches, p50 {p50:.0f} ms, p99 {p99:.0f} ms", file=sys.stderr)
    return Row(
        f"lag sqlite @ {rate:,}/s",
        count,
        elapsed,
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        f"p99 < {TARGET_LAG_P99_MS:.0f} ms",
        p99 < TARGET_LAG_P99_MS,
    )


def failed_row(name: str, exc: BaseException) -> Row:
    return Row(name, 0, 0.0, f"ERROR {type(exc).__name__}", "-", None)


def verdict(row: Row) -> str:
    return {True: "PASS", False: "MISS", None: "-"}[row.passed]


def print_table(rows: list[Row], versions: str) -> None:
    print(
        f"{'row':<22} {'events':>10} {'seconds':>8}  {'events/s':<26} {'target':<18} "
        f"{'result':<6}  cpu us/ev (projector + write process)"
    )
    for row in rows:
        print(
            f"{row.name:<22} {row.events:>10,} {row.seconds:>8.1f}  {row.value:<26} "
            f"{row.target:<18} {verdict(row):<6}  {row.cpu}"
        )
    print(versions)
    print(f"machine: {os.cpu_count()} cores, shared by nats-server, the projector and PostgreSQL")


async def bench(args: argparse.Namespace, workdir: Path) -> None:
    settings = StoreSettings(
        stream="BENCHP", root="bp", kv_buckets=("kvbp",), object_bucket="objbp"
    )
    async with EmbeddedNatsServer(store_dir=workdir / "nats") as srv:
        store = await EventStore.open(srv.url, settings)
        try:
            events = realistic_events("bench")
            rows = [await fill(store, events, args.events)]
            until_seq = await store.last_seq()
            for name in args.backends.split(","):
                try:
                    rows.append(await catch_up_rate(store, name, workdir, until_seq))
                except Exception as exc:  # one broken backend must not hide the others
                    log.exception("%s: projecting failed", name)
                    rows.append(failed_row(name, exc))
            if args.replay_events > 0:
                rows.append(await replay(store, workdir, args.replay_events, events))
            if args.lag_seconds > 0:
                rows.append(
                    await lag_under_load(store, workdir, args.lag_seconds, args.rate, events)
                )
        finally:
            await store.close()
        versions = (
            f"python {platform.python_version()}, nats-server {'.'.join(map(str, srv.version))}, "
            f"nats-py {importlib.metadata.version('nats-py')}, sqlite {sqlite3.sqlite_version}, "
            f"duckdb {duckdb.__version__}, batch_size 2000, gc threshold {gc.get_threshold()[0]}"
        )
    print_table(rows, versions)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--backends", default="sqlite,duckdb,postgresql")
    parser.add_argument("--replay-events", type=int, default=1_000_000)
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=CLI_GC_THRESHOLD,
        help="young-generation GC threshold; the default is what the jetledger CLI commands "
        "(project, replay, verify, export) set; 0 keeps the interpreter's",
    )
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    if args.gc_threshold > 0:
        # As gateway.cli_readmodel does for the commands that project: the projector
        # allocates many short-lived objects per event (measured ~30% more events/s).
        gc.set_threshold(args.gc_threshold, 20, 100)
    with tempfile.TemporaryDirectory(prefix="jl-bench-proj-") as tmp:
        async with asyncio.timeout(args.timeout):
            await bench(args, Path(tmp))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
