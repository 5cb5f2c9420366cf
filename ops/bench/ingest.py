"""Ingest throughput of the event store against plain nats-py and redis-server ``XADD``.

A benchmark run by hand, not a test: one embedded nats-server (file storage) and one
private redis-server on loopback, ~300-byte events, the median of ``--repeats`` runs::

    python ops/bench/ingest.py [--events 100000] [--single-events 5000] [--repeats 3]

Rows: (a) ``EventStore.append`` awaited one at a time, (b) ``append_many`` in its
default mode, (b2) ``append_many(mode="atomic")``, (c) nats-py ``js.publish`` awaited one
at a time, (d) redis-py ``XADD`` pipelined in batches of 500, and (d0), (d) again with
the bodies encoded before the clock starts, for reference. The events are built before
the clock starts; encoding them to JSON is part of every timed row except (d0). Every
run starts from an empty stream (or key) and is checked to have stored exactly what it
sent; a mismatch aborts with :class:`BenchmarkError`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nats
import redis
from nats.js import JetStreamContext

from eventstore.catalog import MessageDelta, MessageDeltaData
from eventstore.embedded import EmbeddedNatsServer
from eventstore.envelope import Event
from eventstore.provision import FAST_INGEST_VERSION
from eventstore.settings import StoreSettings
from eventstore.store import BatchMode, EventStore

EVENT_BYTES = 300
REDIS_BATCH = 500
REDIS_BINARY = "/usr/bin/redis-server"
REDIS_STARTUP_SECONDS = 10.0
TARGET_EVENTS_PER_SECOND = 60_000
TARGET_RATIO_TO_REDIS = 1.2


class BenchmarkError(Exception):
    """A run stored a different number of events than it sent, or a server misbehaved."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: what was timed, on how many events, and each repeat's time."""

    key: str
    label: str
    events: int
    seconds: list[float]

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.events / self.median_seconds

    @property
    def rate_range(self) -> tuple[float, float]:
        return self.events / max(self.seconds), self.events / min(self.seconds)


# -- events -----------------------------------------------------------------------------


def build_events(count: int) -> list[Event]:
    """``count`` message deltas whose JSON bodies are about ``EVENT_BYTES`` long."""
    probe = MessageDelta(
        session_id="s1", run_id="r1", data=MessageDeltaData(text="", index=max(0, count - 1))
    )
    text = "x" * max(1, EVENT_BYTES - len(probe.to_json()))
    return [
        MessageDelta(session_id="s1", run_id="r1", data=MessageDeltaData(text=text, index=index))
        for index in range(count)
    ]


# -- NATS runs (a), (b), (b2), (c) ---------------------------------------------------------


def store_settings(name: str) -> StoreSettings:
    # The buckets are shared by every run; only the stream has to start empty.
    return StoreSettings(
        stream=name.upper(), root=name, kv_buckets=("bench_kv",), object_bucket="bench_obj"
    )


async def stored_count(js: JetStreamContext, stream: str) -> int:
    info = await js.stream_info(stream)
    return int(info.state.messages)


async def check_and_drop(js: JetStreamContext, stream: str, sent: int) -> None:
    stored = await stored_count(js, stream)
    if stored != sent:
        raise BenchmarkError(f"stream {stream} holds {stored} messages after sending {sent}")
    await js.delete_stream(stream)  # keeps the store directory from growing run after run


async def time_store_run(
    url: str, name: str, events: Sequence[Event], ingest: Callable[[EventStore], Awaitable[None]]
) -> float:
    store = await EventStore.open(url, store_settings(name))
    try:
        started = time.perf_counter()
        await ingest(store)
        elapsed = time.perf_counter() - started
        await check_and_drop(store.js, store.settings.stream, len(events))
    finally:
        await store.close()
    return elapsed


async def run_single_appends(url: str, name: str, events: Sequence[Event]) -> float:
    async def ingest(store: EventStore) -> None:
        for event in events:
            await store.append(event)

    # (a) is checked too: a duplicate answer would also return without an error.
    return await time_store_run(url, name, events, ingest)


async def run_append_many(url: str, name: str, events: Sequence[Event], mode: BatchMode) -> float:
    async def ingest(store: EventStore) -> None:
        results = await store.append_many(events, mode=mode)
        failed = [result for result in results if not result.ok]
        if failed:
            raise BenchmarkError(f"{len(failed)} events not stored, first: {failed[0].error}")

    return await time_store_run(url, name, events, ingest)


async def run_plain_publish(url: str, name: str, events: Sequence[Event]) -> float:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = name.upper()
        subject = f"{name}.data.s1.r1.out"  # the subject the event store would use
        await js.add_stream(name=stream, subjects=[f"{name}.>"], storage="file")
        started = time.perf_counter()
        for event in events:
            await js.publish(subject, event.to_json(), headers={"Nats-Msg-Id": event.id})
        elapsed = time.perf_counter() - started
        await check_and_drop(js, stream, len(events))
    finally:
        await nc.close()
    return elapsed


# -- redis (d) --------------------------------------------------------------------------


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def redis_server(work_dir: Path) -> Iterator[redis.Redis]:
    """A private redis-server on a free loopback port, killed on the way out whatever happens."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    args = [REDIS_BINARY, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(work_dir)]  # fmt: skip
    with (work_dir / "redis.log").open("wb") as log:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30.0)
    try:
        wait_for_redis(client, process)
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


def wait_for_redis(client: redis.Redis, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + REDIS_STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"redis-server exited with code {process.returncode}")
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                return
        time.sleep(0.05)
    raise BenchmarkError(f"redis-server did not answer PING within {REDIS_STARTUP_SECONDS}s")


def run_redis_xadd(client: redis.Redis, key: str, bodies: Iterable[bytes], count: int) -> float:
    """XADD ``bodies`` in pipelines of ``REDIS_BATCH``; a lazy ``bodies`` encodes in the clock."""
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for index, body in enumerate(bodies, 1):
        pipe.xadd(key, {"data": body})
        if index % REDIS_BATCH == 0:
            pipe.execute()
    pipe.execute()
    elapsed = time.perf_counter() - started
    stored = int(client.xlen(key))
    if stored != count:
        raise BenchmarkError(f"redis key {key} holds {stored} entries after sending {count}")
    client.delete(key)
    return elapsed


# -- orchestration ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    events: int
    single_events: int
    repeats: int
    timeout: float


def schedule(
    url: str,
    repeat: int,
    *,
    events: Sequence[Event],
    bodies: Sequence[bytes],
    single_events: int,
    redis_client: redis.Redis,
) -> list[Callable[[], Awaitable[float]]]:
    """One run of each row, in row order, each on a stream (or key) of its own."""
    single = events[:single_events]
    encoded_in_clock = (event.to_json() for event in events)
    return [
        lambda: run_single_appends(url, f"ba{repeat}", single),
        lambda: run_append_many(url, f"bb{repeat}", events, "auto"),
        lambda: run_append_many(url, f"bbb{repeat}", events, "atomic"),
        lambda: run_plain_publish(url, f"bc{repeat}", single),
        lambda: asyncio.to_thread(
            run_redis_xadd, redis_client, f"bd{repeat}", encoded_in_clock, len(events)
        ),
        lambda: asyncio.to_thread(
            run_redis_xadd, redis_client, f"bdd{repeat}", bodies, len(bodies)
        ),
    ]


async def run_all(
    plan: Plan, nats_dir: Path, redis_client: redis.Redis
) -> tuple[list[Row], dict[str, str]]:
    events = build_events(plan.events)
    bodies = [event.to_json() for event in events]  # only for (d0)
    sizes = [len(body) for body in bodies]
    async with EmbeddedNatsServer(store_dir=nats_dir) as server:
        fast = server.version >= FAST_INGEST_VERSION
        auto_label = "auto: fast ingest" if fast else "auto: atomic, server < 2.14"
        rows = [
            Row("a", "EventStore.append, awaited one by one", plan.single_events, []),
            Row("b", f"EventStore.append_many ({auto_label})", len(events), []),
            Row("b2", "EventStore.append_many (mode=atomic)", len(events), []),
            Row("c", "nats-py js.publish, awaited one by one", plan.single_events, []),
            Row("d", f"redis XADD, pipelined by {REDIS_BATCH}", len(events), []),
            Row("d0", "(d) with bodies encoded before the clock", len(events), []),
        ]
        # Repeat-major order spreads a noisy neighbour over every row, not just one.
        for repeat in range(1, plan.repeats + 1):
            runs = schedule(
                server.url,
                repeat,
                events=events,
                bodies=bodies,
                single_events=plan.single_events,
                redis_client=redis_client,
            )
            for row, run in zip(rows, runs, strict=True):
                async with asyncio.timeout(plan.timeout):
                    row.seconds.append(await run())
                print(f"  repeat {repeat}: ({row.key}) {row.seconds[-1]:.3f}s", file=sys.stderr)
        versions = {
            "nats-server": ".".join(map(str, server.version)),
            "nats-py": importlib.metadata.version("nats-py"),
            "redis-server": str(redis_client.info("server")["redis_version"]),
            "redis-py": importlib.metadata.version("redis"),
            "python": platform.python_version(),
            "hiredis": "installed" if importlib.util.find_spec("hiredis") else "not installed",
            "body bytes": f"{min(sizes)}-{max(sizes)}",
        }
    return rows, versions


def report(rows: Sequence[Row], versions: dict[str, str], repeats: int) -> str:
    redis_rate = next(row for row in rows if row.key == "d").rate
    lines = [
        f"{'row':<5}{'what':<50}{'events':>9}{'median s':>10}{'median ev/s':>13}"
        f"{'min-max ev/s':>18}{'vs (d)':>8}",
    ]
    for row in rows:
        low, high = row.rate_range
        lines.append(
            f"({row.key}){'':<{3 - len(row.key)}}{row.label:<50}{row.events:>9,}"
            f"{row.median_seconds:>10.3f}{row.rate:>13,.0f}"
            f"{f'{low:,.0f}-{high:,.0f}':>18}{row.rate / redis_rate:>7.2f}x"
        )
    lines.append(
        f"medians of {repeats} runs; " + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    batch = next(row for row in rows if row.key == "b")
    passed = (
        batch.rate >= TARGET_EVENTS_PER_SECOND and batch.rate >= TARGET_RATIO_TO_REDIS * redis_rate
    )
    lines.append(
        f"target: (b) >= {TARGET_EVENTS_PER_SECOND:,} ev/s and >= {TARGET_RATIO_TO_REDIS}x (d): "
        f"{'PASS' if passed else 'MISS'} ({batch.rate:,.0f} ev/s, {batch.rate / redis_rate:.2f}x)"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="events for (b), (b2), (d)")
    parser.add_argument(
        "--single-events", type=int, default=5_000, help="events for (a) and (c), one at a time"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per run")
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeats < 1 or not 1 <= args.single_events <= args.events:
        parser.error("need --events >= 1, --repeats >= 1 and 1 <= --single-events <= --events")
    return Plan(args.events, args.single_events, args.repeats, args.timeout)


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="jetledger-bench-") as scratch,
        redis_server(Path(scratch) / "redis") as redis_client,
    ):
        rows, versions = asyncio.run(run_all(plan, Path(scratch) / "nats", redis_client))
    print(report(rows, versions, plan.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
