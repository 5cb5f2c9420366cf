"""Durable timers of parked runs (``runners.timers``): JetStream message schedules.

Workers are subprocesses on a real nats-server; every timeout is 1-2 s. A parked run
holds no coroutine, so only the schedule stored in the stream can end its wait: these
tests show the timeout taking effect, exactly once, whichever worker is alive.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from storekit import isolated_settings, open_store
from workerkit import spawn_worker, spawn_worker_in, stop, wait_terminal

from eventstore.catalog import (
    CommandAsk,
    CommandAskData,
    CommandResume,
    CommandResumeData,
    IngestRejected,
    RunResumed,
)
from eventstore.codec import Undecodable
from eventstore.envelope import Event
from eventstore.provision import timer_root
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from gateway.client import GatewayClient, RunNotWaitingError
from runners.journal import terminal_of
from runners.timers import arm

PLANNER = "runners.examples.orchestration:PlannerWorker"
SHARD = "runners.examples.orchestration:ShardWorker"
WORKER_ENV = {"ack_wait": "1.5", "max_deliver": "6", "fetch_wait": "0.3"}
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.dead_lettered"}


@dataclass
class System:
    store: EventStore
    settings: StoreSettings
    nats_url: str
    workers: dict[str, subprocess.Popen[str]]


def crashed(marker: Path) -> bool:
    return marker.exists()


@contextlib.asynccontextmanager
async def system(
    nats_url: str, planners: int = 2, fault: str | None = None, marker: Path | None = None
) -> AsyncIterator[System]:
    """Planner workers and a shard worker; with ``fault``, the first process to reach that
    boundary (``runners.faults``) is killed with SIGKILL, once."""
    settings = isolated_settings()
    environ = {}
    if fault is not None and marker is not None:
        environ = {"JETLEDGER_FAULT_KILL_AT": fault, "JETLEDGER_FAULT_MARKER": str(marker)}
    async with open_store(nats_url, settings) as store:
        workers: dict[str, subprocess.Popen[str]] = {}
        try:
            for index in range(planners):
                name = f"planner-{index}"
                workers[name] = spawn_worker_in(
                    settings, nats_url, PLANNER, name, environ, **WORKER_ENV
                )
            workers["shard-0"] = spawn_worker(settings, nats_url, SHARD, "shard-0", **WORKER_ENV)
            yield System(store, settings, nats_url, workers)
            if marker is not None:
                assert crashed(marker), f"no process crashed at {fault}"
        finally:
            for worker in workers.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stop(worker, timeout=20)


def ask(run_id: str, content: str = "x", timeout_s: float | None = None, **meta: Any) -> CommandAsk:
    return CommandAsk(
        session_id="s-timers",
        run_id=run_id,
        agent_type="planner",
        data=CommandAskData(content=content, metadata=meta, timeout_s=timeout_s),
    )


async def tree(store: EventStore, root_run_id: str) -> list[Event]:
    return [
        item
        async for _seq, item in store.read(1)
        if not isinstance(item, Undecodable) and root_run_id in (item.run_id, item.root_run_id)
    ]


async def until(store: EventStore, root_run_id: str, found: Any, timeout: float = 30) -> Event:
    """Poll the tree until ``found(event)`` holds for some event; returns it."""
    for _ in range(int(timeout / 0.1)):
        for event in await tree(store, root_run_id):
            if found(event):
                return event
        await asyncio.sleep(0.1)
    pytest.fail(f"nothing matched in the tree of {root_run_id} within {timeout}s")


def one_terminal_each(events: list[Event]) -> dict[str, Event]:
    counts = collections.Counter(e.run_id for e in events if e.type in TERMINAL)
    assert set(counts.values()) == {1}, counts
    return {e.run_id or "": e for e in events if e.type in TERMINAL}


def resumes(events: list[Event], run_id: str) -> list[tuple[int, str]]:
    return [
        (e.data.step, e.data.kind)
        for e in events
        if isinstance(e, RunResumed) and e.run_id == run_id
    ]


def fired(events: list[Event], timer_id: str) -> bool:
    """Whether the server published the timer's command (the schedule fired)."""
    return any(e.type == "command.resume" and e.id == timer_id for e in events)


@pytest.mark.parametrize("fault", [None, "after_waiting", "after_resumed"])
async def test_group_timeout_returns_what_finished_and_cancels_the_rest(
    nats_url: str, tmp_path: Path, fault: str | None
) -> None:
    # after_waiting: killed before the timer is armed (the redelivery arms it);
    # after_resumed: killed after recording the timeout (the redelivery continues).
    marker = tmp_path / "crashed" if fault else None
    async with system(nats_url, fault=fault, marker=marker) as sys_:
        store = sys_.store
        command = ask(
            "grp-timeout",
            "doc",
            mode="group",
            members=4,
            slow=[2, 3],
            slow_s=60.0,
            group_timeout_s=1.5,
        )
        await store.append(command)
        terminal = await wait_terminal(store, command, 45)
        assert terminal.type == "run.completed", terminal
        result = terminal.data.result  # type: ignore[attr-defined]
        assert result["ok"] == ["doc#0", "doc#1", None, None]
        assert result["statuses"] == ["completed", "completed", "none", "none"]
        assert result["error_types"] == [None, None, "TimedOut", "TimedOut"]
        await asyncio.sleep(1.0)
        events = await tree(store, "grp-timeout")
        ends = one_terminal_each(events)
        for index in (2, 3):  # the members that never finished were cancelled, not left running
            assert ends[f"grp-timeout-g0-m{index}"].type == "run.cancelled"
        assert resumes(events, "grp-timeout") == [(1, "timeout")]
        assert fired(events, "timeout-grp-timeout-w1")
        # The parent waited at least its timeout, measured from the dispatch.
        dispatched = next(e for e in events if e.type == "group.dispatched")
        waited = (terminal.time - dispatched.time).total_seconds()
        assert 1.5 <= waited < 30, waited


async def test_ask_user_timeout_then_a_late_reply_is_refused(nats_url: str) -> None:
    async with system(nats_url) as sys_:
        store = sys_.store
        # The first question times out after 1 s; the second one waits for its reply.
        command = ask("ask-timeout", mode="ask", questions=2, ask_timeout_s=[1.0, None])
        await store.append(command)
        await until(
            store,
            "ask-timeout",
            lambda e: e.type == "run.asked_user" and e.data.question_id == "ask-timeout-q1",
        )
        before = await tree(store, "ask-timeout")
        assert resumes(before, "ask-timeout") == [(0, "timeout")]
        asked_at = next(e.time for e in before if e.type == "run.asked_user")
        timed_out_at = next(e.time for e in before if e.type == "run.resumed")
        assert (timed_out_at - asked_at).total_seconds() >= 1.0

        # A reply to the first question arriving now (a raw publisher's, which the client
        # could not send) answers nothing and is recorded as refused.
        late = CommandResume(
            id="late-reply-q0",
            session_id="s-timers",
            run_id="ask-timeout",
            agent_type="planner",
            data=CommandResumeData(reason="user_reply", question_id="ask-timeout-q0", answer="a"),
        )
        await store.append(late)
        async with GatewayClient(settings=sys_.settings, nats_url=nats_url) as client:
            rejected: list[IngestRejected] = []
            for _ in range(100):  # the refusal is an ingest.rejected system event
                rejected = [
                    item
                    async for _seq, item in store.read(1)
                    if isinstance(item, IngestRejected) and "not waiting" in item.data.reason
                ]
                if rejected:
                    break
                await asyncio.sleep(0.1)
            assert len(rejected) == 1
            await client.reply("ask-timeout", "yes")  # the open (second) question
            terminal = await wait_terminal(store, command, 30)
            assert terminal.data.content == "answer: -,yes", terminal  # type: ignore[attr-defined]
            with pytest.raises(RunNotWaitingError, match="has ended"):
                await client.reply("ask-timeout", "too late")
        events = await tree(store, "ask-timeout")
        one_terminal_each(events)
        assert resumes(events, "ask-timeout") == [(0, "timeout"), (1, "ask_user")]


async def pending_timers(store: EventStore, run_id: str) -> dict[str, int]:
    """Schedules still held for the run (by timer subject)."""
    info = await store.js.stream_info(
        store.settings.stream, subjects_filter=f"{timer_root(store.settings)}.*.{run_id}.>"
    )
    return dict(info.state.subjects or {})


async def test_answered_steps_disarm_their_timers_and_a_late_one_changes_nothing(
    nats_url: str,
) -> None:
    async with system(nats_url) as sys_:
        store = sys_.store
        command = ask("ask-first", mode="ask", questions=2, ask_timeout_s=[1.5, 30.0])
        await store.append(command)
        async with GatewayClient(settings=sys_.settings, nats_url=nats_url) as client:
            for _ in range(200):
                try:
                    await client.reply("ask-first", "first")
                    break
                except (RunNotWaitingError, LookupError):
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the run never asked")
            await until(
                store,
                "ask-first",
                lambda e: e.type == "run.asked_user" and e.data.question_id == "ask-first-q1",
            )
            # Answered in time: the first timer is gone, past its due time nothing fires.
            assert list(await pending_timers(store, "ask-first")) == [
                f"{timer_root(store.settings)}.s-timers.ask-first.w1"
            ]
            await asyncio.sleep(2.0)
            events = await tree(store, "ask-first")
            assert not any(e.id == "timeout-ask-first-w0" for e in events)
            # A timer that fires anyway (its disarm failed) changes nothing.
            # (A copy of it: the original's id is still in the dedupe window.)
            late = CommandResume(
                id="late-timeout-ask-first-w0",
                session_id="s-timers",
                run_id="ask-first",
                agent_type="planner",
                data=CommandResumeData(reason="timeout", result={"step": 0}),
            )
            await arm(store, "w0", datetime.now(UTC), late)
            await until(store, "ask-first", lambda e: e.id == late.id)
            await asyncio.sleep(1.5)  # time for a worker to take it (and change nothing)
            events = await tree(store, "ask-first")
            assert resumes(events, "ask-first") == [(0, "ask_user")]
            assert not any(e.type in TERMINAL for e in events)
            await client.reply("ask-first", "second")
            terminal = await wait_terminal(store, command, 30)
        assert terminal.data.content == "answer: first,second", terminal  # type: ignore[attr-defined]
        events = await tree(store, "ask-first")
        one_terminal_each(events)
        assert resumes(events, "ask-first") == [(0, "ask_user"), (1, "ask_user")]
        assert await pending_timers(store, "ask-first") == {}


async def test_a_cancel_of_a_parked_run_disarms_its_timers(nats_url: str) -> None:
    async with system(nats_url, planners=1) as sys_:
        store = sys_.store
        command = ask("ask-cancel", mode="ask", questions=1, ask_timeout_s=[30.0])
        await store.append(command)
        await until(store, "ask-cancel", lambda e: e.type == "run.asked_user")
        timer = f"{timer_root(store.settings)}.s-timers.ask-cancel"
        for _ in range(100):  # the schedule is stored before the ask command is acked
            if await pending_timers(store, "ask-cancel"):
                break
            await asyncio.sleep(0.05)
        assert list(await pending_timers(store, "ask-cancel")) == [f"{timer}.w0"]
        async with GatewayClient(settings=sys_.settings, nats_url=nats_url) as client:
            outcome = await client.cancel("ask-cancel", "s-timers", "not needed")
        assert outcome.report.cancelled == ["ask-cancel"]
        # Parked, no handler would disarm it: the cancel did.
        assert await pending_timers(store, "ask-cancel") == {}
        terminal = await terminal_of(store, "s-timers", "ask-cancel")
        assert terminal is not None and terminal.type == "run.cancelled"


async def test_a_killed_workers_parked_run_is_timed_out_by_another(nats_url: str) -> None:
    async with system(nats_url) as sys_:
        store = sys_.store
        command = ask(
            "grp-kill",
            "doc",
            mode="group",
            members=3,
            slow=[1, 2],
            slow_s=60.0,
            group_timeout_s=2.0,
        )
        await store.append(command)
        waiting = await until(store, "grp-kill", lambda e: e.type == "run.waiting")
        parker = waiting.worker_id or ""
        # Parked: the timer is stored in the stream before the command is acknowledged.
        timer_subject = f"{timer_root(sys_.settings)}.s-timers.grp-kill.w1"
        for _ in range(100):
            if await store.last_on_subject(timer_subject) is not None:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("no timer was armed")
        victim = sys_.workers[parker]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        terminal = await wait_terminal(store, command, 45)
        assert terminal.type == "run.completed", terminal
        result = terminal.data.result  # type: ignore[attr-defined]
        assert result["error_types"] == [None, "TimedOut", "TimedOut"]
        events = await tree(store, "grp-kill")
        one_terminal_each(events)
        resumed = [e for e in events if isinstance(e, RunResumed)]
        assert [(e.data.step, e.data.kind) for e in resumed] == [(1, "timeout")]
        survivor = next(
            name for name in sys_.workers if name.startswith("planner") and name != parker
        )
        assert resumed[0].worker_id == survivor
        assert terminal.worker_id == survivor


async def test_a_parked_runs_deadline_fails_it_and_cancels_its_subtree(nats_url: str) -> None:
    async with system(nats_url) as sys_:
        store = sys_.store
        command = ask("deadline", "slow child", timeout_s=1.5, mode="call", slow_s=60.0)
        await store.append(command)
        terminal = await wait_terminal(store, command, 45)
        assert terminal.type == "run.failed", terminal
        assert terminal.data.code == "timeout"  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)
        events = await tree(store, "deadline")
        ends = one_terminal_each(events)
        assert ends["deadline-c0"].type == "run.cancelled"
        assert any(e.type == "run.waiting" for e in events)  # it was parked, not running
        started = next(e.time for e in events if e.type == "run.started")
        assert (terminal.time - started).total_seconds() >= 1.5


async def test_call_agent_timeout_ends_the_wait_on_a_child_that_never_starts(
    nats_url: str,
) -> None:
    async with system(nats_url, planners=1) as sys_:
        store = sys_.store
        # No worker serves "nobody": only the parent's timer can end this wait.
        command = ask("call-timeout", mode="call", call_target="nobody", call_timeout_s=1.0)
        await store.append(command)
        terminal = await wait_terminal(store, command, 45)
        assert terminal.type == "run.completed", terminal
        assert terminal.data.result == {"status": "timed_out", "content": None}  # type: ignore[attr-defined]
        events = await tree(store, "call-timeout")
        one_terminal_each(events)
        # The queued child was ended, so it cannot start later (it never wrote an event
        # of its own, hence the direct read of its terminal subject).
        child_end = await terminal_of(store, "s-timers", "call-timeout-c0")
        assert child_end is not None and child_end.type == "run.cancelled", child_end
        assert resumes(events, "call-timeout") == [(0, "timeout")]
