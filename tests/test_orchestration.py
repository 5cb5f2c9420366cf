"""Durable orchestration (G5) end to end: workers as subprocesses on a real nats-server.

call_agent, groups (all / race / quorum) and ask_user, each also with a ``kill -9`` at
every step boundary (``runners.faults``); replies refused when they must be; cascade
cancel of a three-level tree.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from storekit import isolated_settings, open_store
from workerkit import spawn_worker_in, stop, wait_terminal

from eventstore.catalog import (
    CommandAsk,
    CommandAskData,
    CommandResume,
    CommandResumeData,
    IngestRejected,
)
from eventstore.codec import Undecodable
from eventstore.envelope import Event
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from gateway.client import GatewayClient, RunNotWaitingError
from runners.journal import terminal_of

PLANNER = "runners.examples.orchestration:PlannerWorker"
SHARD = "runners.examples.orchestration:ShardWorker"
WORKER_ENV = {"ack_wait": "1.5", "max_deliver": "6", "fetch_wait": "0.3"}
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.dead_lettered"}
POINTS = ["before_dispatch", "after_dispatch", "after_waiting", "after_resumed", "before_terminal"]


@contextlib.asynccontextmanager
async def system(
    nats_url: str, tmp_path: Path, fault: str | None = None
) -> AsyncIterator[tuple[EventStore, StoreSettings]]:
    """Two planner and two shard workers; with ``fault``, the first process to reach that
    boundary is killed with SIGKILL (once)."""
    settings = isolated_settings()
    environ = {}
    if fault is not None:
        environ = {
            "JETLEDGER_FAULT_KILL_AT": fault,
            "JETLEDGER_FAULT_MARKER": str(tmp_path / "crashed"),
        }
    async with open_store(nats_url, settings) as store:
        workers: list[subprocess.Popen[str]] = []
        try:
            for index in range(2):
                for worker_class, name in ((PLANNER, "planner"), (SHARD, "shard")):
                    workers.append(
                        spawn_worker_in(
                            settings,
                            nats_url,
                            worker_class,
                            f"{name}-{index}",
                            environ,
                            **WORKER_ENV,
                        )
                    )
            yield store, settings
            if fault is not None:
                assert (tmp_path / "crashed").exists(), f"no process crashed at {fault}"
        finally:
            for worker in workers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stop(worker, timeout=20)


def ask(content: str, run_id: str, **metadata: Any) -> CommandAsk:
    return CommandAsk(
        session_id="s-orch",
        run_id=run_id,
        agent_type="planner",
        data=CommandAskData(content=content, metadata=metadata),
    )


async def tree_events(store: EventStore, root_run_id: str) -> list[Event]:
    events = []
    async for _seq, item in store.read(1):
        if isinstance(item, Undecodable):
            continue
        if root_run_id in (item.run_id, item.root_run_id):
            events.append(item)
    return events


async def until_child_started(store: EventStore, parent_run_id: str) -> None:
    """Wait (30 s at most) for the first child of ``parent_run_id`` to start."""
    child = f"{parent_run_id}-c0"
    for _ in range(300):
        events = await tree_events(store, parent_run_id)
        if any(e.type == "run.started" and e.run_id == child for e in events):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{child} never started")


def assert_exactly_once(events: list[Event], root_run_id: str) -> dict[str, Event]:
    """One terminal per run; every child command once per distinct child; returns the
    terminals by run id."""
    terminals: collections.Counter[str] = collections.Counter()
    ends: dict[str, Event] = {}
    for event in events:
        if event.type in TERMINAL and event.run_id:
            terminals[event.run_id] += 1
            ends[event.run_id] = event
    assert set(terminals.values()) == {1}, terminals
    asks = collections.Counter(
        e.run_id for e in events if e.type == "command.ask" and e.run_id != root_run_id
    )
    assert set(asks.values()) <= {1}, asks  # the same child command is never stored twice
    return ends


def delta_text(events: list[Event], run_id: str) -> str:
    return "".join(
        e.data.text  # type: ignore[attr-defined]
        for e in events
        if e.type == "message.delta" and e.run_id == run_id
    )


def resumed_steps(events: list[Event], run_id: str) -> list[int]:
    return [
        e.data.step  # type: ignore[attr-defined]
        for e in events
        if e.type == "run.resumed" and e.run_id == run_id
    ]


async def settle(store: EventStore, root_run_id: str, seconds: float = 1.0) -> list[Event]:
    """Read the tree after a pause (late duplicates, if any, would show up by then)."""
    await asyncio.sleep(seconds)
    return await tree_events(store, root_run_id)


@pytest.mark.parametrize("fault", [None, *POINTS])
async def test_call_agent_returns_the_childs_reply_across_crashes(
    nats_url: str, tmp_path: Path, fault: str | None
) -> None:
    async with system(nats_url, tmp_path, fault) as (store, _settings):
        # The child takes a moment, so the parent parks and a resume wakes it.
        command = ask("hello", f"call-{fault or 'clean'}", mode="call", slow_s=0.5)
        await store.append(command)
        terminal = await wait_terminal(store, command, 60)
        assert terminal.type == "run.completed", terminal
        assert terminal.data.result == {"status": "completed", "content": "hello"}  # type: ignore[attr-defined]
        events = await settle(store, command.run_id or "")
        ends = assert_exactly_once(events, command.run_id or "")
        children = [run for run in ends if run != command.run_id]
        assert children == [f"{command.run_id}-c0"]
        assert delta_text(events, command.run_id or "") == "before|after|"
        assert delta_text(events, children[0]) == "hello"
        assert resumed_steps(events, command.run_id or "") == [0]  # woken once


@pytest.mark.parametrize(
    ("strategy", "fault"),
    [("all", None), ("race", None), ("quorum:3", None)]
    + [("all", point) for point in POINTS]
    + [("quorum:3", "after_waiting"), ("race", "after_resumed")],
)
async def test_groups_keep_every_member_result(
    nats_url: str, tmp_path: Path, strategy: str, fault: str | None
) -> None:
    async with system(nats_url, tmp_path, fault) as (store, _settings):
        slow = list(range(4, 10)) if strategy != "all" else []
        command = ask(
            "doc",
            f"group-{strategy.replace(':', '')}-{fault or 'clean'}",
            mode="group",
            members=10,
            strategy=strategy,
            fail=[1],
            slow=slow,
            slow_s=20.0,
        )
        await store.append(command)
        terminal = await wait_terminal(store, command, 90)
        assert terminal.type == "run.completed", terminal
        result = terminal.data.result  # type: ignore[attr-defined]
        events = await settle(store, command.run_id or "")
        ends = assert_exactly_once(events, command.run_id or "")
        assert len(result["ok"]) == 10 and len(result["statuses"]) == 10
        if strategy == "all":
            assert result["ok"] == [None if i == 1 else f"doc#{i}" for i in range(10)]
            assert result["errors"] == 1
        else:
            needed = 1 if strategy == "race" else 3
            assert sum(status == "completed" for status in result["statuses"]) >= needed
            # The slow losers were cancelled, not left running.
            for index in slow:
                member = f"{command.run_id}-g0-m{index}"
                assert ends[member].type == "run.cancelled", ends[member]
        assert delta_text(events, command.run_id or "") == "fan-out|gathered|"
        # Members ending in the same instant still wake the parent once (collect = step 1).
        assert resumed_steps(events, command.run_id or "") == [1]


async def test_max_concurrent_bounds_live_members(nats_url: str, tmp_path: Path) -> None:
    async with system(nats_url, tmp_path) as (store, _settings):
        command = ask(
            "doc",
            "group-bounded",
            mode="group",
            members=8,
            max_concurrent=3,
            slow=list(range(8)),
            slow_s=0.3,
        )
        await store.append(command)
        terminal = await wait_terminal(store, command, 60)
        assert terminal.data.result["errors"] == 0  # type: ignore[attr-defined]
        events = await settle(store, command.run_id or "")
        live: set[str] = set()
        most = 0
        for event in events:  # in log order
            member = event.run_id or ""
            if "-g0-m" not in member:
                continue
            if event.type == "run.started":
                live.add(member)
            elif event.type in TERMINAL:
                live.discard(member)
            most = max(most, len(live))
        assert most == 3


@pytest.mark.parametrize("fault", [None, "after_resumed", "before_terminal"])
async def test_ask_user_returns_the_humans_answer(
    nats_url: str, tmp_path: Path, fault: str | None
) -> None:
    async with system(nats_url, tmp_path, fault) as (store, settings):
        command = ask("the plan", f"ask-{fault or 'clean'}", mode="ask")
        run_id = command.run_id or ""
        await store.append(command)
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            for _ in range(200):
                try:
                    sent = await client.reply(run_id, "yes")
                    break
                except (RunNotWaitingError, LookupError):  # not started / not asked yet
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the run never asked")
            assert sent.session_id == "s-orch"
            with pytest.raises(RunNotWaitingError):
                await client.reply(run_id, "no")  # a second reply to the same question
            terminal = await wait_terminal(store, command, 60)
            assert terminal.data.content == "answer: yes", terminal  # type: ignore[attr-defined]
            with pytest.raises(RunNotWaitingError, match="has ended"):
                await client.reply(run_id, "late")
        events = await settle(store, run_id)
        assert_exactly_once(events, run_id)
        assert delta_text(events, run_id) == "asking|answered|"


async def test_replies_to_runs_that_do_not_wait_are_refused(nats_url: str, tmp_path: Path) -> None:
    async with system(nats_url, tmp_path) as (store, settings):
        command = ask("x", "call-no-question", mode="call")
        await store.append(command)
        await wait_terminal(store, command, 60)
        before = await store.last_seq()
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            with pytest.raises(RunNotWaitingError, match="has ended"):
                await client.reply(command.run_id or "", "hi")
            with pytest.raises(LookupError):
                await client.reply("run-that-never-was", "hi")
        # Refusals store nothing: no reply and no rejection. (Other writes may still land:
        # the child's wake-up of its parent can arrive after the parent ended, when the
        # parent found the child's end by itself first.)
        written = [
            (record.seq, record.subject, record.item) async for record in store.records(before + 1)
        ]
        assert not [
            (seq, subject)
            for seq, subject, item in written
            if isinstance(item, Undecodable)
            or item.type == "ingest.rejected"
            or (isinstance(item, CommandResume) and item.data.reason == "user_reply")
        ], written

        # A parent waiting on a child is not waiting for a person.
        waiting = ask("x", "call-waits-on-child", mode="call", slow_s=3.0)
        await store.append(waiting)
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            for _ in range(100):
                with contextlib.suppress(LookupError, RunNotWaitingError):
                    location = await client.reply("call-waits-on-child-c0", "hi")
                    pytest.fail(f"a running child took a reply: {location}")
                events = await tree_events(store, "call-waits-on-child")
                if any(e.type == "run.waiting" for e in events):
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(RunNotWaitingError, match=r"latest step is run\.waiting"):
                await client.reply("call-waits-on-child", "hi")
            # A forged resume from a raw publisher answers nothing and is recorded as such.
            forged = CommandResume(
                session_id="s-orch",
                run_id="call-waits-on-child",
                agent_type="planner",
                data=CommandResumeData(reason="user_reply", question_id="q-nope", answer="x"),
            )
            await store.append(forged)
            terminal = await wait_terminal(store, waiting, 60)
            assert terminal.data.result["content"] == "x"  # type: ignore[attr-defined]
            rejected = [
                item
                async for _seq, item in store.read(1)
                if isinstance(item, IngestRejected)
                and "not waiting for this reply" in item.data.reason
            ]
            assert len(rejected) == 1


async def test_cancelling_the_root_cancels_the_whole_tree(nats_url: str, tmp_path: Path) -> None:
    async with system(nats_url, tmp_path) as (store, settings):
        command = ask("t", "tree-root", mode="tree", slow_s=60.0)
        run_id = command.run_id or ""
        await store.append(command)
        # Wait until all five leaves are running (the middle run is waiting on them).
        for _ in range(300):
            events = await tree_events(store, run_id)
            started = {e.run_id for e in events if e.type == "run.started"}
            if sum(1 for r in started if r and "-g0-m" in r) == 5:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the tree never reached its leaves")
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            outcome = await client.cancel(run_id, reason="stop everything")
        early = [e for e in await tree_events(store, run_id) if e.type in TERMINAL]
        assert len(outcome.report.cancelled) == 7, early  # root, middle, five leaves
        events = await settle(store, run_id, 2.0)
        ends = assert_exactly_once(events, run_id)
        assert len(ends) == 7
        assert {e.type for e in ends.values()} == {"run.cancelled"}


HOOK_PLUGINS = """
import asyncio
from pathlib import Path

from runners.plugins import Plugin, PluginManifest

LOG = Path(__file__).with_name("hooks.log")


class Broken(Plugin):
    manifest = PluginManifest(name="broken", version="1")

    async def on_call_agent_start(self, command, context, target, content):
        raise RuntimeError("broken on purpose")

    async def on_call_agent_complete(self, command, context, target, result):
        await asyncio.sleep(60)  # past the hook timeout

    async def on_task_cancel(self, command, context, reason):
        raise RuntimeError("broken on purpose")


class Recorder(Plugin):
    manifest = PluginManifest(name="recorder", version="1")

    def _record(self, *parts):
        with LOG.open("a") as log:
            log.write(" ".join(str(part) for part in parts) + "\\n")

    async def on_call_agent_start(self, command, context, target, content):
        self._record("start", command.run_id, target, content)

    async def on_call_agent_complete(self, command, context, target, result):
        self._record("complete", command.run_id, target, result.status)

    async def on_task_cancel(self, command, context, reason):
        self._record("cancel", command.run_id, context.cancelled, reason.replace(" ", "_"))


PLUGINS = [Broken(), Recorder()]
"""


def read_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def hook_lines(log: Path, wanted: int, timeout: float = 20) -> list[str]:
    lines: list[str] = []
    for _ in range(int(timeout / 0.1)):
        lines = read_lines(log)
        if len(lines) >= wanted:
            await asyncio.sleep(0.5)  # a duplicate, if any, would show up by now
            return read_lines(log)
        await asyncio.sleep(0.1)
    pytest.fail(f"expected {wanted} hook calls in {log}, got {lines}")


async def test_call_agent_and_cancel_hooks_fire_once_and_never_fail_runs(
    nats_url: str, tmp_path: Path
) -> None:
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "hooks.py").write_text(HOOK_PLUGINS)
    log = plugin_dir / "hooks.log"
    settings = isolated_settings()
    hook_env = {**WORKER_ENV, "plugin_dir": str(plugin_dir), "hook_timeout": "0.5"}
    async with open_store(nats_url, settings) as store:
        workers = [
            spawn_worker_in(settings, nats_url, PLANNER, "planner-h", {}, **hook_env),
            spawn_worker_in(settings, nats_url, SHARD, "shard-h", {}, **hook_env),
        ]
        try:
            # The child takes a moment: the parent parks, is resumed and replays the call.
            command = ask("hello", "hooks-call", mode="call", slow_s=0.5)
            await store.append(command)
            terminal = await wait_terminal(store, command, 60)
            assert terminal.type == "run.completed", terminal  # a raising, a slow hook
            events = await settle(store, "hooks-call", 0.5)
            assert resumed_steps(events, "hooks-call") == [0]  # invoked twice
            assert await hook_lines(log, 2) == [
                "start hooks-call shard hello",
                "complete hooks-call shard completed",
            ]
            log.unlink()

            waiting = ask("t", "hooks-cancel", mode="call", slow_s=60.0)
            await store.append(waiting)
            await until_child_started(store, "hooks-cancel")
            async with GatewayClient(settings=settings, nats_url=nats_url) as client:
                await client.cancel("hooks-cancel", reason="stop now")
            lines = await hook_lines(log, 3)
            # The parked parent through the command.cancel its worker took; the running
            # child on its own worker; each once.
            assert sorted(lines) == [
                "cancel hooks-cancel True stop_now",
                "cancel hooks-cancel-c0 True stop_now",
                "start hooks-cancel shard t",
            ]
        finally:
            for worker in workers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stop(worker, timeout=20)


async def test_cancel_session_finds_runs_that_never_started(nats_url: str, tmp_path: Path) -> None:
    async with system(nats_url, tmp_path) as (store, settings):
        parent = ask("t", "cs-parent", mode="call", slow_s=60.0)
        await store.append(parent)
        queued = []
        for index in range(2):  # no worker serves "nobody": these stay queued
            command = CommandAsk(
                session_id="s-orch",
                run_id=f"cs-queued-{index}",
                agent_type="nobody",
                data=CommandAskData(content="wait"),
            )
            queued.append(command)
            await store.append(command)
        elsewhere = CommandAsk(
            session_id="s-other",
            run_id="cs-elsewhere",
            agent_type="nobody",
            data=CommandAskData(content="wait"),
        )
        await store.append(elsewhere)
        await until_child_started(store, "cs-parent")
        async with GatewayClient(settings=settings, nats_url=nats_url) as client:
            cancelled = await client.cancel_session("s-orch")
            assert sorted(cancelled) == ["cs-parent", "cs-parent-c0", "cs-queued-0", "cs-queued-1"]
            assert await client.cancel_session("s-orch") == []  # nothing live is left
        for command in [parent, *queued]:
            terminal = await wait_terminal(store, command, 10)
            assert terminal.type == "run.cancelled", terminal
        assert await terminal_of(store, "s-other", "cs-elsewhere") is None
