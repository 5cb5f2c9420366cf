"""The worker registry and admin, with workers as real subprocesses: one lease per worker
id, held through a SIGTERM drain; suspend / resume / evict on the worker's own subject;
direct routing; the list of live workers."""

from __future__ import annotations

import asyncio
import signal
import subprocess

from storekit import isolated_settings, open_store
from workerkit import ask, run_history, spawn_worker, stop, wait_terminal

from eventstore.catalog import CommandWorker, CommandWorkerData
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from runners.registry import ActiveWorker, get_active_workers, lease_key

ECHO = "runners.examples.echo:EchoWorker"
FLAKY = "runners.examples.flaky:FlakyWorker"


def spawn(settings: StoreSettings, nats_url: str, cls: str, worker_id: str, **env: str):  # type: ignore[no-untyped-def]
    env.setdefault("lease_ttl", "3")
    env.setdefault("ack_wait", "1")
    env.setdefault("fetch_wait", "0.5")
    return spawn_worker(
        settings, nats_url, cls, worker_id, registry_bucket=settings.kv_buckets[0], **env
    )


async def live(store: EventStore, agent_type: str | None = None) -> list[ActiveWorker]:
    return await get_active_workers(store.blobs, store.settings.kv_buckets[0], agent_type)


async def wait_for_lease(
    store: EventStore, worker_id: str, pid: int, timeout: float = 15, *, suspended: bool = False
) -> ActiveWorker:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for worker in await live(store):
            if (worker.worker_id, worker.pid, worker.suspended) == (worker_id, pid, suspended):
                return worker
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no live lease for {worker_id} (pid {pid}, suspended={suspended})")


async def lease_exists(store: EventStore, worker_id: str) -> bool:
    entry = await store.blobs.kv_get(store.settings.kv_buckets[0], lease_key(worker_id))
    return entry is not None


async def wait_started(store: EventStore, run_id: str, timeout: float = 15) -> None:
    for _ in range(int(timeout / 0.05)):
        if any(e.type == "run.started" for e in await run_history(store, run_id)):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"run {run_id} did not start")


def admin(action: str, worker_id: str) -> CommandWorker:
    return CommandWorker(
        session_id="admin",
        data=CommandWorkerData(action=action, target_worker_id=worker_id),  # type: ignore[arg-type]
    )


async def exit_code(process: subprocess.Popen[str], timeout: float = 15) -> int:
    return await asyncio.to_thread(process.wait, timeout)


async def test_duplicate_worker_id_is_refused_until_the_holder_stops(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        first = spawn(settings, nats_url, FLAKY, "dup")
        try:
            await wait_for_lease(store, "dup", first.pid)
            second = spawn(settings, nats_url, FLAKY, "dup")
            assert await exit_code(second) != 0
            stderr = second.stderr.read() if second.stderr else ""
            assert f"'dup' is already held by pid {first.pid}" in stderr, stderr[-2000:]
            assert first.poll() is None
        finally:
            assert stop(first) == 0
        assert not await lease_exists(store, "dup")
        third = spawn(settings, nats_url, FLAKY, "dup")
        try:
            await wait_for_lease(store, "dup", third.pid)
        finally:
            assert stop(third) == 0


async def test_sigterm_drains_the_run_and_holds_the_lease_until_the_end(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        worker = spawn(settings, nats_url, FLAKY, "drainer", lease_ttl="2")
        try:
            await wait_for_lease(store, "drainer", worker.pid)
            command = ask("flaky", "slow", sleep=5.0)
            await store.append(command)
            await wait_started(store, command.run_id or "")
            worker.send_signal(signal.SIGTERM)
            # Well past the 2 s TTL: only a heartbeat that runs through the drain keeps it.
            for _ in range(7):
                await asyncio.sleep(0.5)
                assert worker.poll() is None, "the worker exited before its run finished"
                assert await lease_exists(store, "drainer")
            assert await exit_code(worker) == 0
            terminal = await wait_terminal(store, command, 5)
            assert terminal.type == "run.completed" and terminal.worker_id == "drainer"
            assert not await lease_exists(store, "drainer")
        finally:
            stop(worker)


async def test_suspend_resume_and_evict(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        worker = spawn(settings, nats_url, FLAKY, "adm")
        try:
            await wait_for_lease(store, "adm", worker.pid)
            await store.append(admin("suspend", "adm"))
            await wait_for_lease(store, "adm", worker.pid, suspended=True)
            await asyncio.sleep(1.0)  # a pull already under way ends within fetch_wait
            waiting = ask("flaky", "wait for resume")
            await store.append(waiting)
            # Direct routing still works while suspended.
            plain = ask("flaky", "direct")
            direct = plain.model_copy(
                update={"data": plain.data.model_copy(update={"target_worker_id": "adm"})}
            )
            await store.append(direct)
            assert (await wait_terminal(store, direct, 15)).worker_id == "adm"
            await asyncio.sleep(1.5)
            assert await run_history(store, waiting.run_id or "") == []
            await store.append(admin("resume", "adm"))
            terminal = await wait_terminal(store, waiting, 15)
            assert terminal.type == "run.completed" and terminal.worker_id == "adm"
            await store.append(admin("evict", "adm"))
            assert await exit_code(worker) == 0
            assert not await lease_exists(store, "adm")
        finally:
            stop(worker)


async def test_a_suspended_workers_work_goes_to_another_worker(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        idle = spawn(settings, nats_url, FLAKY, "idle")
        try:
            await wait_for_lease(store, "idle", idle.pid)
            await store.append(admin("suspend", "idle"))
            await wait_for_lease(store, "idle", idle.pid, suspended=True)
            await asyncio.sleep(1.0)
            command = ask("flaky", "someone else")
            await store.append(command)
            busy = spawn(settings, nats_url, FLAKY, "busy")
            try:
                assert (await wait_terminal(store, command, 20)).worker_id == "busy"
            finally:
                assert stop(busy) == 0
        finally:
            assert stop(idle) == 0


async def test_get_active_workers_lists_live_workers(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        echo = spawn(settings, nats_url, ECHO, "e.1")  # an id that needs encoding
        flaky = spawn(settings, nats_url, FLAKY, "f1")
        try:
            await wait_for_lease(store, "e.1", echo.pid)
            await wait_for_lease(store, "f1", flaky.pid)
            workers = await live(store)
            assert {(w.worker_id, w.agent_types) for w in workers} == {
                ("e.1", ("echo",)),
                ("f1", ("flaky",)),
            }
            assert [w.worker_id for w in await live(store, "echo")] == ["e.1"]
            assert await live(store, "nobody") == []
        finally:
            assert stop(flaky) == 0
        assert [w.worker_id for w in await live(store)] == ["e.1"]
        assert stop(echo) == 0
        assert await live(store) == []
