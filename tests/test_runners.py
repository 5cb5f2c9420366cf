"""Workers as real subprocesses against a real nats-server: competing consumers, kill -9,
in-progress acks, zombies, poison commands and garbage (G1, G2, G6)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal

import pytest
from storekit import isolated_settings, open_store
from workerkit import ask, run_history, spawn_worker, stop, until_workers_started, wait_terminal

from eventstore.catalog import CommandAsk, CommandAskData, IngestRejected
from eventstore.codec import Undecodable
from eventstore.subjects import sys_subject
from gateway.client import GatewayClient

ECHO = "runners.examples.echo:EchoWorker"
FLAKY = "runners.examples.flaky:FlakyWorker"
SHARD = "runners.examples.orchestration:ShardWorker"
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.dead_lettered"}


async def terminals_by_run(store, run_ids):  # type: ignore[no-untyped-def]
    counts: collections.Counter[str] = collections.Counter()
    workers: collections.Counter[str] = collections.Counter()
    async for _seq, item in store.read(1):
        if isinstance(item, Undecodable) or item.run_id not in run_ids:
            continue
        if item.type in TERMINAL:
            counts[item.run_id] += 1
            workers[item.worker_id or ""] += 1
    return counts, workers


async def test_two_workers_share_200_runs_each_ending_once(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        workers = [
            spawn_worker(settings, nats_url, ECHO, f"w{i}", max_concurrency="4") for i in range(2)
        ]
        try:
            await until_workers_started(store, {"w0", "w1"})
            commands = [ask("echo", f"hello {i}") for i in range(200)]
            assert all(r.ok for r in await store.append_many(commands))
            for command in commands:
                terminal = await wait_terminal(store, command, 60)
                assert terminal.type == "run.completed"
            counts, by_worker = await terminals_by_run(store, {c.run_id for c in commands})
            assert set(counts.values()) == {1} and len(counts) == 200
            assert set(by_worker) == {"w0", "w1"}, by_worker
            # The handler starts before run.started is acknowledged, yet the log keeps
            # run.started ahead of every output of its run.
            first_of_run: dict[str, str] = {}
            async for _seq, item in store.read(1):
                if not isinstance(item, Undecodable | CommandAsk) and item.run_id:
                    first_of_run.setdefault(item.run_id, item.type)
            assert len(first_of_run) == 200
            assert set(first_of_run.values()) == {"run.started"}, first_of_run
        finally:
            assert stop(workers[0]) == 0 and stop(workers[1]) == 0


async def test_kill_9_mid_run_finishes_on_the_other_worker(nats_url: str) -> None:
    settings = isolated_settings()
    env = {"ack_wait": "1.5", "max_deliver": "3"}
    async with open_store(nats_url, settings) as store:
        victim = spawn_worker(settings, nats_url, FLAKY, "victim", **env)
        await asyncio.sleep(1.5)  # the victim is up and fetching
        command = ask("flaky", "slow", sleep=2.0)
        await store.append(command)
        for _ in range(100):
            history = await run_history(store, command.run_id or "")
            if any(e.type == "run.started" for e in history):
                break
            await asyncio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        survivor = spawn_worker(settings, nats_url, FLAKY, "survivor", **env)
        try:
            terminal = await wait_terminal(store, command, 30)
            assert terminal.type == "run.completed" and terminal.worker_id == "survivor"
            history = await run_history(store, command.run_id or "")
            assert [e.type for e in history].count("run.started") == 2
            assert sum(e.type in TERMINAL for e in history) == 1
        finally:
            assert stop(survivor) == 0


async def test_a_long_run_is_not_redelivered_while_its_worker_lives(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        workers = [spawn_worker(settings, nats_url, FLAKY, f"w{i}", ack_wait="1") for i in range(2)]
        try:
            command = ask("flaky", "long", sleep=3.5)  # > 3x the ack wait
            await store.append(command)
            terminal = await wait_terminal(store, command, 30)
            assert terminal.type == "run.completed"
            history = await run_history(store, command.run_id or "")
            assert [e.type for e in history].count("run.started") == 1
        finally:
            for worker in workers:
                assert stop(worker) == 0


async def test_zombie_terminal_publish_is_refused(nats_url: str) -> None:
    settings = isolated_settings()
    env = {"ack_wait": "1", "max_deliver": "3"}
    async with open_store(nats_url, settings) as store:
        zombie = spawn_worker(settings, nats_url, FLAKY, "zombie", **env)
        await asyncio.sleep(1.5)
        command = ask("flaky", "stall", sleep=1.0)
        await store.append(command)
        for _ in range(100):
            if any(e.type == "run.started" for e in await run_history(store, command.run_id or "")):
                break
            await asyncio.sleep(0.05)
        os.kill(zombie.pid, signal.SIGSTOP)
        other = spawn_worker(settings, nats_url, FLAKY, "other", **env)
        try:
            terminal = await wait_terminal(store, command, 30)
            assert terminal.worker_id == "other"
            os.kill(zombie.pid, signal.SIGCONT)
            await asyncio.sleep(2.0)  # the zombie wakes, finishes its sleep, is refused
            history = await run_history(store, command.run_id or "")
            assert sum(e.type in TERMINAL for e in history) == 1
            assert not any(e.worker_id == "zombie" and e.type in TERMINAL for e in history)
        finally:
            os.kill(zombie.pid, signal.SIGCONT)
            stop(zombie)
            assert stop(other) == 0


async def test_poison_is_dead_lettered_and_others_go_on(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        worker = spawn_worker(settings, nats_url, FLAKY, "w", max_deliver="3", retry_delay="0.2")
        try:
            poison = ask("flaky", "poison", fail="retryable")
            fine = [ask("flaky", f"ok {i}") for i in range(5)]
            await store.append_many([poison, *fine])
            terminal = await wait_terminal(store, poison, 30)
            assert terminal.type == "run.dead_lettered"
            assert terminal.data.attempts == 3  # type: ignore[attr-defined]
            assert "flaky failure" in terminal.data.last_error.message  # type: ignore[attr-defined]
            for command in fine:
                assert (await wait_terminal(store, command, 30)).type == "run.completed"
            fatal = ask("flaky", "fatal", fail="fatal")
            await store.append(fatal)
            failed = await wait_terminal(store, fatal, 30)
            assert failed.type == "run.failed" and failed.data.retryable is False  # type: ignore[attr-defined]
        finally:
            assert stop(worker) == 0


async def test_garbage_on_ctrl_is_rejected_and_the_worker_keeps_serving(nats_url: str) -> None:
    settings = isolated_settings()
    root = settings.root
    async with open_store(nats_url, settings) as store:
        worker = spawn_worker(settings, nats_url, ECHO, "w")
        try:
            subject = f"{root}.ctrl.agent_type.echo"
            for body in (
                b"not json",
                b'{"type": "command.ask"}',
                b'{"type": "run.completed"}',
                b'{"type": "command.ask", "session_id": "s", "agent_type": "echo", '
                b'"run_id": "../../etc", "data": {"content": 5}}',
            ):
                await store.js.publish(subject, body)
            # a 2 MB body from a raw client: the server refuses it and drops that client
            host, port = nats_url.removeprefix("nats://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            await reader.readline()  # INFO
            big = b"x" * (2 * 1024 * 1024)
            writer.write(b'CONNECT {"verbose":false}\r\n')
            writer.write(f"PUB {subject} {len(big)}\r\n".encode() + big + b"\r\n")
            try:
                # The server answers -ERR and closes, often before it read all 2 MB: our
                # write may then be reset. Either way that client is refused.
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(4096), 10)
                assert b"-ERR" in answer and b"Payload" in answer
            except ConnectionResetError:
                pass
            writer.close()
            # hostile ids are escaped into subject tokens and run like any other
            hostile = CommandAsk(
                session_id="s p a c e.s",
                run_id="../.. *>",
                agent_type="echo",
                data=CommandAskData(content="hostile ids"),
            )
            command = ask("echo", "still here")
            await store.append_many([hostile, command])
            assert (await wait_terminal(store, command, 30)).type == "run.completed"
            assert (await wait_terminal(store, hostile, 30)).type == "run.completed"
            rejected = []
            async for _seq, item in store.read(1, subject_filter=sys_subject("rejected", root)):
                if isinstance(item, IngestRejected):
                    rejected.append(item)
            assert len(rejected) == 4 and all(r.data.reason for r in rejected)
        finally:
            assert stop(worker) == 0


async def test_backoff_replaces_ack_wait_without_redelivering_live_runs(nats_url: str) -> None:
    """JetStream uses BackOff delays instead of AckWait: a live 3 s run must still get its
    in-progress acks in time (no second start), and a killed worker's run comes back after
    the first delay (1 s), not after the 30 s ack wait."""
    settings = isolated_settings()
    env = {"ack_wait": "30", "backoff": "1,1,1", "max_deliver": "4"}
    async with open_store(nats_url, settings) as store:
        victim = spawn_worker(settings, nats_url, FLAKY, "victim", **env)
        try:
            info = None
            for _ in range(100):
                with contextlib.suppress(Exception):
                    info = await store.js.consumer_info(settings.stream, "jl-agent-flaky")
                    break
                await asyncio.sleep(0.1)
            assert info is not None and list(info.config.backoff or []) == [1.0, 1.0, 1.0]
            live = ask("flaky", "live", sleep=3.0)
            await store.append(live)
            terminal = await wait_terminal(store, live, 30)
            assert terminal.type == "run.completed"
            history = await run_history(store, live.run_id or "")
            assert [e.type for e in history].count("run.started") == 1, history

            doomed = ask("flaky", "doomed", sleep=2.0)
            await store.append(doomed)
            for _ in range(100):
                if any(
                    e.type == "run.started" for e in await run_history(store, doomed.run_id or "")
                ):
                    break
                await asyncio.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            killed_at = asyncio.get_running_loop().time()
            survivor = spawn_worker(settings, nats_url, FLAKY, "survivor", **env)
            try:
                terminal = await wait_terminal(store, doomed, 25)
                assert terminal.type == "run.completed"
                assert asyncio.get_running_loop().time() - killed_at < 20  # not the 30 s ack wait
            finally:
                assert stop(survivor) == 0
        finally:
            if victim.poll() is None:
                stop(victim)


async def test_a_cancel_before_the_end_watch_starts_still_reaches_the_handler(
    nats_url: str,
) -> None:
    # The worker follows a run's .end subject only after cancel_watch_delay (here 1 s);
    # a cancel written before that is read when the watch starts, not missed.
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        worker = spawn_worker(
            settings, nats_url, SHARD, "w-watch", cancel_watch_delay="1.0", ack_wait="5"
        )
        try:
            command = ask("shard", "watched", slow_s=30)  # wait_cancelled(30) in the handler
            await store.append(command)
            run_id = command.run_id or ""
            for _ in range(200):
                if any(e.type == "run.started" for e in await run_history(store, run_id)):
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the run never started")
            async with GatewayClient(settings=settings, nats_url=nats_url) as client:
                await client.cancel_task(run_id, session_id="s1", agent_type="shard")
            loop = asyncio.get_running_loop()
            cancelled_at = loop.time()
            for _ in range(100):  # the woken handler emits its text, then returns
                events = await run_history(store, run_id)
                if any(e.type == "message.delta" for e in events):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"the handler never saw the cancel: {[e.type for e in events]}")
            assert loop.time() - cancelled_at < 3.0
            ends = [e for e in events if e.type in TERMINAL]
            assert [e.type for e in ends] == ["run.cancelled"]  # its completion was refused
        finally:
            stop(worker)
