"""The real by-framework 0.2.1 package, unmodified, against real Redis and the adapter.

Workers are started as by-framework's README says (``python -m by_framework
--worker-class ...``) from its own Python 3.12 venv (see :mod:`tests.byfwkit`); the client
side uses by-framework's ``ByaiGatewayClient``. Real Redis runs on a dedicated DB number
(``BYFW_REDIS_DB``) that these tests flush, never another test's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from byfwkit import ByframeworkApps, ByframeworkUnavailable, byframework_python
from projectkit import read_model, sqlite_url
from respkit import adapter_settings, start_adapter

from gateway.resp.server import RespServer
from projections.projector import Projector
from projections.rows import EventRow

REDIS_PORT = 6379
BYFW_REDIS_DB = 11
ADAPTER_ACK_WAIT = 30.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def byfw_python() -> Path:
    try:
        return byframework_python()
    except ByframeworkUnavailable as error:
        pytest.skip(str(error))


@pytest.fixture
def real_redis_apps(
    byfw_python: Path, tmp_path: Path
) -> Iterator[tuple[ByframeworkApps, redis.Redis]]:
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=BYFW_REDIS_DB)
    client.flushdb()
    apps = ByframeworkApps(byfw_python, REDIS_PORT, BYFW_REDIS_DB, tmp_path)
    try:
        yield apps, client
    finally:
        apps.stop()
        client.flushdb()
        client.close()


def event_types(answer: dict[str, object]) -> list[str]:
    entries = answer["entries"]
    assert isinstance(entries, list)
    return [entry["event_type"] for entry in entries]


def contents(answer: dict[str, object]) -> list[str]:
    entries = answer["entries"]
    assert isinstance(entries, list)
    return [entry["content"] for entry in entries]


def check_echo(apps: ByframeworkApps, client: redis.Redis) -> dict[str, object]:
    apps.start_worker("EchoWorker", "echo-1")
    apps.wait_online(client, ["echo-1"])
    answer = apps.scenario("echo", "sess-echo")
    assert event_types(answer) == ["answerDelta", "answerDelta", "finalAnswer", "appStreamResponse"]
    assert "".join(contents(answer)[:2]) == "hello jetledger"
    ids = answer["entry_ids"]
    assert isinstance(ids, list)
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    return answer


def check_scenarios(apps: ByframeworkApps, client: redis.Redis) -> dict[str, dict[str, object]]:
    """A -> B -> A resume, ask_user then RESUME, cancel of a running task, plugin reload."""
    apps.start_worker("EchoWorker", "echo-1")
    apps.start_worker("ScenarioWorker", "scn-1")
    apps.wait_online(client, ["echo-1", "scn-1"])
    answers: dict[str, dict[str, object]] = {}

    called = apps.scenario("call_agent", "sess-call")
    assert "callee saw from caller: ping" in contents(called)
    assert "caller resumed with callee:from caller: ping" in contents(called)
    assert event_types(called)[-1] == "appStreamResponse"
    answers["call_agent"] = called

    asked = apps.scenario("ask_user", "sess-ask")
    assert next(e["content_type"] for e in asked["entries"]) == "3013"  # type: ignore[attr-defined]
    assert "user said staging" in contents(asked)
    assert event_types(asked)[-1] == "appStreamResponse"
    answers["ask_user"] = asked

    cancelled = apps.scenario("cancel", "sess-cancel")
    assert cancelled["cancel"] == {"success": True, "status": "CANCEL_REQUESTED"}
    ticks = [c for c in contents(cancelled) if c.startswith("tick ")]
    assert 3 <= len(ticks) < 50, "the sleeper must stop soon after the cancel"
    assert "finalAnswer" not in event_types(cancelled)
    answers["cancel"] = cancelled

    reloaded = apps.scenario("reload", "sess-reload")
    acks = reloaded["acks"]
    assert isinstance(acks, list)
    assert [(ack["worker_id"], ack["status"]) for ack in acks] == [("echo-1", "success")]
    answers["reload"] = reloaded
    return answers


def test_echo_round_trip_on_real_redis(
    real_redis_apps: tuple[ByframeworkApps, redis.Redis],
) -> None:
    check_echo(*real_redis_apps)


def test_scenarios_on_real_redis(real_redis_apps: tuple[ByframeworkApps, redis.Redis]) -> None:
    check_scenarios(*real_redis_apps)


# -- the same scenarios through the adapter, then into the read models ------------------


@pytest.fixture
async def adapter_apps(
    byfw_python: Path, tmp_path: Path, nats_url: str
) -> AsyncIterator[tuple[ByframeworkApps, redis.Redis, RespServer]]:
    settings = adapter_settings()
    # by-framework's handlers run for seconds; the test settings' 2 s ack wait is for the
    # redelivery tests, not for this.
    settings = replace(
        settings, streams=replace(settings.streams, ack_wait_seconds=ADAPTER_ACK_WAIT)
    )
    store, server = await start_adapter(nats_url, settings)
    client = redis.Redis(host=server.host, port=server.port)
    apps = ByframeworkApps(byfw_python, server.port, 0, tmp_path)
    try:
        yield apps, client, server
    finally:
        await asyncio.to_thread(apps.stop)
        client.close()
        await server.close()
        await store.close()


async def folded(
    server: RespServer, tmp_path: Path
) -> tuple[list[EventRow], dict[str, list[tuple[str, str]]]]:
    """The EventLog of the whole log and each session's transcript (role, content)."""
    async with read_model(sqlite_url(tmp_path / "rm.db")) as backend:
        projector = Projector(server.store, backend)
        await projector.start()
        await projector.catch_up()
        events = await backend.events(limit=10_000)
        transcripts = {}
        for session in {row.session_id for row in events if row.session_id}:
            rows = await backend.transcript(session)
            transcripts[session] = [(row.role, row.content) for row in rows]
    return events, transcripts


async def test_echo_round_trip_on_adapter(
    adapter_apps: tuple[ByframeworkApps, redis.Redis, RespServer], tmp_path: Path
) -> None:
    apps, client, server = adapter_apps
    await asyncio.to_thread(check_echo, apps, client)
    events, transcripts = await folded(server, tmp_path)
    types = [row.type for row in events]
    assert "command.ask" in types and "message.delta" in types and "message.completed" in types
    turns = transcripts["sess-echo"]
    assert ("user", "hello jetledger") in turns
    assert any(role == "assistant" and "hello jetledger" in text for role, text in turns)


async def test_scenarios_on_adapter(
    adapter_apps: tuple[ByframeworkApps, redis.Redis, RespServer], tmp_path: Path
) -> None:
    apps, client, server = adapter_apps
    await asyncio.to_thread(check_scenarios, apps, client)
    events, transcripts = await folded(server, tmp_path)
    types = [row.type for row in events]
    for expected in (
        "command.resume",
        "command.cancel",
        "command.reload_plugins",
        "plugins.reloaded",
        "run.asked_user",
    ):
        assert expected in types, expected
    asked = transcripts["sess-ask"]
    assert any(role == "question" and "Which environment?" in text for role, text in asked)
    assert asked[-2:] == [("user", "staging"), ("assistant", "answer:staging")], asked
    called = transcripts["sess-call"]
    assert called[0] == ("user", "ping") and ("user", "from caller: ping") in called, called
    # The caller's answer after its resume has the caller's run id; the EventLog has it
    # (the Transcript keeps one assistant turn per run, the first one completed).
    completed = [row.data for row in events if row.type == "message.completed"]
    assert {"content": "caller got callee:from caller: ping", "role": "assistant"} in completed
    cancels = [row for row in events if row.type == "command.cancel"]
    assert cancels and cancels[0].data["reason"] == "test cancel"
    reloads = [row.data for row in events if row.type == "plugins.reloaded"]
    assert [(r["ok"], r["reload_id"].startswith("reload-")) for r in reloads] == [(True, True)]
