"""Dispatch latency and throughput of echo runs: jetledger against by-framework 0.2.1.

A benchmark run by hand, not a test (issue 3, "Benchmark (by hand)")::

    python ops/bench/dispatch.py [--rtt-runs 2000] [--throughput-runs 20000]

Each system runs the same two workloads through two echo worker processes and its own
``GatewayClient``: (a) round trip, sequential runs, time from just before
``send_message`` to the moment the client sees the run's first streamed chunk
(``message.delta`` / ``answerDelta``), each run waited to its end before the next is
sent; (b) throughput, runs of 3 chunks sent with up to ``SEND_WINDOW`` sends in flight
over ``THROUGHPUT_SESSIONS`` sessions, runs/s from the first send to the last end of
run the client sees. jetledger runs first on an embedded nats-server; by-framework runs
second, in its own Python 3.12 venv (``byframework_side.py``), on a private
redis-server. Every server and worker is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from ingest import REDIS_BINARY, free_loopback_port, wait_for_redis

from eventstore.codec import decode
from eventstore.embedded import EmbeddedNatsServer
from eventstore.envelope import Event
from eventstore.routing import TERMINAL_TYPES
from eventstore.settings import StoreSettings
from gateway.client import GatewayClient

SETTINGS = StoreSettings(stream="BENCHD", root="bd", kv_buckets=("kvbd",), object_bucket="objbd")
WORKER_IDS = ("w1", "w2")
WORKER_ENV = {
    "JETLEDGER_WORKER_CHUNK_WINDOW": "0.0",  # stream each chunk at once, as by-framework does
    "JETLEDGER_WORKER_MAX_CONCURRENCY": "64",  # by-framework's side runs 64 per worker too
    "JETLEDGER_WORKER_FETCH_BATCH": "64",
    "JETLEDGER_WORKER_DRAIN_TIMEOUT": "5",
}
AGENT_TYPE = "echo"
ECHO_WORKER = "runners.examples.echo:EchoWorker"
CHUNKS = 3
SEND_WINDOW = 200
THROUGHPUT_SESSIONS = 100
RUN_TIMEOUT = 10.0
WORKER_READY_SECONDS = 30.0
BYFW_SIDE = Path(__file__).with_name("byframework_side.py")
TARGET_P50_MS = 1.5
TARGET_P99_MS = 5.0
TARGET_THROUGHPUT_RATIO = 10.0


class BenchmarkError(Exception):
    """A worker did not start, a run failed or did not end in time, or a side broke."""


@dataclass(frozen=True, slots=True)
class SideResult:
    """One system's figures: round-trip latencies (seconds) and one throughput run."""

    rtt_seconds: list[float]
    throughput_runs: int
    throughput_seconds: float
    versions: dict[str, str]

    def rtt_ms(self, quantile: float) -> float:
        ordered = sorted(self.rtt_seconds)
        rank = max(1, math.ceil(quantile * len(ordered)))  # nearest rank
        return ordered[rank - 1] * 1000

    @property
    def runs_per_second(self) -> float:
        return self.throughput_runs / self.throughput_seconds


# -- jetledger: the client side ---------------------------------------------------------


@dataclass(slots=True)
class RunWatch:
    """When the client saw each run's first ``message.delta`` and its terminal event."""

    first_delta: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    expected: int = 0
    all_ended: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, event: Event, seen_at: float) -> None:
        run_id = event.run_id or ""
        if event.type == "message.delta":
            self.first_delta.setdefault(run_id, seen_at)
        elif event.type in TERMINAL_TYPES:
            self.ended.setdefault(run_id, seen_at)
            if self.expected and len(self.ended) >= self.expected:
                self.all_ended.set()
            if event.type != "run.completed":
                self.failed[run_id] = event.type
            waiter = self.waiters.pop(run_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


async def next_seq(client: GatewayClient) -> int:
    info = await client.store.js.stream_info(SETTINGS.stream)
    return int(info.state.last_seq) + 1


async def follow_session(client: GatewayClient, session_id: str, watch: RunWatch) -> Any:
    """A core subscription on the session's subjects on the client's own connection.

    Not ``client.stream()``: its follow mode reads in bulk and, once caught up, polls
    every 20 ms (``read_bulk(poll_interval=0.02)``), which would put a 0-20 ms poll
    delay into every figure. A core subscriber gets each event as the server routes
    it; the sends are acknowledged by JetStream, so the run's events are in the log.
    """

    async def on_message(message: Any) -> None:
        seen_at = time.perf_counter()
        event = decode(message.data, subject=message.subject, headers=message.headers)
        if isinstance(event, Event):
            watch.note(event, seen_at)

    subscription = await client.store.nc.subscribe(
        f"{SETTINGS.root}.data.{session_id}.>", cb=on_message
    )
    await client.store.nc.flush()  # the subscription is in place before the first send
    return subscription


async def follow_run_ends(client: GatewayClient, from_seq: int, watch: RunWatch) -> None:
    records = client.store.records(
        from_seq, follow=True, subject_filter=f"{SETTINGS.root}.data.*.*.end"
    )
    async with contextlib.aclosing(records):
        async for record in records:
            if isinstance(record.item, Event):
                watch.note(record.item, time.perf_counter())


async def jetledger_round_trips(client: GatewayClient, runs: int, warmup: int) -> list[float]:
    watch = RunWatch()
    subscription = await follow_session(client, "rtt", watch)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    try:
        for index in range(warmup + runs):
            run_id = f"rtt-{index:06d}"
            waiter: asyncio.Future[None] = loop.create_future()
            watch.waiters[run_id] = waiter
            started = time.perf_counter()
            await client.send_message(
                AGENT_TYPE, "rtt", f"echo {index:06d} round trip", run_id=run_id,
                metadata={"chunks": CHUNKS},
            )  # fmt: skip
            await asyncio.wait_for(waiter, RUN_TIMEOUT)
            if run_id in watch.failed:
                raise BenchmarkError(f"run {run_id} ended {watch.failed[run_id]}")
            if index >= warmup:
                latencies.append(watch.first_delta[run_id] - started)
    finally:
        await subscription.unsubscribe()
    return latencies


async def jetledger_throughput(client: GatewayClient, runs: int, timeout: float) -> float:
    watch = RunWatch(expected=runs)
    follower = asyncio.create_task(follow_run_ends(client, await next_seq(client), watch))
    window = asyncio.Semaphore(SEND_WINDOW)

    async def send_one(index: int) -> None:
        async with window:
            await client.send_message(
                AGENT_TYPE, f"tp{index % THROUGHPUT_SESSIONS}", f"echo {index:06d}",
                run_id=f"tp-{index:06d}", metadata={"chunks": CHUNKS},
            )  # fmt: skip

    try:
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(send_one(index) for index in range(runs)))
            await watch.all_ended.wait()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await follower
    if watch.failed:
        raise BenchmarkError(f"{len(watch.failed)} runs did not complete, e.g. {watch.failed}")
    return max(watch.ended.values()) - started


# -- jetledger: servers and workers -----------------------------------------------------


def start_workers(url: str, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        **WORKER_ENV,
        "JETLEDGER_NATS_URL": url,
        "JETLEDGER_STREAM": SETTINGS.stream,
        "JETLEDGER_ROOT": SETTINGS.root,
        "JETLEDGER_KV_BUCKETS": ",".join(SETTINGS.kv_buckets),
        "JETLEDGER_OBJECT_BUCKET": SETTINGS.object_bucket,
    }
    workers = []
    for worker_id in WORKER_IDS:
        args = [sys.executable, "-m", "runners", "--worker-class", ECHO_WORKER,
                "--worker-id", worker_id, "--nats-url", url]  # fmt: skip
        with (log_dir / f"jetledger-{worker_id}.log").open("wb") as log:
            workers.append(
                subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            )
    return workers


def stop_workers(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(10.0)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5.0)


async def wait_for_workers(client: GatewayClient, workers: Sequence[subprocess.Popen[bytes]]):
    deadline = time.monotonic() + WORKER_READY_SECONDS
    while time.monotonic() < deadline:
        if any(worker.poll() is not None for worker in workers):
            raise BenchmarkError("a jetledger worker exited at start-up (see its log)")
        if await client.has_live_worker(AGENT_TYPE):
            await asyncio.sleep(1.0)  # let the second worker's pull request land as well
            return
    raise BenchmarkError(f"no jetledger worker polled within {WORKER_READY_SECONDS}s")


async def run_jetledger(plan: Plan, scratch: Path) -> SideResult:
    async with EmbeddedNatsServer(store_dir=scratch / "nats") as server:
        async with GatewayClient(server.url, SETTINGS) as client:
            workers = start_workers(server.url, scratch)
            try:
                await wait_for_workers(client, workers)
                latencies = await jetledger_round_trips(client, plan.rtt_runs, plan.warmup)
                print(f"  jetledger: {len(latencies)} round trips done", file=sys.stderr)
                seconds = await jetledger_throughput(client, plan.throughput_runs, plan.timeout)
            finally:
                stop_workers(workers)
        versions = {
            "nats-server": ".".join(map(str, server.version)),
            "nats-py": importlib.metadata.version("nats-py"),
            "python": platform.python_version(),
        }
    return SideResult(latencies, plan.throughput_runs, seconds, versions)


# -- by-framework ---------------------------------------------------------------------------


@contextlib.contextmanager
def redis_port(work_dir: Path) -> Iterator[int]:
    """A private redis-server on a free loopback port, stopped on the way out."""
    port = free_loopback_port()
    args = [REDIS_BINARY, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(work_dir)]  # fmt: skip
    with (work_dir / "redis.log").open("wb") as log:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        with contextlib.closing(redis.Redis(host="127.0.0.1", port=port)) as probe:
            wait_for_redis(probe, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


def run_byframework(plan: Plan, scratch: Path) -> SideResult:
    """Run ``byframework_side.py bench`` in by-framework's venv and read its JSON answer."""
    with redis_port(scratch) as port:
        args = [plan.byfw_python, str(BYFW_SIDE), "bench", "--rtt-runs", str(plan.rtt_runs),
                "--throughput-runs", str(plan.byfw_throughput_runs), "--warmup", str(plan.warmup),
                "--timeout", str(plan.timeout), "--log-dir", str(scratch)]  # fmt: skip
        env = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port)}
        # A session of its own, so a deadline can stop the side and its workers together.
        side = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            stdout, stderr = side.communicate(timeout=plan.timeout * 2 + 60)
        except subprocess.TimeoutExpired as exc:
            stop_process_group(side)
            raise BenchmarkError("the by-framework side did not finish in time") from exc
    if side.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise BenchmarkError(f"the by-framework side exited {side.returncode}: {tail}")
    answer: dict[str, Any] = json.loads(stdout)
    return SideResult(
        answer["rtt_seconds"],
        answer["throughput_runs"],
        answer["throughput_seconds"],
        answer["versions"],
    )


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15.0)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5.0)


# -- report ---------------------------------------------------------------------------------


def report(ours: SideResult, theirs: SideResult | None) -> str:
    def cell(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    p50, p99 = ours.rtt_ms(0.50), ours.rtt_ms(0.99)
    their_p50 = theirs.rtt_ms(0.50) if theirs else None
    their_p99 = theirs.rtt_ms(0.99) if theirs else None
    their_rate = theirs.runs_per_second if theirs else None
    rate_ratio = ours.runs_per_second / their_rate if their_rate else None
    rows = [
        ("round trip p50, ms", f"{p50:.2f}", cell(their_p50, ".2f"),
         cell(their_p50 / p50 if their_p50 else None, ".1f") + "x faster",
         f"<= {TARGET_P50_MS} ms", p50 <= TARGET_P50_MS),
        ("round trip p99, ms", f"{p99:.2f}", cell(their_p99, ".2f"),
         cell(their_p99 / p99 if their_p99 else None, ".1f") + "x faster",
         f"<= {TARGET_P99_MS:g} ms", p99 <= TARGET_P99_MS),
        ("throughput, runs/s", f"{ours.runs_per_second:,.0f}", cell(their_rate, ",.0f"),
         cell(rate_ratio, ".1f") + "x",
         f">= {TARGET_THROUGHPUT_RATIO:g}x by-framework",
         rate_ratio is not None and rate_ratio >= TARGET_THROUGHPUT_RATIO),
    ]  # fmt: skip
    lines = [f"{'':<20}{'jetledger':>11}{'by-framework':>14}{'ratio':>15}  {'target':<26}result"]
    for label, mine, other, ratio, target, passed in rows:
        verdict = "PASS" if passed else "MISS"
        lines.append(f"{label:<20}{mine:>11}{other:>14}{ratio:>15}  {target:<26}{verdict}")
    lines.append(
        f"round trips: {len(ours.rtt_seconds):,} jetledger"
        + (f", {len(theirs.rtt_seconds):,} by-framework" if theirs else "")
        + f"; throughput runs: {ours.throughput_runs:,} jetledger in {ours.throughput_seconds:.1f}s"
        + (
            f", {theirs.throughput_runs:,} by-framework in {theirs.throughput_seconds:.1f}s"
            if theirs
            else ""
        )
    )
    lines.append("jetledger: " + ", ".join(f"{k} {v}" for k, v in ours.versions.items()))
    if theirs:
        lines.append("by-framework: " + ", ".join(f"{k} {v}" for k, v in theirs.versions.items()))
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Plan:
    rtt_runs: int
    throughput_runs: int
    byfw_throughput_runs: int
    warmup: int
    timeout: float
    byfw_python: str
    skip_byframework: bool


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rtt-runs", type=int, default=2000, help="sequential round trips")
    parser.add_argument("--throughput-runs", type=int, default=20000, help="jetledger runs")
    parser.add_argument(
        "--byfw-throughput-runs", type=int, default=None, help="by-framework runs (default: same)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs before (a)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per workload")
    parser.add_argument("--byfw-python", default="/tmp/byfw-venv/bin/python")
    parser.add_argument("--skip-byframework", action="store_true")
    args = parser.parse_args(argv)
    if min(args.rtt_runs, args.throughput_runs, args.byfw_throughput_runs or 1) < 1:
        parser.error("run counts must be >= 1")
    return Plan(
        args.rtt_runs,
        args.throughput_runs,
        args.byfw_throughput_runs or args.throughput_runs,
        args.warmup,
        args.timeout,
        args.byfw_python,
        args.skip_byframework,
    )


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jetledger-dispatch-") as scratch_dir:
        scratch = Path(scratch_dir)
        ours = asyncio.run(run_jetledger(plan, scratch))
        print(f"  jetledger done: {ours.runs_per_second:,.0f} runs/s", file=sys.stderr)
        theirs = None if plan.skip_byframework else run_byframework(plan, scratch)
    print(report(ours, theirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
