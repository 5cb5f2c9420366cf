"""The by-framework half of ``orchestration.py``; run by by-framework's own Python 3.12 venv.

by-framework is used only as an installed package (``pip install by-framework==0.2.1
redis==7.4.0``); nothing of it is copied here. Two subcommands::

    python byframework_group_side.py worker --role parent|leaf --worker-id W
    python byframework_group_side.py bench --members 100 --repeats 5 --log-dir DIR

``bench`` starts one parent and two leaf ``worker`` subprocesses against
``$REDIS_HOST:$REDIS_PORT`` and runs ``--warmup`` + ``--repeats`` fan-outs through
by-framework's ``GatewayClient``; it prints one JSON object on stdout. Its workers are
stopped on the way out, whatever happens.

The workload is the one jetledger runs (``orchestration_workers.py``), in 0.2.1's own
idiom (continuation passing, as its README and the reference describe): the parent's
first invocation calls ``context.dispatch_group(tasks)`` (``wait_for_reply=True``) and
returns ``WAITING_AGENT``; each leaf returns its input; the framework counts the leaves'
callbacks and invokes the parent again with the last one (a ``ResumeCommand`` carrying
``task_group_id``), which calls ``context.collect_group_results(task_group_id,
timeout=--collect-timeout)`` and returns how many results it received. The client times
each fan-out from just before ``send_message`` to the run's end-of-stream marker
(``appStreamResponse``) on the session's data stream, and reads the parent's summary
from the ``finalAnswer`` before it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from by_framework import (
    AgentContext,
    AgentState,
    GatewayClient,
    GatewayWorker,
    RedisKeys,
    ResumeCommand,
    WorkerRegistry,
    init_redis,
    run_worker,
)

FANOUT_AGENT = "bench_fanout"
LEAF_AGENT = "bench_leaf"
FINAL_ANSWER = "finalAnswer"
END_OF_STREAM = "appStreamResponse"
WORKERS = (("parent", "bfwp1"), ("leaf", "bfwl1"), ("leaf", "bfwl2"))
WORKER_READY_SECONDS = 30.0
COLLECT_TIMEOUT_ENV = "BENCH_COLLECT_TIMEOUT"


class BenchmarkError(Exception):
    """A worker did not come up, a send failed, or a fan-out did not end in time."""


class FanOutAgent(GatewayWorker):
    """Dispatches ``members`` leaves as one group; on the group's callback, collects."""

    def get_agent_types(self) -> list[str]:
        return [FANOUT_AGENT]

    async def process_command(self, command: Any, context: AgentContext) -> dict[str, Any]:
        if isinstance(command, ResumeCommand):
            group_id = command.header.task_group_id
            timeout = float(os.environ.get(COLLECT_TIMEOUT_ENV, "30"))
            started = time.perf_counter()
            results = await context.collect_group_results(group_id, timeout=timeout)
            summary = {
                "received": len(results),
                "successes": sum(1 for r in results if r.get("status") == "COMPLETED"),
                "distinct": len({json.dumps(r.get("content")) for r in results}),
                "collect_seconds": time.perf_counter() - started,
            }
            return {"status": AgentState.COMPLETED.value, "content": json.dumps(summary)}
        members = int(command.header.metadata.get("members", 100))
        delay = float(command.header.metadata.get("delay", 0.0))
        tasks = [
            {
                "target_agent_type": LEAF_AGENT,
                "content": f"{command.content}#{index}",
                "metadata": {"delay": delay},
            }
            for index in range(members)
        ]
        await context.dispatch_group(tasks)
        return {"status": AgentState.WAITING_AGENT.value}


class LeafAgent(GatewayWorker):
    """Returns its input at once (upper-case COMPLETED: 0.2.1's terminal spelling)."""

    def get_agent_types(self) -> list[str]:
        return [LEAF_AGENT]

    async def process_command(self, command: Any, context: AgentContext) -> dict[str, Any]:
        delay = float(command.header.metadata.get("delay", 0.0))
        if delay:
            await asyncio.sleep(delay)
        return {"status": AgentState.COMPLETED.value, "content": str(command.content)}


async def fan_out(
    client: GatewayClient, redis: Any, session_id: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One fan-out: seconds from just before ``send_message`` to the end-of-stream marker,
    and the parent's summary (``received`` results and so on)."""
    key = RedisKeys.session_data_stream(session_id)
    last = await redis.xrevrange(key, count=1)
    position = last[0][0] if last else "0-0"
    started = time.perf_counter()
    response = await client.send_message(
        target_agent_type=FANOUT_AGENT,
        session_id=session_id,
        content="fan",
        metadata={"members": args.members, "delay": args.child_delay},
    )
    if not response.success:
        raise BenchmarkError(f"send_message failed: {response.error_code} {response.error}")
    summary: dict[str, Any] | None = None
    seen: list[str] = []  # the parent's data messages, for a fan-out that ends without one
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        replies = await redis.xread({key: position}, count=1000, block=1000)
        now = time.perf_counter()
        for _stream, entries in replies or ():
            for entry_id, fields in entries:
                position = entry_id
                message = json.loads(fields["data"])
                if message.get("message_id") != response.message_id:
                    continue
                event_type = str(message.get("event_type"))
                if event_type == FINAL_ANSWER:
                    summary = json.loads(_text_of(message))
                elif event_type == END_OF_STREAM:
                    if summary is None:  # the parent never gathered: report, do not abort
                        return {"seconds": now - started, "received": 0, "successes": 0,
                                "distinct": 0, "collect_seconds": 0.0, "gathered": False,
                                "parent_messages": seen}  # fmt: skip
                    return {"seconds": now - started, "gathered": True, **summary}
                else:
                    seen.append(f"{event_type}: {_text_or_none(message)}"[:200])
    raise BenchmarkError(f"fan-out {response.message_id} did not end within {args.timeout}s")


def _text_or_none(message: dict[str, Any]) -> str | None:
    try:
        return _text_of(message)
    except BenchmarkError:
        return None


def _text_of(message: dict[str, Any]) -> str:
    """The text of a data message: 0.2.1's default (SSE) layout puts it in
    ``data.choices[0].delta.content``."""
    try:
        content = message["data"]["choices"][0]["delta"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if isinstance(content, str):
        return content
    raise BenchmarkError(f"unexpected finalAnswer shape: {json.dumps(message)[:300]}")


# -- workers -------------------------------------------------------------------------------


def start_workers(args: argparse.Namespace) -> list[Any]:
    workers = []
    for role, worker_id in WORKERS:
        concurrency = args.parent_concurrency if role == "parent" else args.leaf_concurrency
        env = {
            **os.environ,
            "BYAI_WORKER_CONCURRENCY": str(concurrency),
            COLLECT_TIMEOUT_ENV: str(args.collect_timeout),
        }
        log_name = f"byfw-group-p{args.parent_concurrency}-{worker_id}.log"
        with (Path(args.log_dir) / log_name).open("wb") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "worker", "--role", role, "--worker-id", worker_id],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            )
    return workers


def stop_workers(workers: Iterable[Any]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(5.0)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5.0)


async def wait_for_workers(redis: Any, workers: Sequence[Any]) -> None:
    """Until every worker holds its online lease (the registry key ``send_message`` checks)."""
    deadline = time.monotonic() + WORKER_READY_SECONDS
    keys = [f"byai_gateway:registry:worker:online:{worker_id}" for _role, worker_id in WORKERS]
    while time.monotonic() < deadline:
        dead = [worker.args for worker in workers if worker.poll() is not None]
        if dead:
            raise BenchmarkError(f"a by-framework worker exited at start-up: {dead[0]}")
        if all(await asyncio.gather(*(redis.exists(key) for key in keys))):
            return
        await asyncio.sleep(0.1)
    raise BenchmarkError(f"by-framework workers not online within {WORKER_READY_SECONDS}s")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    redis = init_redis(
        host=os.environ.get("REDIS_HOST", "127.0.0.1"), port=int(os.environ["REDIS_PORT"])
    )
    client = GatewayClient(redis_client=redis, registry=WorkerRegistry(redis_client=redis))
    workers = start_workers(args)
    trials: list[dict[str, Any]] = []
    try:
        await wait_for_workers(redis, workers)
        await asyncio.sleep(1.0)  # every consumer joins its group before traffic starts
        for index in range(args.warmup + args.repeats):
            trial = await fan_out(client, redis, f"fan{index}", args)
            print(f"  by-framework (parent concurrency {args.parent_concurrency}) fan-out "
                  f"{index}: {json.dumps(trial)}", file=sys.stderr)  # fmt: skip
            if index >= args.warmup:
                trials.append(trial)
        server = await redis.info("server")
    finally:
        stop_workers(workers)
        await redis.aclose()
    return {
        "trials": trials,
        "versions": {
            "by-framework": importlib.metadata.version("by-framework"),
            "redis-py": importlib.metadata.version("redis"),
            "redis-server": str(server["redis_version"]),
            "python": platform.python_version(),
        },
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"byframework_group_side.py: stopped by signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run one worker until SIGTERM")
    worker.add_argument("--role", choices=("parent", "leaf"), required=True)
    worker.add_argument("--worker-id", required=True)
    runner = commands.add_parser("bench", help="start the workers, run the fan-outs")
    runner.add_argument("--members", type=int, default=100)
    runner.add_argument("--repeats", type=int, default=5)
    runner.add_argument("--warmup", type=int, default=1)
    runner.add_argument("--child-delay", type=float, default=0.0, help="seconds each leaf sleeps")
    runner.add_argument(
        "--parent-concurrency", type=int, default=50,
        help="BYAI_WORKER_CONCURRENCY of the parent worker (50 is by-framework's default)",
    )  # fmt: skip
    runner.add_argument("--leaf-concurrency", type=int, default=50)
    runner.add_argument("--collect-timeout", type=float, default=30.0)
    runner.add_argument("--timeout", type=float, default=120.0, help="seconds per fan-out")
    runner.add_argument("--log-dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "worker":
        run_worker(
            FanOutAgent if args.role == "parent" else LeafAgent,
            worker_id=args.worker_id,
            redis_host=os.environ.get("REDIS_HOST", "127.0.0.1"),
            redis_port=int(os.environ["REDIS_PORT"]),
            workspace_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "byfw-group-workspace"),
        )
        return 0
    # SIGTERM from orchestration.py (its deadline) unwinds through bench(), which stops
    # the workers.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(json.dumps(asyncio.run(bench(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
