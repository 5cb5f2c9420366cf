"""The RESP adapter side by side with redis-server, one run, by hand (not a test).

    python ops/bench/resp.py [--xadd 20000] [--group-entries 5000] [--rtt-runs 300]

Starts one embedded nats-server with ``jetledger redis`` in front of it (a subprocess,
as deployed) and one private redis-server, then times the same client workloads
against both:

* pipelined ``XADD`` (redis-py, ``transaction=False``, executed every 500);
* ``XREADGROUP COUNT 100`` + one ``XACK`` per batch until a pre-filled stream is drained;
* by-framework's echo round trip (``byframework_side.py bench``: two real by-framework
  workers in by-framework's own venv; send -> first ``answerDelta`` seen by the client;
  sequential runs, its throughput part is cut to one run).

Prints a table on stdout; every server and worker is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from byfwkit import byframework_python  # noqa: E402

from eventstore.embedded import EmbeddedNatsServer  # noqa: E402

PIPELINE = 500
READ_COUNT = 100
STARTUP_SECONDS = 20.0
BYFW_SIDE = Path(__file__).with_name("byframework_side.py")


class BenchmarkError(Exception):
    """A server did not start, a workload stored the wrong count, or a side failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchmarkError(f"{name} exited with code {process.returncode}")
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return
            time.sleep(0.1)
    finally:
        client.close()
    raise BenchmarkError(f"{name} did not answer PING within {STARTUP_SECONDS}s")


@contextlib.contextmanager
def process(args: list[str], log: Path, name: str, port: int) -> Iterator[int]:
    with log.open("wb") as out:
        child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_ready(port, child, name)
        yield port
    finally:
        child.terminate()
        try:
            child.wait(10.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5.0)


def redis_server(work: Path) -> contextlib.AbstractContextManager[int]:
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(work)]  # fmt: skip
    return process(args, work / "redis.log", "redis-server", port)


def adapter(work: Path, nats_url: str) -> contextlib.AbstractContextManager[int]:
    port = free_port()
    args = [sys.executable, "-m", "gateway.cli", "redis", "--port", str(port),
            "--nats-url", nats_url]  # fmt: skip
    return process(args, work / "adapter.log", "jetledger redis", port)


def bench_xadd(port: int, count: int) -> float:
    """Entries per second of pipelined XADD."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=120)
    key = "bench:xadd"
    body = json.dumps({"text": "x" * 280})
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for index in range(1, count + 1):
        pipe.xadd(key, {"data": body})
        if index % PIPELINE == 0:
            pipe.execute()
    pipe.execute()
    elapsed = time.perf_counter() - started
    stored = int(client.xlen(key))
    client.close()
    if stored != count:
        raise BenchmarkError(f"{key} holds {stored} entries after {count} XADDs")
    return count / elapsed


def bench_group(port: int, count: int) -> float:
    """Entries per second through XREADGROUP COUNT 100 + XACK."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=120)
    key = "bench:group"
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        pipe.xadd(key, {"data": f"entry {index}"})
    pipe.execute()
    client.xgroup_create(key, "g", id="0")
    started = time.perf_counter()
    done = 0
    while done < count:
        reply = client.xreadgroup("g", "c1", {key: ">"}, count=READ_COUNT, block=2000)
        if not reply:
            raise BenchmarkError(f"XREADGROUP came back empty after {done} of {count}")
        ids = [entry_id for entry_id, _fields in reply[0][1]]
        if client.xack(key, "g", *ids) != len(ids):
            raise BenchmarkError("XACK acknowledged fewer entries than were read")
        done += len(ids)
    elapsed = time.perf_counter() - started
    client.close()
    return count / elapsed


def bench_echo(port: int, runs: int, work: Path) -> dict[str, Any]:
    python = byframework_python()
    args = [str(python), str(BYFW_SIDE), "bench", "--rtt-runs", str(runs),
            "--throughput-runs", "1", "--warmup", "10", "--timeout", "120",
            "--log-dir", str(work)]  # fmt: skip
    env = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port)}
    done = subprocess.run(args, env=env, capture_output=True, timeout=400, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise BenchmarkError(f"byframework_side.py failed: {tail}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_side(port: int, plan: argparse.Namespace, work: Path) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
    xadd = bench_xadd(port, plan.xadd)
    group = bench_group(port, plan.group_entries)
    echo = bench_echo(port, plan.rtt_runs, work)
    rtt = echo["rtt_seconds"]
    return {
        "xadd_per_s": xadd,
        "group_per_s": group,
        "echo_p50_ms": statistics.median(rtt) * 1000,
        "echo_p99_ms": percentile(rtt, 0.99) * 1000,
    }


async def main_async(plan: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="resp-bench-") as scratch:
        root = Path(plan.work_dir) if plan.work_dir else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        with redis_server(root) as port:
            theirs = run_side(port, plan, root / "redis")
        async with EmbeddedNatsServer(store_dir=root / "nats") as nats:
            with adapter(root, nats.url) as port:
                ours = run_side(port, plan, root / "adapter")
    rows = [
        ("pipelined XADD (500/pipeline), entries/s", "xadd_per_s", "higher"),
        ("XREADGROUP COUNT 100 + XACK, entries/s", "group_per_s", "higher"),
        ("by-framework echo p50 ms", "echo_p50_ms", "lower"),
        ("by-framework echo p99 ms", "echo_p99_ms", "lower"),
    ]
    lines = [f"{'workload':44} {'redis-server':>13} {'adapter':>10} {'adapter/redis':>14}"]
    for label, field, _better in rows:
        ratio = ours[field] / theirs[field] if theirs[field] else float("nan")
        lines.append(f"{label:44} {theirs[field]:13,.1f} {ours[field]:10,.1f} {ratio:13.2f}x")
    echo_ok = ours["echo_p50_ms"] <= 2 * theirs["echo_p50_ms"]
    xadd_ok = ours["xadd_per_s"] >= 0.5 * theirs["xadd_per_s"]
    lines.append(
        f"targets: echo p50 <= 2x redis: {'PASS' if echo_ok else 'MISS'}; "
        f"XADD >= 0.5x redis: {'PASS' if xadd_ok else 'MISS'}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--xadd", type=int, default=20_000)
    parser.add_argument("--group-entries", type=int, default=5_000)
    parser.add_argument("--rtt-runs", type=int, default=300)
    parser.add_argument("--work-dir", help="keep logs here instead of a temporary directory")
    plan = parser.parse_args(argv)
    print(asyncio.run(main_async(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
