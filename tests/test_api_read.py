"""Every read route of the HTTP API against a real log, a real projector and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikit import ApiWorld, api_world, asgi_client
from projectkit import sqlite_url
from scenario import new_id, run_events, session_events, three_level_tree

from eventstore.catalog import CommandAsk, CommandAskData, WorkerStarted, WorkerStartedData
from eventstore.provision import timer_root


@pytest.fixture
async def world(nats_url: str, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        yield world


@pytest.fixture
async def api(world: ApiWorld) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(world.app()) as client:
        yield client


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    code: str = body["error"]["code"]
    return code


async def seed_chat(world: ApiWorld, session_id: str, runs: int) -> dict[str, str]:
    """``runs`` complete runs in a session; their expected assistant texts by run id."""
    texts: dict[str, str] = {}
    events = []
    for run_id, text, event in session_events(session_id, runs):
        texts[run_id] = text
        events.append(event)
    await world.projected(await world.append(events))
    return texts


async def test_sessions_transcript_and_session_events(
    world: ApiWorld, api: httpx.AsyncClient
) -> None:
    texts = await seed_chat(world, "chat-1", 4)
    await seed_chat(world, "chat-2", 1)

    listed = (await api.get("/v1/sessions")).json()
    assert [s["session_id"] for s in listed["items"]] == ["chat-2", "chat-1"]
    assert listed["next_cursor"] is None

    session = (await api.get("/v1/sessions/chat-1")).json()
    assert session["run_count"] == 4 and session["user_code"] == "u1"

    transcript = (await api.get("/v1/sessions/chat-1/transcript")).json()
    assistant = [t for t in transcript["turns"] if t["role"] == "assistant"]
    assert (
        sorted(t["content"] for t in assistant if t["status"] == "complete")
        == sorted(text for run_id, text in texts.items() if "fail" not in run_id)[
            : len([t for t in assistant if t["status"] == "complete"])
        ]
    )
    assert [t["seq_from"] for t in transcript["turns"]] == sorted(
        t["seq_from"] for t in transcript["turns"]
    )

    first = (await api.get("/v1/sessions/chat-1/events", params={"limit": 5})).json()
    assert len(first["items"]) == 5 and first["next_after"] == first["items"][-1]["seq"]
    rest = (
        await api.get(
            "/v1/sessions/chat-1/events", params={"after": first["next_after"], "limit": 500}
        )
    ).json()
    seqs = [e["seq"] for e in first["items"] + rest["items"]]
    assert seqs == sorted(set(seqs)) and rest["next_after"] is None
    assert all(e["session_id"] == "chat-1" for e in first["items"] + rest["items"])
    deltas = (await api.get("/v1/sessions/chat-1/events", params={"type": "message.delta"})).json()
    assert deltas["items"] and {e["type"] for e in deltas["items"]} == {"message.delta"}


async def test_runs_list_filters_run_detail_and_tree(
    world: ApiWorld, api: httpx.AsyncClient
) -> None:
    root, tree_events = three_level_tree("tree-s")
    await world.append(tree_events)
    await seed_chat(world, "other", 2)

    everything = (await api.get("/v1/runs")).json()["items"]
    assert len(everything) == 6
    assert [r["first_seq"] for r in everything] == sorted(
        (r["first_seq"] for r in everything), reverse=True
    )
    in_tree = (await api.get("/v1/runs", params={"root": root})).json()["items"]
    assert len(in_tree) == 4
    failed = (await api.get("/v1/runs", params={"status": "failed"})).json()["items"]
    assert [r["agent_type"] for r in failed] == ["worker"]
    by_type = (await api.get("/v1/runs", params={"agent_type": "leaf"})).json()["items"]
    assert len(by_type) == 1
    by_session = (await api.get("/v1/runs", params={"session": "other"})).json()["items"]
    assert {r["session_id"] for r in by_session} == {"other"} and len(by_session) == 2

    detail = (await api.get(f"/v1/runs/{root}")).json()
    assert detail["status"] == "completed"
    assert detail["events"][0]["type"] == "command.ask"
    assert detail["events"][-1]["type"] == "run.completed"
    assert len(detail["children"]) == 2

    tree = (await api.get(f"/v1/runs/{by_type[0]['run_id']}/tree")).json()
    assert tree["root_run_id"] == root and tree["runs"] == 4
    (top,) = tree["tree"]
    assert top["run_id"] == root
    grandchildren = [g for child in top["children"] for g in child["children"]]
    assert [g["agent_type"] for g in grandchildren] == ["leaf"]

    group_id = top["children"][0]["group_id"]
    group = (await api.get(f"/v1/groups/{group_id}")).json()
    assert group["strategy"] == "all" and group["total"] == 2


async def test_workers_state_and_global_events(world: ApiWorld, api: httpx.AsyncClient) -> None:
    run_id = new_id("run")
    started = WorkerStarted(
        worker_id="w1", data=WorkerStartedData(agent_types=["echo"], max_concurrency=2)
    )
    await world.projected(
        await world.append([*run_events("st-s", run_id, text="with a tool", tool=True), started])
    )
    workers = (await api.get("/v1/workers")).json()["items"]
    assert [w["worker_id"] for w in workers] == ["w1"]

    state = await api.get("/v1/state/session/last_query", params={"id": "st-s"})
    assert state.status_code == 200 and state.json()["value"] == "with a too"
    missing = await api.get("/v1/state/session/nope", params={"id": "st-s"})
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    no_id = await api.get("/v1/state/user/last_query")
    assert no_id.status_code == 400 and error_code(no_id) == "missing_scope_id"

    events = (await api.get("/v1/events", params={"limit": 3})).json()
    assert [e["seq"] for e in events["items"]] == [1, 2, 3]
    typed = (await api.get("/v1/events", params={"type": "tool.call.started"})).json()
    assert [e["type"] for e in typed["items"]] == ["tool.call.started"]
    after = (await api.get("/v1/events", params={"after": 3, "limit": 500})).json()
    assert after["items"][0]["seq"] == 4 and after["next_after"] is None


async def paged(api: httpx.AsyncClient, path: str, limit: int, key: str) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(200):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await api.get(path, params=params)).json()
        seen += [item[key] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


def ask(session_id: str) -> CommandAsk:
    return CommandAsk(
        session_id=session_id,
        run_id=new_id("run"),
        agent_type="echo",
        data=CommandAskData(content="hi"),
    )


async def test_pagination_is_stable_under_concurrent_writes(
    world: ApiWorld, api: httpx.AsyncClient
) -> None:
    sessions = [f"page-{n:02d}" for n in range(30)]
    await world.projected(await world.append([ask(sid) for sid in sessions]))
    before_runs = {
        r["run_id"] for r in (await api.get("/v1/runs", params={"limit": 500})).json()["items"]
    }

    async def writer() -> None:
        # new sessions, and new activity in old ones (which moves them to the top)
        for n in range(40):
            await world.append([ask(f"new-{n}"), ask(sessions[n % len(sessions)])])
            await asyncio.sleep(0.005)

    writing = asyncio.create_task(writer())
    session_pages, run_pages = [], []
    for _ in range(3):
        session_pages.append(await paged(api, "/v1/sessions", 4, "session_id"))
        run_pages.append(await paged(api, "/v1/runs", 7, "run_id"))
    await writing
    for seen in session_pages:
        assert len(seen) == len(set(seen)), "a session was listed twice"
        assert set(sessions) <= set(seen), "a session that existed was skipped"
    for seen in run_pages:
        assert len(seen) == len(set(seen)), "a run was listed twice"
        assert before_runs <= set(seen), "a run that existed was skipped"


async def test_runs_sharing_a_first_seq_are_paged_without_loss(
    world: ApiWorld, api: httpx.AsyncClient
) -> None:
    _root, tree_events = three_level_tree("ties")  # group.dispatched starts 2 runs at once
    await world.projected(await world.append(tree_events))
    for limit in (1, 2, 3):
        seen = await paged(api, "/v1/runs", limit, "run_id")
        assert len(seen) == 4 and len(set(seen)) == 4, limit


async def test_error_codes(world: ApiWorld, api: httpx.AsyncClient) -> None:
    await seed_chat(world, "err-s", 1)
    cases: list[tuple[httpx.Response, int, str]] = [
        (await api.get("/v1/runs", params={"cursor": "not-a-cursor"}), 400, "invalid_cursor"),
        (await api.get("/v1/runs", params={"limit": 0}), 400, "invalid_limit"),
        (await api.get("/v1/runs", params={"limit": 100_000}), 400, "invalid_limit"),
        (await api.get("/v1/runs", params={"status": "bogus"}), 422, "validation_error"),
        (await api.get("/v1/events", params={"after": -1}), 422, "validation_error"),
        (await api.get("/v1/sessions/nope"), 404, "not_found"),
        (await api.get("/v1/sessions/nope/transcript"), 404, "not_found"),
        (await api.get("/v1/runs/nope"), 404, "not_found"),
        (await api.get("/v1/runs/nope/tree"), 404, "not_found"),
        (await api.get("/v1/groups/nope"), 404, "not_found"),
        (await api.get("/v1/no/such/route"), 404, "not_found"),
        (await api.delete("/v1/runs"), 405, "method_not_allowed"),
        (await api.post("/v1/sessions/s/messages", content=b"{not json"), 422, "validation_error"),
        (
            await api.post("/v1/sessions/s/messages", json={"agent_type": "echo"}),
            422,
            "validation_error",
        ),
        (
            await api.post(
                "/v1/sessions/s/messages",
                json={"agent_type": "echo", "content": "x" * (2 * 1024 * 1024)},
            ),
            413,
            "payload_too_large",
        ),
    ]
    # a cursor of another list is refused too
    sessions_cursor = (await api.get("/v1/sessions", params={"limit": 1})).json()
    await seed_chat(world, "err-2", 1)
    sessions_cursor = (await api.get("/v1/sessions", params={"limit": 1})).json()["next_cursor"]
    cases.append(
        (await api.get("/v1/runs", params={"cursor": sessions_cursor}), 400, "invalid_cursor")
    )
    for response, status, code in cases:
        assert (response.status_code, error_code(response)) == (status, code), response.request.url
    validation = await api.get("/v1/runs", params={"status": "bogus"})
    assert validation.json()["error"]["details"]["errors"][0]["loc"] == ["query", "status"]


async def test_chunked_body_over_the_limit_is_refused(world: ApiWorld) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 1024

    async with asgi_client(world.app(max_body_bytes=4096)) as api:
        response = await api.post("/v1/sessions/s/messages", content=chunks())
    assert response.status_code == 413 and error_code(response) == "payload_too_large"


async def test_read_model_unavailable_is_503(nats_url: str, tmp_path: Path) -> None:
    url = "postgresql+asyncpg://jetledger@127.0.0.1:1/nowhere"
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        app = world.app()
        async with asgi_client(app) as api:
            # the database goes away under a running API: point its engine at a dead port
            from projections.backends import open_backend

            context = app.state.context
            context.backend = open_backend(url)
            response = await api.get("/v1/runs")
            assert response.status_code == 503
            assert error_code(response) == "read_model_unavailable"
            assert (await api.get("/healthz")).status_code == 200


async def test_readyz_reports_projection_lag_and_metrics_route_templates(
    world: ApiWorld, api: httpx.AsyncClient
) -> None:
    await seed_chat(world, "ops-s", 2)
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["lag"] == 0
    # a read model nobody projects into (another namespace) falls behind the log
    async with asgi_client(world.app(db_namespace="unprojected", readyz_max_lag=3)) as behind:
        lagging = await behind.get("/readyz")
        assert lagging.status_code == 503 and error_code(lagging) == "projection_lag"
        assert lagging.json()["error"]["details"]["lag"] == await world.store.last_seq()

    run_id = (await api.get("/v1/runs")).json()["items"][0]["run_id"]
    assert (await api.get(f"/v1/runs/{run_id}")).status_code == 200
    metrics = (await api.get("/metrics")).text
    assert 'route="/v1/runs/{run_id}"' in metrics and run_id not in metrics
    assert 'jetledger_runs{status="completed"}' in metrics
    assert "jetledger_projection_lag_events 0.0" in metrics
    assert "jetledger_live_workers" in metrics and "jetledger_events_per_second" in metrics
    # A held timer (a parked run's deadline) newest in the stream is not lag: no
    # projector ever applies it.
    await world.store.js.publish(f"{timer_root(world.store.settings)}.ops-s.r.w0", b"{}")
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["lag"] == 0
    assert ready.json()["stream_last_seq"] < await world.store.last_seq()
    assert "jetledger_projection_lag_events 0.0" in (await api.get("/metrics")).text
