"""Where the RESP adapter's time goes in by-framework's echo run, by hand (not a test).

    python ops/bench/resp_trace.py [--runs 200] [--code DIR] [--py-spy FILE]
        [--work-dir DIR]

Starts one embedded nats-server and ``jetledger redis`` from the source tree ``--code``
(default: this one), runs ``byframework_side.py bench`` (two real by-framework workers,
``--runs`` sequential echo runs after 10 warm-up runs) and prints:

* CPU seconds of the adapter and of nats-server per echo run (``/proc`` user + system,
  over the whole bench, divided by the runs including warm-up ones);
* the adapter's ``INFO commandstats`` (calls, wall time in the adapter) and ``INFO
  stats`` deltas, per run;
* every publish on the KV bucket's subjects seen by a watcher of this script, grouped
  by key pattern (ids replaced by ``*``): messages and bytes per run;
* with ``--py-spy FILE``: a py-spy profile of the adapter (``--format raw``, collapsed
  stacks) over the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
import redis

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "ops" / "bench")]

from byfwkit import byframework_python  # noqa: E402
from resp import BYFW_SIDE, adapter, cpu_seconds, free_port, process  # noqa: E402

from eventstore.embedded import EmbeddedNatsServer  # noqa: E402

WARMUP = 10
BUCKET_SUBJECTS = "$KV.jl_redis.>"
_ID = re.compile(r"[0-9a-f]{8,}|[0-9]{3,}|bfw[0-9]")


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def pattern_of(subject: str) -> str:
    return _ID.sub("*", subject.removeprefix("$KV.jl_redis."))


def info(client: redis.Redis, section: str) -> dict[str, Any]:
    found: dict[str, Any] = client.info(section)
    return found


def commandstats_delta(
    before: dict[str, Any], after: dict[str, Any], runs: int
) -> list[tuple[str, float, float]]:
    rows = []
    for name, stat in after.items():
        old = before.get(name, {"calls": 0, "usec": 0})
        calls = (stat["calls"] - old["calls"]) / runs
        usec = (stat["usec"] - old["usec"]) / runs
        if calls:
            rows.append((name.removeprefix("cmdstat_"), calls, usec))
    return sorted(rows, key=lambda row: -row[2])


def served_adapter(
    plan: argparse.Namespace, work: Path, nats_url: str
) -> contextlib.AbstractContextManager[Any]:
    """The adapter of ``--code``; with ``--timeline`` through ``resp_timeline.py``."""
    code = Path(plan.code).resolve()
    if not plan.timeline:
        return adapter(work, nats_url, code)
    port = free_port()
    args = [sys.executable, str(Path(__file__).with_name("resp_timeline.py")),
            str(Path(plan.timeline).resolve()), "redis", "--port", str(port),
            "--nats-url", nats_url]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    return process(args, work / "adapter.log", "jetledger redis", port, env=env, cwd=code)


async def trace(plan: argparse.Namespace, work: Path) -> str:
    lines: list[str] = []
    counts: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()

    async def watched(msg: Any) -> None:
        key = pattern_of(msg.subject)
        counts[key] += 1
        sizes[key] += len(msg.data)

    async with EmbeddedNatsServer(store_dir=work / "nats") as server:
        with served_adapter(plan, work, server.url) as served:
            watcher = await nats.connect(server.url)
            await watcher.subscribe(BUCKET_SUBJECTS, cb=watched)
            client = redis.Redis(host="127.0.0.1", port=served.port)
            stats_before = info(client, "commandstats")
            kv_before = info(client, "stats")
            nats_pid = server.pid
            assert nats_pid is not None
            cpu_adapter, cpu_nats = cpu_seconds(served.pid), cpu_seconds(nats_pid)
            split_before = cpu_split(served.pid)
            spy = None
            if plan.py_spy:
                spy_args = [str(Path(sys.executable).with_name("py-spy")), "record", "-p",
                            str(served.pid), "-o", plan.py_spy, "--format", "raw", "-r",
                            "200", "--nonblocking"]  # fmt: skip
                spy = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                    spy_args,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            args = [str(byframework_python()), str(BYFW_SIDE), "bench", "--rtt-runs",
                    str(plan.runs), "--throughput-runs", "1", "--warmup", str(WARMUP),
                    "--timeout", "120", "--log-dir", str(work)]  # fmt: skip
            env = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(served.port)}
            done = await asyncio.to_thread(
                subprocess.run, args, env=env, capture_output=True, timeout=600, check=False
            )
            cpu_adapter = cpu_seconds(served.pid) - cpu_adapter
            cpu_nats = cpu_seconds(nats_pid) - cpu_nats
            split_after = cpu_split(served.pid)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            if done.returncode != 0:
                raise RuntimeError(done.stderr.decode(errors="replace")[-2000:])
            answer = json.loads(done.stdout)
            rtt = sorted(answer["rtt_seconds"])
            runs = plan.runs + WARMUP + 1  # + the one throughput run
            await watcher.flush()
            await asyncio.sleep(0.2)
            stats_after = info(client, "commandstats")
            kv_after = info(client, "stats")
            client.close()
            await watcher.close()
    lines.append(
        f"echo runs {plan.runs}: p50 {rtt[len(rtt) // 2] * 1000:.1f} ms, "
        f"p99 {rtt[min(len(rtt) - 1, int(0.99 * len(rtt)))] * 1000:.1f} ms"
    )
    lines.append(
        f"CPU per run (over {runs} runs): adapter {cpu_adapter / runs * 1000:.2f} ms, "
        f"nats-server {cpu_nats / runs * 1000:.2f} ms; adapter user "
        f"{(split_after[0] - split_before[0]) / runs * 1000:.2f} ms, system "
        f"{(split_after[1] - split_before[1]) / runs * 1000:.2f} ms"
    )
    lines.append("per run: command, calls, adapter wall us")
    for name, calls, usec in commandstats_delta(stats_before, stats_after, runs):
        lines.append(f"  {name:<22}{calls:8.2f}{usec:10.0f}")
    lines.append("per run: INFO stats (jetledger_*)")
    for name, value in kv_after.items():
        if name.startswith("jetledger_") and isinstance(value, int):
            lines.append(f"  {name:<40}{(value - kv_before.get(name, 0)) / runs:10.2f}")
    lines.append("per run: KV publishes by key pattern, messages, bytes")
    for key, count in sorted(counts.items(), key=lambda item: -sizes[item[0]]):
        lines.append(f"  {key[:70]:<72}{count / runs:7.2f}{sizes[key] / runs:10.0f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--code", default=str(REPO), help="source tree of the adapter")
    parser.add_argument("--py-spy", help="write a py-spy raw profile of the adapter here")
    parser.add_argument("--timeline", help="log every command's start and end here")
    parser.add_argument("--work-dir", help="keep logs here (default: a temporary dir)")
    plan = parser.parse_args(argv)
    if plan.work_dir:
        work = Path(plan.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        print(asyncio.run(trace(plan, work)))
        return 0
    with tempfile.TemporaryDirectory(prefix="resp-trace-") as tmp:
        print(asyncio.run(trace(plan, Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
