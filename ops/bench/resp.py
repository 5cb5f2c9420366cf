"""The RESP adapter side by side with redis-server, one run, by hand (not a test).

    python ops/bench/resp.py [--xadd 20000] [--group-entries 5000] [--rtt-runs 300]
        [--only xadd,group,echo,commands] [--baseline DIR] [--rounds N]
        [--client-parser python] [--command-runs 2000]

Starts one embedded nats-server with ``jetledger redis`` in front of it (a subprocess,
as deployed) and one private redis-server, then times the same client workloads
against both:

* pipelined ``XADD`` (redis-py, ``transaction=False``, executed every 500), and the CPU
  time the server process spent per entry (the adapter alone; nats-server's own in a row
  of its own);
* ``XREADGROUP COUNT 100`` + one ``XACK`` per batch until a pre-filled stream is drained,
  and the CPU time per entry of the reads alone (adapter, nats-server);
* by-framework's echo round trip (``byframework_side.py bench``: two real by-framework
  workers in by-framework's own venv; send -> first ``answerDelta`` seen by the client;
  sequential runs, its throughput part is cut to one run);
* ``commands``: one client's sequential round trips of a cached ``HGET``, an ``HSET`` and
  a 15-write ``MULTI``/``EXEC`` (what by-framework's runs are made of).

``--baseline DIR`` adds a third side: the adapter of another source tree (e.g. ``git
archive HEAD`` unpacked in DIR), so old and new code are timed in the same window.
``--rounds N`` repeats every side N times, alternating the order of the two adapters
(A B, B A, ...), and prints medians: the machine is shared and noisy. Each adapter run
gets a fresh nats-server and each redis run a fresh redis-server.

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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import redis
from redis.connection import _RESP2Parser

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from byfwkit import byframework_python  # noqa: E402

from eventstore.embedded import EmbeddedNatsServer  # noqa: E402

PIPELINE = 500
CLIENT_PARSER = "default"
"""Set from ``--client-parser``."""
READ_COUNT = 100
STARTUP_SECONDS = 20.0
BYFW_SIDE = Path(__file__).with_name("byframework_side.py")


class Served(NamedTuple):
    port: int
    pid: int
    broker_pid: int | None = None
    """The adapter's nats-server (None for redis-server)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
def process(
    args: list[str],
    log: Path,
    name: str,
    port: int,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Served]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        child = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=cwd
        )
    try:
        wait_ready(port, child, name)
        yield Served(port, child.pid)
    finally:
        child.terminate()
        try:
            child.wait(10.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5.0)


def redis_server(work: Path) -> contextlib.AbstractContextManager[Served]:
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(work)]  # fmt: skip
    return process(args, work / "redis.log", "redis-server", port)


def adapter(work: Path, nats_url: str, code: Path) -> contextlib.AbstractContextManager[Served]:
    """``jetledger redis`` from the source tree ``code`` (its ``gateway`` is imported)."""
    port = free_port()
    args = [sys.executable, "-m", "gateway.cli", "redis", "--port", str(port),
            "--nats-url", nats_url]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    return process(args, work / "adapter.log", "jetledger redis", port, env=env, cwd=code)


def bench_client(port: int) -> redis.Redis:
    """The workload's redis-py client; ``CLIENT_PARSER`` "python" keeps hiredis out of it
    (redis-py uses hiredis to read replies whenever it is installed, and the adapter
    depends on hiredis: the client side gets ~3x faster, and so does redis-server's
    figure, the reference of the targets)."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": port, "socket_timeout": 120}
    if CLIENT_PARSER == "python":
        options["parser_class"] = _RESP2Parser
    return redis.Redis(connection_pool=redis.ConnectionPool(**options))


def bench_xadd(port: int, count: int) -> float:
    """Entries per second of pipelined XADD."""
    client = bench_client(port)
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


def bench_group(port: int, count: int, filled: Callable[[], None] = lambda: None) -> float:
    """Entries per second through XREADGROUP COUNT 100 + XACK; ``filled`` is called once
    the stream is filled, just before the timed reads."""
    client = bench_client(port)
    key = "bench:group"
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        pipe.xadd(key, {"data": f"entry {index}"})
    pipe.execute()
    client.xgroup_create(key, "g", id="0")
    filled()
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


WORKLOADS = ("xadd", "group", "echo", "commands")
ROWS = (
    ("pipelined XADD (500/pipeline), entries/s", "xadd_per_s", "xadd"),
    ("  server CPU per XADD entry, us", "xadd_cpu_us", "xadd"),
    ("  nats-server CPU per XADD entry, us", "xadd_broker_cpu_us", "xadd"),
    ("XREADGROUP COUNT 100 + XACK, entries/s", "group_per_s", "group"),
    ("  server CPU per group entry (reads), us", "group_cpu_us", "group"),
    ("  nats-server CPU per group entry, us", "group_broker_cpu_us", "group"),
    ("by-framework echo p50 ms", "echo_p50_ms", "echo"),
    ("by-framework echo p99 ms", "echo_p99_ms", "echo"),
    ("round trip: cached HGET, us", "hget_us", "commands"),
    ("round trip: HSET, us", "hset_us", "commands"),
    ("round trip: MULTI + 15 writes + EXEC, us", "exec15_us", "commands"),
)


def bench_commands(port: int, runs: int) -> dict[str, float]:
    """Median microseconds of one client's sequential round trips, each kind in a loop of
    its own: a cached ``HGET``; an ``HSET`` of an existing hash; a ``MULTI``/``EXEC`` of 15
    writes to 5 hashes (the shape of by-framework's status transaction)."""
    client = bench_client(port)
    client.hset("bench:cmd", "f", "v")

    def timed(call: Any, count: int) -> float:
        for _ in range(min(100, count)):
            call()  # warm-up
        laps = []
        for _ in range(count):
            started = time.perf_counter()
            call()
            laps.append(time.perf_counter() - started)
        return statistics.median(laps) * 1e6

    def transaction() -> None:
        pipe = client.pipeline(transaction=True)
        for key in range(5):
            name = f"bench:tx{key}"
            pipe.hincrby(name, "n", 1).hset(name, "t", "x").expire(name, 1000)
        pipe.execute()

    figures = {
        "hget_us": timed(lambda: client.hget("bench:cmd", "f"), runs),
        "hset_us": timed(lambda: client.hset("bench:cmd", "g", "v"), runs),
        "exec15_us": timed(transaction, max(1, runs // 4)),
    }
    client.close()
    return figures


def run_side(served: Served, plan: argparse.Namespace, work: Path) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
    port = served.port
    figures: dict[str, float] = {}
    pids = [served.pid] + ([served.broker_pid] if served.broker_pid else [])

    def cpu_now() -> list[float]:
        return [cpu_seconds(pid) for pid in pids]

    def cpu_per_entry(before: list[float], count: int, name: str) -> None:
        after = cpu_now()
        figures[f"{name}_cpu_us"] = (after[0] - before[0]) / count * 1e6
        # redis-server has no broker: 0 in its column.
        broker = (after[1] - before[1]) / count * 1e6 if len(pids) > 1 else 0.0
        figures[f"{name}_broker_cpu_us"] = broker

    if "xadd" in plan.only:
        before = cpu_now()
        figures["xadd_per_s"] = bench_xadd(port, plan.xadd)
        cpu_per_entry(before, plan.xadd, "xadd")
    if "commands" in plan.only:
        figures.update(bench_commands(port, plan.command_runs))
    if "group" in plan.only:
        filled_at: list[float] = []
        figures["group_per_s"] = bench_group(
            port, plan.group_entries, lambda: filled_at.extend(cpu_now())
        )
        cpu_per_entry(filled_at, plan.group_entries, "group")
    if "echo" in plan.only:
        rtt = bench_echo(port, plan.rtt_runs, work)["rtt_seconds"]
        figures["echo_p50_ms"] = statistics.median(rtt) * 1000
        figures["echo_p99_ms"] = percentile(rtt, 0.99) * 1000
    return figures


async def run_once(
    side: str, code: Path | None, plan: argparse.Namespace, work: Path
) -> dict[str, float]:
    """One run of every chosen workload against redis-server (``code`` None) or an adapter."""
    if code is None:
        with redis_server(work) as served:
            return run_side(served, plan, work)
    async with EmbeddedNatsServer(store_dir=work / "nats") as nats:
        with adapter(work, nats.url, code) as served:
            return run_side(served._replace(broker_pid=nats.pid), plan, work / side)


def side_order(
    sides: list[tuple[str, Path | None]], round_index: int
) -> list[tuple[str, Path | None]]:
    """redis first, then the adapters, their order reversed every other round (ABBA)."""
    adapters = sides[1:] if round_index % 2 == 0 else sides[:0:-1]
    return [sides[0], *adapters]


def table(results: dict[str, list[dict[str, float]]], plan: argparse.Namespace) -> list[str]:
    names = list(results)
    medians = {
        name: {field: statistics.median(run[field] for run in runs) for field in runs[0]}
        for name, runs in results.items()
    }
    header = f"{'workload':44} " + " ".join(f"{name:>13}" for name in names)
    lines = [header + " " + " ".join(f"{name + '/redis':>15}" for name in names[1:])]
    for label, field, workload in ROWS:
        if workload not in plan.only:
            continue
        theirs = medians[names[0]][field]
        values = " ".join(f"{medians[name][field]:13,.1f}" for name in names)
        # redis-server has no broker beside it: no ratio for the broker's CPU
        ratios = " ".join(
            f"{medians[name][field] / theirs:14.2f}x" if theirs else f"{'-':>15}"
            for name in names[1:]
        )
        lines.append(f"{label:44} {values} {ratios}")
    ours, reference = medians["adapter"], medians[names[0]]
    verdicts = []
    if "echo" in plan.only:
        echo_ok = ours["echo_p50_ms"] <= 2 * reference["echo_p50_ms"]
        verdicts.append(f"echo p50 <= 2x redis: {'PASS' if echo_ok else 'MISS'}")
    if "xadd" in plan.only:
        xadd_ok = ours["xadd_per_s"] >= 0.5 * reference["xadd_per_s"]
        verdicts.append(f"XADD >= 0.5x redis: {'PASS' if xadd_ok else 'MISS'}")
    if verdicts:
        lines.append("targets (adapter): " + "; ".join(verdicts))
    if plan.rounds > 1:
        lines.append(f"medians of {plan.rounds} rounds, adapters alternated A B / B A")
    return lines


async def main_async(plan: argparse.Namespace) -> str:
    sides: list[tuple[str, Path | None]] = [("redis-server", None), ("adapter", REPO)]
    if plan.baseline:
        sides.append(("baseline", plan.baseline))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sides}
    with tempfile.TemporaryDirectory(prefix="resp-bench-") as scratch:
        root = Path(plan.work_dir) if plan.work_dir else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        for round_index in range(plan.rounds):
            for name, code in side_order(sides, round_index):
                work = root / f"{name}-{round_index}"
                results[name].append(await run_once(name, code, plan, work))
                print(f"round {round_index + 1} {name}: {results[name][-1]}", file=sys.stderr)
    return "\n".join(table(results, plan))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--xadd", type=int, default=20_000)
    parser.add_argument("--group-entries", type=int, default=5_000)
    parser.add_argument("--rtt-runs", type=int, default=300)
    parser.add_argument("--work-dir", help="keep logs here instead of a temporary directory")
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help="comma-separated: " + ",".join(WORKLOADS)
    )
    parser.add_argument(
        "--baseline", help="also time the adapter of this source tree (e.g. an old commit)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs per side; medians")
    parser.add_argument("--command-runs", type=int, default=2000, help="round trips per command")
    parser.add_argument(
        "--client-parser",
        choices=("default", "python"),
        default="default",
        help="reply parser of the XADD/group client: redis-py's default (hiredis when "
        "installed) or its pure-Python one",
    )
    plan = parser.parse_args(argv)
    global CLIENT_PARSER  # noqa: PLW0603 - a run-wide choice of the benchmark
    CLIENT_PARSER = plan.client_parser
    if plan.baseline:
        plan.baseline = Path(plan.baseline).resolve()
    plan.only = {name.strip() for name in plan.only.split(",") if name.strip()}
    unknown = plan.only - set(WORKLOADS)
    if unknown or not plan.only:
        parser.error(f"--only takes {','.join(WORKLOADS)}")
    print(asyncio.run(main_async(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
