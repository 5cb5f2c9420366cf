"""Fan-out / gather of 100 children: jetledger against by-framework 0.2.1's ``dispatch_group``.

A benchmark run by hand, not a test (issue 4, "Benchmark (by hand)")::

    python ops/bench/orchestration.py [--members 100] [--repeats 5] [--warmup 1]

A parent run dispatches ``--members`` children as one group (``strategy="all"`` on
jetledger) and gathers their results; each child returns its input at once. Timed: from
just before the client sends the parent's command (so its append is inside) to the moment
the client sees the parent's end (jetledger: ``run.*`` on the run's ``.end`` subject;
by-framework: ``appStreamResponse`` on the session's data stream); median, min and max of
``--repeats`` fan-outs after ``--warmup`` untimed ones. Both sides run one parent worker
and two child workers as subprocesses. jetledger runs first on an embedded nats-server;
by-framework runs second, in its own Python 3.12 venv (``byframework_group_side.py``), on
a private redis-server, so the two never share the CPU. Each side also reports how many
of the children's results its parent received.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch import redis_port, stop_process_group, stop_workers
from orchestration_phases import Phases, phases_of
from orchestration_workers import FANOUT_AGENT, LEAF_AGENT

from eventstore.codec import decode
from eventstore.embedded import EmbeddedNatsServer
from eventstore.envelope import Event
from eventstore.settings import StoreSettings
from eventstore.subjects import run_end_subject
from gateway.client import GatewayClient

HERE = Path(__file__).resolve().parent
SETTINGS = StoreSettings(stream="BENCHO", root="bo", kv_buckets=("kvbo",), object_bucket="objbo")
WORKERS = (
    ("orchestration_workers:FanOutWorker", "parent-1"),
    ("orchestration_workers:LeafWorker", "leaf-1"),
    ("orchestration_workers:LeafWorker", "leaf-2"),
)
WORKER_ENV = {
    "JETLEDGER_WORKER_MAX_CONCURRENCY": "256",  # every resume of the parent finds a slot
    "JETLEDGER_WORKER_FETCH_BATCH": "64",
    "JETLEDGER_WORKER_FETCH_WAIT": "0.5",
    "JETLEDGER_WORKER_DRAIN_TIMEOUT": "5",
}
WORKER_READY_SECONDS = 30.0
BYFW_SIDE = HERE / "byframework_group_side.py"
BYFW_VENV = Path("/tmp/byfw-venv")


class BenchmarkError(Exception):
    """A worker did not start, a fan-out failed or did not end in time, or a side broke."""


@dataclass(frozen=True, slots=True)
class Trial:
    """One fan-out: seconds to the parent's end and what the parent received."""

    seconds: float
    received: int
    successes: int
    distinct: int
    collect_seconds: float | None = None
    """by-framework only: how long its parent's ``collect_group_results`` polled."""
    gathered: bool = True
    """by-framework only: whether its parent was invoked with the group's results at all
    (else the parent's stream ended without it ever gathering)."""
    phases: Phases | None = None
    """jetledger only: where the time went, from the events' own timestamps."""


@dataclass(frozen=True, slots=True)
class SideResult:
    trials: list[Trial]
    versions: dict[str, str]

    def seconds(self) -> list[float]:
        return [trial.seconds for trial in self.trials]


# -- jetledger ---------------------------------------------------------------------------


async def jetledger_fan_out(client: GatewayClient, index: int, plan: Plan) -> Trial:
    session_id, run_id = f"fan{index}", f"fan-{index:03d}"
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[tuple[Event, float]] = loop.create_future()

    async def on_end(message: Any) -> None:
        seen_at = time.perf_counter()
        event = decode(message.data, subject=message.subject, headers=message.headers)
        if isinstance(event, Event) and not ended.done():
            ended.set_result((event, seen_at))

    subject = run_end_subject(session_id, run_id, SETTINGS.root)
    subscription = await client.store.nc.subscribe(subject, cb=on_end)
    await client.store.nc.flush()  # subscribed before the command is sent
    first_seq = await client.store.last_seq() + 1
    try:
        started = time.perf_counter()
        await client.send_message(
            FANOUT_AGENT, session_id, "fan", run_id=run_id,
            metadata={"members": plan.members, "delay": plan.child_delay},
        )  # fmt: skip
        terminal, seen_at = await asyncio.wait_for(ended, plan.timeout)
    finally:
        await subscription.unsubscribe()
    if terminal.type != "run.completed":
        raise BenchmarkError(f"fan-out {run_id} ended {terminal.type}: {terminal.data}")
    summary: dict[str, Any] = terminal.data.result  # type: ignore[attr-defined]
    phases = await phases_of(client.store, first_seq, session_id, run_id)
    return Trial(
        seconds=seen_at - started,
        received=int(summary["received"]),
        successes=int(summary["successes"]),
        distinct=int(summary["distinct"]),
        phases=phases,
    )


def start_workers(
    url: str, log_dir: Path, profile: Path | None = None
) -> list[subprocess.Popen[bytes]]:
    """One parent and two leaf workers; with ``profile``, the parent runs under cProfile
    and writes its statistics there when it exits (SIGTERM drains, then exits normally)."""
    env = {
        **os.environ,
        **WORKER_ENV,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        "JETLEDGER_NATS_URL": url,
        "JETLEDGER_STREAM": SETTINGS.stream,
        "JETLEDGER_ROOT": SETTINGS.root,
        "JETLEDGER_KV_BUCKETS": ",".join(SETTINGS.kv_buckets),
        "JETLEDGER_OBJECT_BUCKET": SETTINGS.object_bucket,
    }
    workers = []
    for worker_class, worker_id in WORKERS:
        args = [sys.executable, "-m", "runners", "--worker-class", worker_class,
                "--worker-id", worker_id, "--nats-url", url]  # fmt: skip
        if profile is not None and worker_class.endswith(":FanOutWorker"):
            args[1:1] = ["-m", "cProfile", "-o", str(profile)]
        with (log_dir / f"jetledger-{worker_id}.log").open("wb") as log:
            workers.append(
                subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            )
    return workers


async def wait_for_workers(
    client: GatewayClient, workers: Sequence[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + WORKER_READY_SECONDS
    while time.monotonic() < deadline:
        if any(worker.poll() is not None for worker in workers):
            raise BenchmarkError("a jetledger worker exited at start-up (see its log)")
        if all([await client.has_live_worker(t) for t in (FANOUT_AGENT, LEAF_AGENT)]):
            await asyncio.sleep(1.0)  # let the second leaf worker's pull request land too
            return
        await asyncio.sleep(0.1)
    raise BenchmarkError(f"no jetledger worker polled within {WORKER_READY_SECONDS}s")


async def run_jetledger(plan: Plan, scratch: Path) -> SideResult:
    trials: list[Trial] = []
    async with EmbeddedNatsServer(store_dir=scratch / "nats") as server:
        async with GatewayClient(server.url, SETTINGS) as client:
            profile = scratch / "parent.prof" if plan.profile_parent else None
            workers = start_workers(server.url, scratch, profile)
            try:
                await wait_for_workers(client, workers)
                for index in range(plan.warmup + plan.repeats):
                    trial = await jetledger_fan_out(client, index, plan)
                    print(f"  jetledger fan-out {index}: {trial.seconds:.3f}s, "
                          f"{trial.received} results; {trial.phases}", file=sys.stderr)  # fmt: skip
                    if index >= plan.warmup:
                        trials.append(trial)
            finally:
                stop_workers(workers)
            if profile is not None:
                print_profile(profile)
        versions = {
            "nats-server": ".".join(map(str, server.version)),
            "nats-py": importlib.metadata.version("nats-py"),
            "python": platform.python_version(),
        }
    return SideResult(trials, versions)


def print_profile(profile: Path) -> None:
    """The parent worker's hottest functions (own time), to stderr."""
    if not profile.exists():
        print("  no profile was written (the parent worker did not exit cleanly)", file=sys.stderr)
        return
    stats = pstats.Stats(str(profile), stream=sys.stderr)
    print("  parent worker profile, whole process life, top 25 by own time:", file=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)
    print("  jetledger's own functions by cumulative time:", file=sys.stderr)
    stats.sort_stats("cumulative").print_stats(r"/(runners|eventstore)/", 40)


# -- by-framework ------------------------------------------------------------------------

VENV_HELP = f"""by-framework's venv is missing; create it once with
  ~/.pyenv/versions/3.12.1/bin/python -m venv {BYFW_VENV}
  {BYFW_VENV}/bin/pip install by-framework==0.2.1 redis==7.4.0
(or pass --byfw-python, or --skip-byframework)"""


def ensure_byfw_python(plan: Plan) -> str:
    """The by-framework venv's interpreter; the default venv is created if it is missing."""
    python = Path(plan.byfw_python)
    if python.exists():
        return str(python)
    if python != BYFW_VENV / "bin" / "python":
        raise BenchmarkError(f"{python} does not exist\n{VENV_HELP}")
    pythons = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python"))
    if not pythons:
        raise BenchmarkError(f"no Python 3.12 under ~/.pyenv/versions\n{VENV_HELP}")
    print(f"  creating {BYFW_VENV} with {pythons[-1]}", file=sys.stderr)
    steps = [
        [str(pythons[-1]), "-m", "venv", str(BYFW_VENV)],
        [str(BYFW_VENV / "bin" / "pip"), "install", "-q", "by-framework==0.2.1", "redis==7.4.0"],
    ]
    for step in steps:
        if subprocess.run(step, check=False).returncode != 0:
            raise BenchmarkError(f"{' '.join(step)} failed\n{VENV_HELP}")
    return str(python)


def run_byframework(plan: Plan, scratch: Path, parent_concurrency: int) -> SideResult:
    """Run ``byframework_group_side.py bench`` in by-framework's venv (on a fresh
    redis-server); read its JSON."""
    python = ensure_byfw_python(plan)
    with redis_port(scratch) as port:
        args = [python, str(BYFW_SIDE), "bench", "--members", str(plan.members),
                "--repeats", str(plan.repeats), "--warmup", str(plan.warmup),
                "--child-delay", str(plan.child_delay),
                "--parent-concurrency", str(parent_concurrency),
                "--collect-timeout", str(plan.byfw_collect_timeout),
                "--timeout", str(plan.timeout), "--log-dir", str(scratch)]  # fmt: skip
        env = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port)}
        # A session of its own, so a deadline can stop the side and its workers together.
        side = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=None, start_new_session=True
        )
        budget = (plan.timeout + 10) * (plan.repeats + plan.warmup) + 60
        try:
            stdout, _ = side.communicate(timeout=budget)
        except subprocess.TimeoutExpired as exc:
            stop_process_group(side)
            raise BenchmarkError("the by-framework side did not finish in time") from exc
    if side.returncode != 0:
        raise BenchmarkError(f"the by-framework side exited {side.returncode} (see above)")
    answer: dict[str, Any] = json.loads(stdout)
    trials = [
        Trial(
            seconds=t["seconds"],
            received=t["received"],
            successes=t["successes"],
            distinct=t["distinct"],
            collect_seconds=t["collect_seconds"],
            gathered=t["gathered"],
        )
        for t in answer["trials"]
    ]
    return SideResult(trials, answer["versions"])


# -- report ------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def received(plan: Plan, side: SideResult) -> str:
    counts = "/".join(map(str, sorted({t.received for t in side.trials})))
    distinct = "/".join(map(str, sorted({t.distinct for t in side.trials})))
    return f"{counts} of {plan.members} ({distinct} distinct)"


def report(plan: Plan, ours: SideResult, theirs: dict[int, SideResult]) -> str:
    """One column per system (by-framework once per parent concurrency), medians with
    (min-max), and by-framework's median as a multiple of jetledger's."""
    columns = [("jetledger", ours)] + [
        (f"by-framework c={concurrency}", side) for concurrency, side in theirs.items()
    ]
    ours_median = statistics.median(ours.seconds())
    label_width, width = 31, 27
    lines = ["".join([f"{'':<{label_width}}", *(f"{name:<{width}}" for name, _ in columns)])]

    def row(label: str, cells: list[str]) -> None:
        lines.append("".join([f"{label:<{label_width}}", *(f"{c:<{width}}" for c in cells)]))

    def ratio(values: list[float]) -> str:
        return f"{statistics.median(values) / ours_median:.1f}x jetledger"

    def by_side(cell: Any) -> list[str]:
        return [cell(side) if side is not ours else "-" for _, side in columns]

    row("parent command -> end, s", [spread(side.seconds()) for _, side in columns])
    if theirs:
        row("  as a multiple", ["1.0x"] + [ratio(side.seconds()) for side in theirs.values()])
        row(
            "  of which collect polled, s",
            by_side(lambda side: spread([t.collect_seconds or 0.0 for t in side.trials])),
        )
        row(
            "  before collect, s",
            by_side(
                lambda side: spread([t.seconds - (t.collect_seconds or 0.0) for t in side.trials])
            ),
        )
        row(
            "  before collect, multiple",
            by_side(
                lambda side: ratio([t.seconds - (t.collect_seconds or 0.0) for t in side.trials])
            ),
        )
        row(
            "parent gathered at all",
            [
                f"{sum(t.gathered for t in side.trials)} of {len(side.trials)}"
                for _, side in columns
            ],
        )
    row("results the parent received", [received(plan, side) for _, side in columns])  # fmt: skip
    phases = [t.phases for t in ours.trials if t.phases is not None]
    if phases:
        lines.append("jetledger phases, medians in s, from the events' own timestamps:")
        lines.append("  " + Phases.summary(phases))
    lines.append(
        f"{len(ours.trials)} timed fan-outs per column after {plan.warmup} warm-up; "
        f"{plan.members} children each, child delay {plan.child_delay:g}s; "
        "1 parent worker + 2 child workers per column"
    )
    if theirs:
        lines.append(
            "by-framework c=N: the parent worker's BYAI_WORKER_CONCURRENCY (50 is its "
            f"default); collect_group_results(timeout={plan.byfw_collect_timeout:g})"
        )
    lines.append("jetledger: " + ", ".join(f"{k} {v}" for k, v in ours.versions.items()))
    for side in list(theirs.values())[:1]:
        lines.append("by-framework: " + ", ".join(f"{k} {v}" for k, v in side.versions.items()))
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Plan:
    members: int
    repeats: int
    warmup: int
    timeout: float
    byfw_collect_timeout: float
    byfw_python: str
    skip_byframework: bool
    child_delay: float = 0.0
    byfw_parent_concurrency: tuple[int, ...] = (50, 1)
    profile_parent: bool = False


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=100, help="children per fan-out")
    parser.add_argument("--repeats", type=int, default=5, help="timed fan-outs per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed fan-outs first")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per fan-out")
    parser.add_argument(
        "--byfw-collect-timeout", type=float, default=30.0,
        help="by-framework's collect_group_results(timeout=...); 30 is its default",
    )  # fmt: skip
    parser.add_argument("--child-delay", type=float, default=0.0, help="seconds each child sleeps")
    parser.add_argument(
        "--byfw-parent-concurrency", default="50,1",
        help="by-framework parent worker concurrencies to run (50 is its default; 1 "
        "serializes the group callbacks)",
    )  # fmt: skip
    parser.add_argument("--byfw-python", default=str(BYFW_VENV / "bin" / "python"))
    parser.add_argument("--skip-byframework", action="store_true")
    parser.add_argument(
        "--profile-parent", action="store_true",
        help="run jetledger's parent worker under cProfile and print its hot spots",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if min(args.members, args.repeats) < 1 or args.warmup < 0:
        parser.error("--members and --repeats must be >= 1, --warmup >= 0")
    return Plan(
        args.members,
        args.repeats,
        args.warmup,
        args.timeout,
        args.byfw_collect_timeout,
        args.byfw_python,
        args.skip_byframework,
        args.child_delay,
        tuple(int(c) for c in args.byfw_parent_concurrency.split(",") if c.strip()),
        args.profile_parent,
    )


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jetledger-orchestration-") as scratch_dir:
        scratch = Path(scratch_dir)
        ours = asyncio.run(run_jetledger(plan, scratch))
        theirs = {}
        if not plan.skip_byframework:
            for concurrency in plan.byfw_parent_concurrency:
                theirs[concurrency] = run_byframework(plan, scratch, concurrency)
    print(report(plan, ours, theirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
