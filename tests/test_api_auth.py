"""Bearer-token auth: refusals (missing, wrong, expired, insufficient scope, other
session), admin-only routes, restricted tokens that see only their sessions, local mode
refusing non-loopback hosts; and a PostgreSQL smoke test of paging and auth."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from apikit import ApiWorld, api_world, asgi_client, tokens
from projectkit import sqlite_url
from scenario import new_id, run_events

from gateway.api import ApiSettings, create_app
from gateway.api.app import ApiConfigError
from gateway.api.auth import TokenConfigError, load_tokens

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"
WRITER = "writer-token-0123456789"
ALICE = "alice-token-0123456789"
SESSION_A = "session-a-token-0123456789"
EXPIRED = "expired-token-0123456789"

TOKEN_SPECS = [
    {"token": ADMIN, "name": "ops", "scopes": ["admin"]},
    {"token": READER, "name": "dash", "scopes": ["read"]},
    {"token": WRITER, "name": "bot", "scopes": ["read", "write"]},
    {"token": ALICE, "name": "alice", "scopes": ["read", "write"], "user_codes": ["alice"]},
    {"token": SESSION_A, "name": "only-a", "scopes": ["read", "write"], "sessions": ["a"]},
    {
        "token": EXPIRED,
        "name": "old",
        "scopes": ["admin"],
        "expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
    },
]


def with_user(events: list, user_code: str) -> list:  # type: ignore[type-arg]
    return [event.model_copy(update={"user_code": user_code}) for event in events]


async def seed(world: ApiWorld) -> dict[str, str]:
    """Sessions a (alice), b (bob), c (alice); their run ids."""
    runs = {}
    for session_id, user in (("a", "alice"), ("b", "bob"), ("c", "alice")):
        runs[session_id] = new_id("run")
        await world.append(with_user(run_events(session_id, runs[session_id], text="hi"), user))
    await world.projected()
    return runs


@pytest.fixture
async def world(nats_url: str, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        world.token_table = tokens(*TOKEN_SPECS)
        yield world


def as_token(api: httpx.AsyncClient, token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def code(response: httpx.Response) -> str:
    value: str = response.json()["error"]["code"]
    return value


async def test_refusals(world: ApiWorld) -> None:
    runs = await seed(world)
    async with asgi_client(world.app()) as api:

        async def get(path: str, token: str | None) -> httpx.Response:
            return await api.get(path, headers=as_token(api, token))

        assert (await get("/healthz", None)).status_code == 200  # the one open route
        for path in ("/v1/runs", "/readyz", "/openapi.json", "/docs", "/v1/sessions/a/stream"):
            missing = await get(path, None)
            assert missing.status_code == 401 and code(missing) == "unauthorized", path
            assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await get("/v1/runs", "not-a-real-token-at-all")
        assert wrong.status_code == 401 and code(wrong) == "unauthorized"
        basic = await api.get("/v1/runs", headers={"Authorization": f"Basic {READER}"})
        assert basic.status_code == 401
        expired = await get("/v1/runs", EXPIRED)
        assert expired.status_code == 401 and code(expired) == "token_expired"

        # admin-only routes refuse read and write tokens
        for token in (READER, WRITER):
            for path in ("/v1/workers", "/metrics"):
                refused = await get(path, token)
                assert refused.status_code == 403 and code(refused) == "insufficient_scope"
        assert (await get("/v1/workers", ADMIN)).status_code == 200
        metrics = await get("/metrics", ADMIN)
        assert metrics.status_code == 200 and "jetledger_runs" in metrics.text

        # a read token cannot send commands
        ask = {"agent_type": "x", "content": "hi", "queue": True}
        refused = await api.post("/v1/sessions/a/messages", json=ask, headers=as_token(api, READER))
        assert refused.status_code == 403 and code(refused) == "insufficient_scope"
        assert refused.json()["error"]["details"] == {"needed": "write", "granted": ["read"]}
        accepted = await api.post(
            "/v1/sessions/a/messages", json=ask, headers=as_token(api, WRITER)
        )
        assert accepted.status_code == 202

        # other-session tokens: single objects are 404, commands 403
        for token in (SESSION_A, ALICE):
            assert (await get("/v1/sessions/b", token)).status_code == 404
            assert (await get("/v1/sessions/b/transcript", token)).status_code == 404
            assert (await get("/v1/sessions/b/events", token)).status_code == 404
            assert (await get(f"/v1/runs/{runs['b']}", token)).status_code == 404
            assert (await get(f"/v1/runs/{runs['b']}/tree", token)).status_code == 404
            assert (await get("/v1/sessions/b/stream", token)).status_code == 404
            assert (await get(f"/v1/runs/{runs['b']}/stream", token)).status_code == 404
            assert (await get("/v1/state/global/k", token)).status_code == 404
            other = await api.post(
                "/v1/sessions/b/messages", json=ask, headers=as_token(api, token)
            )
            assert other.status_code == 403 and code(other) == "forbidden_session"
            cancel = await api.post(f"/v1/runs/{runs['b']}/cancel", headers=as_token(api, token))
            assert cancel.status_code == 404
            assert (await get(f"/v1/runs/{runs['a']}", token)).status_code == 200
        # alice may act as herself only
        as_bob = await api.post(
            "/v1/sessions/new-one/messages",
            json={**ask, "user_code": "bob"},
            headers=as_token(api, ALICE),
        )
        assert as_bob.status_code == 403
        as_alice = await api.post(
            "/v1/sessions/new-one/messages", json=ask, headers=as_token(api, ALICE)
        )
        assert as_alice.status_code == 202


async def test_restricted_tokens_see_only_their_sessions(world: ApiWorld) -> None:
    runs = await seed(world)
    async with asgi_client(world.app()) as api:

        async def ids(path: str, token: str, key: str) -> set[str]:
            found: set[str] = set()
            params: dict[str, str | int] = {"limit": 1}
            for _ in range(50):
                page = (await api.get(path, params=params, headers=as_token(api, token))).json()
                found |= {item[key] for item in page["items"]}
                if page.get("next_cursor"):
                    params = {"limit": 1, "cursor": page["next_cursor"]}
                elif page.get("next_after"):
                    params = {"limit": 1, "after": page["next_after"]}
                else:
                    return found
            raise AssertionError("paging did not end")

        assert await ids("/v1/sessions", READER, "session_id") == {"a", "b", "c"}
        assert await ids("/v1/sessions", ALICE, "session_id") == {"a", "c"}
        assert await ids("/v1/sessions", SESSION_A, "session_id") == {"a"}
        assert await ids("/v1/runs", ALICE, "run_id") == {runs["a"], runs["c"]}
        assert await ids("/v1/runs", SESSION_A, "run_id") == {runs["a"]}
        assert await ids("/v1/events", SESSION_A, "session_id") == {"a"}
        assert await ids("/v1/events", ALICE, "session_id") == {"a", "c"}
        assert await ids("/v1/events", READER, "session_id") >= {"a", "b", "c"}


def test_local_mode_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ApiConfigError, match="loopback"):
        create_app(ApiSettings(host="0.0.0.0"))
    create_app(ApiSettings(host="0.0.0.0", tokens=json.dumps(TOKEN_SPECS[:1])))
    with pytest.raises(ApiConfigError, match="SQLite or PostgreSQL"):
        create_app(ApiSettings(db_url="duckdb:///x.duckdb"))


def test_token_files_json_and_toml(tmp_path: Path) -> None:
    json_file = tmp_path / "tokens.json"
    json_file.write_text(json.dumps({"tokens": TOKEN_SPECS[:2]}))
    toml_file = tmp_path / "tokens.toml"
    toml_file.write_text(
        '[[tokens]]\ntoken = "toml-token-0123456789"\nscopes = ["read"]\nsessions = ["a"]\n'
    )
    assert len(load_tokens(str(json_file), "")) == 2
    table = load_tokens(str(toml_file), json.dumps(TOKEN_SPECS[2:3]))
    entry = table.lookup("toml-token-0123456789")
    assert entry is not None and entry.principal.sessions == frozenset({"a"})
    assert table.lookup(WRITER) is not None and table.lookup(READER) is None
    for bad in ('{"tokens": [{"token": "short", "scopes": ["read"]}]}', "[{", '{"tokens": 3}'):
        with pytest.raises(TokenConfigError):
            load_tokens("", bad)
    with pytest.raises(TokenConfigError, match="twice"):
        load_tokens("", json.dumps(TOKEN_SPECS[:1] * 2))


POSTGRES_URL = os.environ.get(
    "JETLEDGER_TEST_PG_URL",
    "postgresql+asyncpg://jetledger:jetledger@127.0.0.1:5432/jetledger_test",
)


@pytest.mark.skipif(
    os.environ.get("JETLEDGER_SKIP_POSTGRES") == "1", reason="JETLEDGER_SKIP_POSTGRES=1"
)
async def test_postgres_paging_and_auth_smoke(nats_url: str) -> None:
    async with api_world(nats_url, POSTGRES_URL) as world:
        world.token_table = tokens(*TOKEN_SPECS)
        runs = await seed(world)
        async with asgi_client(world.app()) as api:
            seen: list[str] = []
            params: dict[str, str | int] = {"limit": 1}
            for _ in range(20):
                page = (
                    await api.get("/v1/runs", params=params, headers=as_token(api, ALICE))
                ).json()
                seen += [run["run_id"] for run in page["items"]]
                if page["next_cursor"] is None:
                    break
                params = {"limit": 1, "cursor": page["next_cursor"]}
            assert set(runs.values()) >= set(seen) >= {runs["a"], runs["c"]}
            assert runs["b"] not in seen and len(seen) == len(set(seen))
            assert (await api.get("/v1/runs")).status_code == 401
