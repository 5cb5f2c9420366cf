"""HTTP API benchmark: read latency under concurrent clients, and SSE fan-out delay.

Run by hand, not a test::

    python ops/bench/api.py [--events 100000] [--clients 50] [--requests 3000]
        [--tails 200] [--rate 500] [--seconds 10] [--timeout 900]

Starts an embedded nats-server (loopback, temporary store), fills the log with
realistic sessions from ``tests/scenario.py``, projects them into SQLite, then starts
``jetledger api`` as a subprocess and measures, from this process:

* p50 / p99 latency of ``GET /v1/sessions/{sid}/transcript`` (random session) and of
  ``GET /v1/runs?limit=50`` under ``--clients`` concurrent clients;
* ``--tails`` concurrent SSE tails of one session while ``--rate`` events/s are appended
  to it for ``--seconds``: p50 / p99 / max delay from ``append`` to delivery (each event
  carries its append time), and whether every tail got every event.

Client and server share the machine, so the figures include the client's own CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

from eventstore.catalog import MessageDelta, MessageDeltaData
from eventstore.embedded import EmbeddedNatsServer
from eventstore.envelope import Event
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from projections.backends import open_backend
from projections.projector import Projector

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from scenario import session_events  # noqa: E402 (tests/ is not a package)

log = logging.getLogger("bench.api")

FILL_BATCH = 20_000
RUNS_PER_SESSION = 12
BUSY_SESSION = "busy-session"
START_TIMEOUT = 60.0


class BenchmarkError(RuntimeError):
    """The benchmark could not measure what it set out to."""


def fill_events(total: int) -> tuple[list[Event], list[str]]:
    events: list[Event] = []
    sessions: list[str] = []
    while len(events) < total:
        session_id = f"bench-{len(sessions):05d}"
        sessions.append(session_id)
        events += [event for _run, _text, event in session_events(session_id, RUNS_PER_SESSION)]
    return events[:total], sessions


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@contextlib.asynccontextmanager
async def api_process(nats_url: str, db_url: str, log_file: Path) -> AsyncIterator[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is timed)
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "api",
            "--port",
            "0",
            "--db",
            db_url,
            "--nats-url",
            nats_url,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_file.open("w"),
        text=True,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), START_TIMEOUT)
        if not line.startswith("jetledger api: serving "):
            raise BenchmarkError(f"jetledger api did not start: {line!r}")
        yield line.strip().rsplit(" ", 1)[1]
    finally:
        process.terminate()
        process.wait(timeout=30)


async def read_latency(base: str, clients: int, requests: int, path_for: list[str]) -> list[float]:
    latencies: list[float] = []
    errors: list[str] = []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in path_for[:requests]:
        queue.put_nowait(path)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def client() -> None:
            while not queue.empty():
                path = queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await http.get(path)
                except httpx.TransportError as exc:
                    errors.append(f"{type(exc).__name__} on {path}")
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise BenchmarkError(
                        f"GET {path}: {response.status_code} {response.text[:200]}"
                    )

        await asyncio.gather(*(client() for _ in range(clients)))
    if errors:
        log.warning("%d transport errors, e.g. %s", len(errors), errors[0])
    return latencies


async def fan_out(
    base: str, store: EventStore, tails: int, rate: int, seconds: float
) -> tuple[list[float], int, int]:
    """Delays (s) of every delivery, events appended, tails that got all of them."""
    after = await store.last_seq()
    delays: list[float] = []
    counts = [0] * tails
    connected = 0
    all_connected = asyncio.Event()
    limits = httpx.Limits(max_connections=tails + 5, max_keepalive_connections=tails + 5)
    async with httpx.AsyncClient(base_url=base, timeout=None, limits=limits) as http:

        async def tail(index: int) -> None:
            nonlocal connected
            url = f"/v1/sessions/{BUSY_SESSION}/stream"
            async with http.stream("GET", url, params={"after": after}) as response:
                async for line in response.aiter_lines():
                    if line.startswith(": live tail open"):
                        connected += 1
                        if connected == tails:
                            all_connected.set()
                    elif line.startswith("data: "):
                        sent_at = float(json.loads(line[6:])["data"]["text"])
                        delays.append(time.time() - sent_at)
                        counts[index] += 1

        tasks = [asyncio.create_task(tail(i)) for i in range(tails)]
        await asyncio.wait_for(all_connected.wait(), START_TIMEOUT)
        appended = 0
        tick = 0.02
        per_tick = max(1, round(rate * tick))
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < seconds:
            for _ in range(per_tick):
                await store.append(
                    MessageDelta(
                        session_id=BUSY_SESSION,
                        run_id="busy-run",
                        data=MessageDeltaData(text=f"{time.time():.6f}", index=appended),
                    )
                )
                appended += 1
            next_tick = start + tick * (appended // per_tick)
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
        drain_until = loop.time() + 30
        while sum(counts) < appended * tails and loop.time() < drain_until:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # polling: the tails count without signalling
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    complete = sum(1 for count in counts if count == appended)
    return delays, appended, complete


async def bench(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="jl-bench-api-"))
    async with EmbeddedNatsServer(store_dir=scratch / "nats") as server:
        store = await EventStore.open(server.url, StoreSettings())
        try:
            events, sessions = fill_events(args.events)
            log.info("appending %d events in %d sessions", len(events), len(sessions))
            for start in range(0, len(events), FILL_BATCH):
                await store.append_many(events[start : start + FILL_BATCH])
            db_url = f"sqlite+aiosqlite:///{scratch}/readmodel.db"
            backend = open_backend(db_url)
            projector = Projector(store, backend)
            await projector.start()
            started = time.perf_counter()
            await projector.catch_up()
            log.info("projected in %.1fs", time.perf_counter() - started)
            await backend.activate()
            await backend.close()

            async with api_process(server.url, db_url, scratch / "api.log") as base:
                rows = []
                transcript_paths = [
                    f"/v1/sessions/{random.choice(sessions)}/transcript"
                    for _ in range(args.requests)
                ]
                runs_paths = ["/v1/runs?limit=50"] * args.requests
                for name, paths in (("transcript", transcript_paths), ("runs list", runs_paths)):
                    await read_latency(base, args.clients, args.clients * 2, paths)  # warm up
                    started = time.perf_counter()
                    latencies = await read_latency(base, args.clients, args.requests, paths)
                    elapsed = time.perf_counter() - started
                    rows.append(
                        f"{name:<11} {len(latencies):>6} req  {args.clients} clients  "
                        f"p50 {statistics.median(latencies) * 1000:7.1f} ms  "
                        f"p99 {percentile(latencies, 0.99) * 1000:7.1f} ms  "
                        f"{len(latencies) / elapsed:7.0f} req/s"
                    )
                delays, appended, complete = await fan_out(
                    base, store, args.tails, args.rate, args.seconds
                )
        finally:
            await store.close()
    print(f"events in the read model: {args.events:,} ({len(sessions)} sessions)")
    for row in rows:
        print(row)
    if delays:
        print(
            f"sse fan-out {args.tails} tails x {appended} events ({args.rate}/s for "
            f"{args.seconds:g}s): delivered {len(delays):,}/{appended * args.tails:,}, "
            f"tails complete {complete}/{args.tails}, delay p50 "
            f"{statistics.median(delays) * 1000:.1f} ms  p99 "
            f"{percentile(delays, 0.99) * 1000:.1f} ms  max {max(delays) * 1000:.1f} ms"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--tails", type=int, default=200)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(asyncio.wait_for(bench(args), args.timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
