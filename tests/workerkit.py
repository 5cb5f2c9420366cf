"""Helpers for worker tests: workers as real subprocesses on a test's own stream, and a
minimal way to ask for runs and wait for their terminal events."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

from projectkit import store_env

from eventstore.catalog import CommandAsk, CommandAskData
from eventstore.codec import Undecodable
from eventstore.envelope import Event
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from eventstore.subjects import run_end_subject, run_filter, sys_subject


def spawn_worker(
    settings: StoreSettings, nats_url: str, worker_class: str, worker_id: str, **worker_env: str
) -> subprocess.Popen[str]:
    return spawn_worker_in(settings, nats_url, worker_class, worker_id, {}, **worker_env)


def spawn_worker_in(
    settings: StoreSettings,
    nats_url: str,
    worker_class: str,
    worker_id: str,
    environ: dict[str, str],
    **worker_env: str,
) -> subprocess.Popen[str]:
    """:func:`spawn_worker` with extra environment variables (e.g. fault injection)."""
    env = store_env(settings)
    env.update(environ)
    env.update({f"JETLEDGER_WORKER_{k.upper()}": v for k, v in worker_env.items()})
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runners",
            "--worker-class",
            worker_class,
            "--worker-id",
            worker_id,
            "--nats-url",
            nats_url,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def ask(agent_type: str, content: str, *, session_id: str = "s1", **metadata: Any) -> CommandAsk:
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    return CommandAsk(
        session_id=session_id,
        run_id=run_id,
        agent_type=agent_type,
        data=CommandAskData(content=content, metadata=metadata),
    )


async def wait_terminal(store: EventStore, command: CommandAsk, timeout: float) -> Event:
    subject = run_end_subject(command.session_id or "", command.run_id or "", store.settings.root)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        record = await store.last_on_subject(subject)
        if record is not None and not isinstance(record[1], Undecodable):
            return record[1]
        await asyncio.sleep(0.05)
    raise TimeoutError(f"run {command.run_id} did not end within {timeout}s")


async def until_workers_started(
    store: EventStore, worker_ids: set[str], timeout: float = 60.0
) -> None:
    """Wait until every worker in ``worker_ids`` announced ``worker.started`` (it does so
    just before it starts pulling), so a test that wants work shared does not hand it all
    to the first worker up while a slow machine is still starting the others."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    subject = sys_subject("worker", store.settings.root)
    while loop.time() < deadline:
        started = {
            item.worker_id
            async for _seq, item in store.read(1, subject_filter=subject)
            if not isinstance(item, Undecodable) and item.type == "worker.started"
        }
        if worker_ids <= started:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"workers {sorted(worker_ids)} did not all start within {timeout}s")


async def run_history(store: EventStore, run_id: str) -> list[Event]:
    events: list[Event] = []
    async for _seq, item in store.read(1, subject_filter=run_filter(run_id, store.settings.root)):
        if not isinstance(item, Undecodable):
            events.append(item)
    return events


def stop(process: subprocess.Popen[str], timeout: float = 15) -> int:
    """SIGTERM and wait; a worker still alive after ``timeout`` is killed (so no test
    leaves one behind) and ``TimeoutExpired`` is raised for the test to see."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        raise
