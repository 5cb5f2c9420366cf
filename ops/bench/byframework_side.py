"""The by-framework half of ``dispatch.py``; run by by-framework's own Python 3.12 venv.

by-framework is used only as an installed package (``pip install by-framework==0.2.1
redis==7.4.0``); nothing of it is copied here. Two subcommands::

    python byframework_side.py worker --worker-id w1        # one echo worker (run_worker)
    python byframework_side.py bench --rtt-runs 2000 --throughput-runs 20000 --log-dir DIR

``bench`` starts two ``worker`` subprocesses against ``$REDIS_HOST:$REDIS_PORT``, runs the
two workloads through by-framework's ``GatewayClient`` and prints one JSON object on
stdout: the round-trip latencies in seconds and the throughput figures. Its workers are
killed on the way out, whatever happens.

What the client "sees" is what by-framework 0.2.1 offers a client: the session's data
stream (``RedisKeys.session_data_stream``), read with ``XREAD BLOCK`` on the client's
own connection; 0.2.1 has no ``read_data_messages`` helper yet.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from by_framework import (
    AgentContext,
    AgentState,
    GatewayClient,
    GatewayWorker,
    RedisKeys,
    WorkerRegistry,
    init_redis,
    run_worker,
)

AGENT_TYPE = "bench_echo"
ANSWER_DELTA = "answerDelta"
END_OF_STREAM = "appStreamResponse"
CHUNKS = 3
WORKER_IDS = ("bfw1", "bfw2")
WORKER_CONCURRENCY = 64
SEND_WINDOW = 200
THROUGHPUT_SESSIONS = 100
WORKER_READY_SECONDS = 30.0
RUN_TIMEOUT = 10.0


class BenchmarkError(Exception):
    """A worker did not come up, a send failed, or a run did not finish in time."""


class EchoAgent(GatewayWorker):
    """Streams its input back in three chunks, then returns it (the echo of ``dispatch.py``)."""

    def get_agent_types(self) -> list[str]:
        return [AGENT_TYPE]

    async def process_command(self, command: Any, context: AgentContext) -> dict[str, str]:
        text = str(command.content)
        size = max(1, -(-len(text) // CHUNKS))
        for start in range(0, len(text), size):
            await context.emit_chunk(text[start : start + size])
        # Upper case: a lower-case "completed" (as in the README's quick start) is not a
        # terminal state to 0.2.1, so no end-of-stream marker would follow.
        return {"status": AgentState.COMPLETED.value, "content": text}


# -- the data streams the client follows --------------------------------------------------


@dataclass(slots=True)
class SessionFollower:
    """Reads the data streams of some sessions from their current end, in one loop.

    ``first_delta[message_id]`` and ``ended[message_id]`` hold the ``perf_counter`` at
    which the client saw a run's first ``answerDelta`` and its end-of-stream marker.
    """

    redis: Any
    session_ids: Sequence[str]
    first_delta: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    expected: int = 0
    all_ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> asyncio.Task[None]:
        """Take each stream's current end as the start, then read in a task of its own.

        Explicit ids, not ``$``: ``$`` would skip whatever reaches a stream between two
        ``XREAD`` calls that returned entries of other streams only.
        """
        positions = {}
        for session_id in self.session_ids:
            key = RedisKeys.session_data_stream(session_id)
            last = await self.redis.xrevrange(key, count=1)
            positions[key] = last[0][0] if last else "0-0"
        return asyncio.create_task(self.run(positions))

    async def run(self, positions: dict[str, str]) -> None:
        while True:
            replies = await self.redis.xread(positions, count=1000, block=1000)
            now = time.perf_counter()
            for stream, entries in replies or ():
                for entry_id, fields in entries:
                    positions[stream] = entry_id
                    self._note(json.loads(fields["data"]), now)

    def _note(self, message: dict[str, Any], now: float) -> None:
        message_id = message.get("message_id", "")
        event_type = message.get("event_type")
        if event_type == ANSWER_DELTA:
            self.first_delta.setdefault(message_id, now)
        elif event_type == END_OF_STREAM:
            self.ended.setdefault(message_id, now)
            if self.expected and len(self.ended) >= self.expected:
                self.all_ended.set()
            waiter = self.waiters.pop(message_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


async def send(client: GatewayClient, session_id: str, content: str) -> str:
    response = await client.send_message(
        target_agent_type=AGENT_TYPE, session_id=session_id, content=content
    )
    if not response.success:
        raise BenchmarkError(f"send_message failed: {response.error_code} {response.error}")
    return str(response.message_id)


async def round_trips(client: GatewayClient, redis: Any, runs: int, warmup: int) -> list[float]:
    """Sequential runs: send, then wait for the end marker before the next send."""
    follower = SessionFollower(redis, ["rtt"])
    reader = await follower.start()
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        for index in range(warmup + runs):
            started = time.perf_counter()
            # The waiter is registered after the send returns, so check `ended` as well.
            message_id = await send(client, "rtt", f"echo {index:06d} round trip")
            waiter: asyncio.Future[None] = loop.create_future()
            follower.waiters[message_id] = waiter
            if message_id not in follower.ended:
                await asyncio.wait_for(waiter, RUN_TIMEOUT)
            if index >= warmup:
                latencies.append(follower.first_delta[message_id] - started)
    finally:
        reader.cancel()
    return latencies


async def throughput(client: GatewayClient, redis: Any, runs: int, timeout: float) -> float:
    """Seconds from the first send to the last end-of-stream marker of ``runs`` runs."""
    sessions = [f"tp{index}" for index in range(THROUGHPUT_SESSIONS)]
    follower = SessionFollower(redis, sessions, expected=runs)
    reader = await follower.start()
    window = asyncio.Semaphore(SEND_WINDOW)
    sent: list[str] = []

    async def send_one(index: int) -> None:
        async with window:
            sent.append(await send(client, sessions[index % len(sessions)], f"echo {index:06d}"))

    try:
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(send_one(index) for index in range(runs)))
            await follower.all_ended.wait()
        missing = set(sent) - set(follower.ended)
        if missing:
            raise BenchmarkError(f"{len(missing)} runs never ended, e.g. {sorted(missing)[0]}")
        return max(follower.ended[message_id] for message_id in sent) - started
    finally:
        reader.cancel()


# -- workers -------------------------------------------------------------------------------


def start_workers(log_dir: Path) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "BYAI_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY)}
    workers = []
    for worker_id in WORKER_IDS:
        with (log_dir / f"byfw-{worker_id}.log").open("wb") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "worker", "--worker-id", worker_id],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            )
    return workers


def stop_workers(workers: Iterable[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(5.0)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5.0)


async def wait_for_workers(redis: Any, workers: Sequence[subprocess.Popen[bytes]]) -> None:
    """Until every worker holds its online lease (the registry key ``send_message`` checks)."""
    deadline = time.monotonic() + WORKER_READY_SECONDS
    keys = [f"byai_gateway:registry:worker:online:{worker_id}" for worker_id in WORKER_IDS]
    while time.monotonic() < deadline:
        dead = [worker.args for worker in workers if worker.poll() is not None]
        if dead:
            raise BenchmarkError(f"a by-framework worker exited at start-up: {dead[0]}")
        if all(await asyncio.gather(*(redis.exists(key) for key in keys))):
            return
        await asyncio.sleep(0.1)
    raise BenchmarkError(f"by-framework workers not online within {WORKER_READY_SECONDS}s")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    host = os.environ.get("REDIS_HOST", "127.0.0.1")
    port = int(os.environ["REDIS_PORT"])
    redis = init_redis(host=host, port=port)
    client = GatewayClient(redis_client=redis, registry=WorkerRegistry(redis_client=redis))
    workers = start_workers(Path(args.log_dir))
    try:
        await wait_for_workers(redis, workers)
        await asyncio.sleep(1.0)  # both consumers join the group before traffic starts
        latencies = await round_trips(client, redis, args.rtt_runs, args.warmup)
        seconds = await throughput(client, redis, args.throughput_runs, args.timeout)
        server = await redis.info("server")
    finally:
        stop_workers(workers)
        await redis.aclose()
    return {
        "rtt_seconds": latencies,
        "throughput_runs": args.throughput_runs,
        "throughput_seconds": seconds,
        "versions": {
            "by-framework": importlib.metadata.version("by-framework"),
            "redis-py": importlib.metadata.version("redis"),
            "redis-server": str(server["redis_version"]),
            "python": platform.python_version(),
        },
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"byframework_side.py: stopped by signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run one echo worker until SIGTERM")
    worker.add_argument("--worker-id", required=True)
    runner = commands.add_parser("bench", help="start two workers, run both workloads")
    runner.add_argument("--rtt-runs", type=int, default=2000)
    runner.add_argument("--throughput-runs", type=int, default=20000)
    runner.add_argument("--warmup", type=int, default=20)
    runner.add_argument("--timeout", type=float, default=300.0)
    runner.add_argument("--log-dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "worker":
        run_worker(
            EchoAgent,
            worker_id=args.worker_id,
            redis_host=os.environ.get("REDIS_HOST", "127.0.0.1"),
            redis_port=int(os.environ["REDIS_PORT"]),
            workspace_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "byfw-bench-workspace"),
        )
        return 0
    # SIGTERM from dispatch.py (its deadline) unwinds through bench(), which stops the workers.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(json.dumps(asyncio.run(bench(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
