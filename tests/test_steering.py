"""Durable steering (issue 4 §8) end to end: ``chat`` workers as subprocesses on a real
nats-server (``runners.examples.steering``).

A message sent during a run is read by that run and recorded once; with no live run it
starts one (which can park and be resumed from the stored steer); unread messages are
recorded as dropped; the inbox survives a ``kill -9`` of the worker, before and after
the message was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from storekit import isolated_settings, open_store
from workerkit import run_history, spawn_worker, spawn_worker_in, stop, wait_terminal

from eventstore.catalog import (
    CommandAsk,
    CommandAskData,
    CommandSteer,
    CommandSteerData,
    RunCompleted,
    RunCompletedData,
    RunStarted,
    RunStartedData,
)
from eventstore.envelope import Event
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from gateway.client import GatewayClient, RunNotWaitingError
from runners.steering import Inbox, route_steer, steer_run_id

CHAT = "runners.examples.steering:SteeringWorker"
WORKER_ENV = {"ack_wait": "1.5", "max_deliver": "6", "fetch_wait": "0.3"}
TIMEOUT = 60.0


@contextlib.asynccontextmanager
async def system(
    nats_url: str, workers: int = 1, environ: dict[str, str] | None = None
) -> AsyncIterator[tuple[EventStore, StoreSettings, list[subprocess.Popen[str]]]]:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        processes: list[subprocess.Popen[str]] = []
        try:
            for index in range(workers):
                processes.append(
                    spawn_worker_in(
                        settings, nats_url, CHAT, f"chat-{index}", environ or {}, **WORKER_ENV
                    )
                )
            yield store, settings, processes
        finally:
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stop(process, timeout=20)


def chat(session_id: str, run_id: str | None = None, **metadata: Any) -> CommandAsk:
    """An ask for a ``chat`` run (also names an existing run for ``wait_terminal``)."""
    return CommandAsk(
        session_id=session_id,
        run_id=run_id or f"run-{uuid.uuid4().hex[:12]}",
        agent_type="chat",
        data=CommandAskData(content="hello", metadata=metadata),
    )


async def eventually(check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll the async ``check`` until it returns something truthy (bounded in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} did not happen within {timeout}s")


async def started(store: EventStore, run_id: str) -> list[Event]:
    return [e for e in await run_history(store, run_id) if e.type == "run.started"]


def of_type(events: list[Event], event_type: str) -> list[Event]:
    return [event for event in events if event.type == event_type]


def steer_ids(events: list[Event], event_type: str) -> list[str]:
    return [e.data.steer_event_id for e in of_type(events, event_type)]  # type: ignore[attr-defined]


async def test_a_message_sent_during_a_run_is_read_by_that_run(nats_url: str) -> None:
    async with system(nats_url) as (store, settings, _workers):
        command = chat("s-live", read=1, wait_s=20)
        await store.append(command)
        await eventually(lambda: started(store, command.run_id or ""), "run start")
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            sent = await client.steer("s-live", "turn left", agent_type="chat")
        terminal = await wait_terminal(store, command, TIMEOUT)
        assert terminal.type == "run.completed", terminal
        assert terminal.data.result == {"input": "hello", "read": ["turn left"]}  # type: ignore[attr-defined]
        events = await run_history(store, command.run_id or "")
        assert steer_ids(events, "steering.injected") == [sent.event_id]
        assert steer_ids(events, "steering.dropped") == []
        # The steer joined the run: it started no run of its own.
        assert await run_history(store, steer_run_id(sent.event_id)) == []


async def test_a_message_sent_with_no_active_run_starts_one(nats_url: str) -> None:
    async with (
        system(nats_url) as (store, settings, _workers),
        GatewayClient(settings=settings, nats_url=nats_url) as client,
    ):
        sent = await client.steer("s-idle", "good morning", agent_type="chat")
        run = chat("s-idle", steer_run_id(sent.event_id))
        terminal = await wait_terminal(store, run, TIMEOUT)
        assert terminal.type == "run.completed", terminal
        assert terminal.data.result == {"input": "good morning", "read": []}  # type: ignore[attr-defined]

        # A run started by a steer parks and resumes like any other: the resume
        # reads its starting command (the stored steer) back as an ask.
        asking = await client.steer("s-idle-2", "ask:which colour?", agent_type="chat")
        run_id = steer_run_id(asking.event_id)
        for _ in range(400):
            with contextlib.suppress(RunNotWaitingError, LookupError):
                await client.reply(run_id, "blue")
                break
            await asyncio.sleep(0.05)
        terminal = await wait_terminal(store, chat("s-idle-2", run_id), TIMEOUT)
        assert terminal.type == "run.completed", terminal
        assert terminal.data.result == {"input": "blue", "read": []}  # type: ignore[attr-defined]


async def test_unread_messages_are_recorded_as_dropped(nats_url: str) -> None:
    async with system(nats_url) as (store, settings, _workers):
        command = chat("s-drop", read=1, delay_s=2.0)
        await store.append(command)
        await eventually(lambda: started(store, command.run_id or ""), "run start")
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            sent = [
                (await client.steer("s-drop", text, agent_type="chat")).event_id
                for text in ("one", "two", "three")
            ]
        terminal = await wait_terminal(store, command, TIMEOUT)
        assert terminal.type == "run.completed", terminal
        events = await run_history(store, command.run_id or "")
        injected = steer_ids(events, "steering.injected")
        dropped = steer_ids(events, "steering.dropped")
        assert len(injected) == 1
        assert len(dropped) == 2
        assert sorted(injected + dropped) == sorted(sent)
        reasons = {e.data.reason for e in of_type(events, "steering.dropped")}  # type: ignore[attr-defined]
        assert reasons == {"run_ended"}
        # Dropped before the end: the terminal event is the run's last word.
        assert events[-1].type == "run.completed"
        # The inbox is emptied.
        assert await Inbox(store, "s-drop", command.run_id or "").snapshot() == []


async def test_a_cancel_of_a_parked_run_records_its_unread_messages_as_dropped(
    nats_url: str,
) -> None:
    async with system(nats_url) as (store, settings, _workers):
        command = CommandAsk(
            session_id="s-park",
            run_id="run-parked",
            agent_type="chat",
            data=CommandAskData(content="ask:which colour?"),
        )
        await store.append(command)
        await eventually(
            lambda: of_type_async(store, "run-parked", "run.asked_user"), "the run parks"
        )
        inbox = Inbox(store, "s-park", "run-parked")
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            sent = (await client.steer("s-park", "also: green", agent_type="chat")).event_id
            # A parked run is live: the steer joins its inbox rather than starting a run.
            await eventually(inbox.snapshot, "the steer joins the parked run's inbox")
            outcome = await client.cancel("run-parked", "s-park", "changed my mind")
        assert outcome.report.cancelled == ["run-parked"]
        events = await run_history(store, "run-parked")
        assert steer_ids(events, "steering.dropped") == [sent]
        assert steer_ids(events, "steering.injected") == []
        reasons = {e.data.reason for e in of_type(events, "steering.dropped")}  # type: ignore[attr-defined]
        assert reasons == {"run_ended"}
        assert await inbox.snapshot() == []
        assert await run_history(store, steer_run_id(sent)) == []


async def of_type_async(store: EventStore, run_id: str, event_type: str) -> list[Event]:
    return of_type(await run_history(store, run_id), event_type)


async def test_the_inbox_survives_a_worker_kill(nats_url: str) -> None:
    async with system(nats_url) as (store, settings, workers):
        command = chat("s-kill", read=1, delay_s=3.0, wait_s=20)
        run_id = command.run_id or ""
        await store.append(command)
        await eventually(lambda: started(store, run_id), "run start")
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            sent = await client.steer("s-kill", "keep going", agent_type="chat")
        inbox = Inbox(store, "s-kill", run_id)
        await eventually(inbox.snapshot, "the steer joining the inbox")
        os.kill(workers[0].pid, signal.SIGKILL)  # mid-run, before the handler reads
        workers[0].wait(timeout=10)
        workers.append(spawn_worker(settings, nats_url, CHAT, "chat-1", **WORKER_ENV))
        terminal = await wait_terminal(store, command, TIMEOUT)
        assert terminal.type == "run.completed", terminal
        assert terminal.data.result == {"input": "hello", "read": ["keep going"]}  # type: ignore[attr-defined]
        events = await run_history(store, run_id)
        assert [e.worker_id for e in of_type(events, "run.started")] == ["chat-0", "chat-1"]
        assert steer_ids(events, "steering.injected") == [sent.event_id]


async def test_a_read_message_is_not_read_twice_after_a_crash(
    nats_url: str, tmp_path: Path
) -> None:
    # The worker dies after the handler read the message, before the terminal event:
    # the re-invoked handler gets the message back from the journal, recorded once.
    environ = {
        "JETLEDGER_FAULT_KILL_AT": "before_terminal",
        "JETLEDGER_FAULT_MARKER": str(tmp_path / "crashed"),
    }
    async with system(nats_url, workers=2, environ=environ) as (store, settings, _workers):
        command = chat("s-replay", read=1, wait_s=20)
        run_id = command.run_id or ""
        await store.append(command)
        await eventually(lambda: started(store, run_id), "run start")
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            sent = await client.steer("s-replay", "again?", agent_type="chat")
        terminal = await wait_terminal(store, command, TIMEOUT)
        assert (tmp_path / "crashed").exists()
        assert terminal.type == "run.completed", terminal
        assert terminal.data.result == {"input": "hello", "read": ["again?"]}  # type: ignore[attr-defined]
        events = await run_history(store, run_id)
        assert len(of_type(events, "run.started")) == 2
        assert steer_ids(events, "steering.injected") == [sent.event_id]
        assert steer_ids(events, "steering.dropped") == []


async def test_a_late_steer_is_either_dropped_or_rerouted_never_lost(nats_url: str) -> None:
    # In process, on the real broker: the run's end (Inbox.close) and a steer arriving
    # while it ends compete for the item with compare-and-sets.
    async with open_store(nats_url, isolated_settings()) as store:
        session, run_id = "s-race", f"run-{uuid.uuid4().hex[:12]}"
        envelope = {"session_id": session, "run_id": run_id, "agent_type": "chat", "worker_id": "w"}
        await store.append(RunStarted(**envelope, data=RunStartedData(attempt=1)))

        async def steer(text: str) -> tuple[CommandSteer, int]:
            command = CommandSteer(
                session_id=session, agent_type="chat", data=CommandSteerData(content=text)
            )
            result = await store.append(command)
            return command, result.seq or 0

        inbox = Inbox(store, session, run_id)
        early, seq = await steer("early")
        assert await route_steer(store, early, seq, enabled=True)  # joins the live run
        assert await route_steer(store, early, seq, enabled=True)  # a redelivery: once
        assert len(await inbox.snapshot()) == 1
        assert not await route_steer(store, early, seq, enabled=False)  # no steering class

        dropped: list[str] = []

        async def drop(value: dict[str, Any]) -> None:
            dropped.append(value["steer_event_id"])

        assert await inbox.close(set(), drop) == 1
        assert dropped == [early.id]
        assert await inbox.snapshot() == []

        # The run is closing but its terminal event is not stored yet: the steer takes
        # its item back and starts a run of its own instead.
        late, seq = await steer("late")
        assert not await route_steer(store, late, seq, enabled=True)
        assert await inbox.snapshot() == []
        assert await inbox.close(set(), drop) == 0
        assert dropped == [early.id]

        await inbox.forget()
        await store.append(RunCompleted(**envelope, data=RunCompletedData()))
        after, seq = await steer("after")
        assert not await route_steer(store, after, seq, enabled=True)  # no live run
        assert await inbox.snapshot() == []
