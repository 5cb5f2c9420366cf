"""Command routes against a real log, real worker subprocesses and a real projector:
ask (with ``?wait=`` read-your-writes), cancel, reply and steer, and their refusals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from apikit import WAIT, ApiWorld, api_world, asgi_client
from projectkit import sqlite_url
from workerkit import spawn_worker, stop

from eventstore.embedded import EmbeddedNatsServer
from gateway import GatewayClient

ECHO = "runners.examples.echo:EchoWorker"
PLANNER = "runners.examples.orchestration:PlannerWorker"


@contextlib.asynccontextmanager
async def worker(world: ApiWorld, worker_class: str, agent_type: str) -> AsyncIterator[None]:
    process = spawn_worker(world.settings, world.nats_url, worker_class, f"w-{agent_type}")
    try:
        async with GatewayClient(world.nats_url, world.settings) as client:
            for _ in range(200):
                if await client.has_live_worker(agent_type):
                    break
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the {agent_type} worker never started polling")
        yield
    finally:
        assert stop(process) == 0


async def run_until(api: httpx.AsyncClient, run_id: str, statuses: set[str]) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            response = await api.get(f"/v1/runs/{run_id}")
            if response.status_code == 200 and response.json()["status"] in statuses:
                body: dict[str, Any] = response.json()
                return body
            await asyncio.sleep(0.05)


async def slow_run(api: httpx.AsyncClient, session_id: str) -> str:
    """A running echo run that takes 16 s unless stopped; its id."""
    sent = await api.post(
        f"/v1/sessions/{session_id}/messages",
        params={"wait": 5},
        json={
            "agent_type": "echo",
            "content": "abcdefgh",
            "metadata": {"chunks": 8, "delay": 2.0},
        },
    )
    run_id: str = sent.json()["run_id"]
    await run_until(api, run_id, {"running"})
    return run_id


def code(response: httpx.Response) -> str:
    value: str = response.json()["error"]["code"]
    return value


async def test_ask_wait_transcript_cancel_and_steer(nats_url: str, tmp_path: Path) -> None:
    async with (
        api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world,
        worker(world, ECHO, "echo"),
        asgi_client(world.app()) as api,
    ):
        sent = await api.post(
            "/v1/sessions/chat/messages",
            params={"wait": 5},
            json={"agent_type": "echo", "content": "hello api", "user_code": "alice"},
        )
        assert sent.status_code == 202, sent.text
        accepted = sent.json()
        assert accepted["reflected"] is True and accepted["checkpoint"] >= accepted["seq"]
        # read-your-writes: the run is in the read model when the answer arrives
        run = await api.get(f"/v1/runs/{accepted['run_id']}")
        assert run.status_code == 200 and run.json()["session_id"] == "chat"

        done = await run_until(api, accepted["run_id"], {"completed"})
        assert done["result"]["content"] == "hello api"
        transcript = (await api.get("/v1/sessions/chat/transcript")).json()["turns"]
        assert [(t["role"], t["content"]) for t in transcript] == [
            ("user", "hello api"),
            ("assistant", "hello api"),
        ]

        finished = await api.post(f"/v1/runs/{accepted['run_id']}/cancel")
        assert finished.status_code == 200
        assert finished.json()["already_finished"] is True
        assert finished.json()["status"] == "completed"

        # slow runs: steer one while it runs (what the worker makes of a steer is the
        # runtime's business: it may end the run), cancel another
        steered_id = await slow_run(api, "steered")
        steered = await api.post(
            "/v1/sessions/steered/steer", params={"wait": 5}, json={"content": "faster please"}
        )
        assert steered.status_code == 202, steered.text
        assert steered.json()["run_id"] == steered_id and steered.json()["reflected"] is True
        stopped = await api.post(f"/v1/runs/{steered_id}/cancel", json={"mode": "force"})
        assert stopped.status_code in (200, 202), stopped.text  # 200: the steer ended it

        slow_id = await slow_run(api, "slow")
        cancelled = await api.post(
            f"/v1/runs/{slow_id}/cancel",
            params={"wait": 5},
            json={"reason": "enough", "mode": "force"},
        )
        assert cancelled.status_code == 202, cancelled.text
        assert slow_id in cancelled.json()["cancelled"]
        assert cancelled.json()["reflected"] is True
        assert (await api.get(f"/v1/runs/{slow_id}")).json()["status"] == "cancelled"

        nothing_active = await api.post("/v1/sessions/slow/steer", json={"content": "hello?"})
        assert nothing_active.status_code == 409 and code(nothing_active) == "no_active_run"
        unknown = await api.post("/v1/runs/no-such-run/cancel")
        assert unknown.status_code == 404 and code(unknown) == "not_found"


async def test_no_worker_is_503_unless_queued(nats_url: str, tmp_path: Path) -> None:
    async with (
        api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world,
        asgi_client(world.app()) as api,
    ):
        refused = await api.post(
            "/v1/sessions/s/messages", json={"agent_type": "nobody", "content": "hi"}
        )
        assert refused.status_code == 503 and code(refused) == "no_worker", refused.text
        assert refused.json()["error"]["details"]["agent_type"] == "nobody"
        assert (await api.get("/v1/runs")).json()["items"] == []

        queued = await api.post(
            "/v1/sessions/s/messages",
            params={"wait": 5},
            json={"agent_type": "nobody", "content": "hi", "queue": True},
        )
        assert queued.status_code == 202 and queued.json()["reflected"] is True, queued.text
        run_id = queued.json()["run_id"]
        assert (await api.get(f"/v1/runs/{run_id}")).json()["status"] == "queued"
        # cancelling a queued run ends it now, worker or not
        cancelled = await api.post(f"/v1/runs/{run_id}/cancel", params={"wait": 5})
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["cancelled"] == [run_id], cancelled.text
        assert (await api.get(f"/v1/runs/{run_id}")).json()["status"] == "cancelled"


async def test_reply_answers_a_waiting_run_once(nats_url: str, tmp_path: Path) -> None:
    async with (
        api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world,
        worker(world, PLANNER, "planner"),
        asgi_client(world.app()) as api,
    ):
        asked = await api.post(
            "/v1/sessions/q/messages",
            json={"agent_type": "planner", "content": "deploy", "metadata": {"mode": "ask"}},
        )
        run_id = asked.json()["run_id"]
        await run_until(api, run_id, {"asked_user"})
        transcript = (await api.get("/v1/sessions/q/transcript")).json()["turns"]
        assert any(t["role"] == "question" for t in transcript)

        replied = await api.post(
            f"/v1/runs/{run_id}/reply", params={"wait": 5}, json={"answer": "yes"}
        )
        assert replied.status_code == 202, replied.text
        assert replied.json()["reflected"] is True and replied.json()["run_id"] == run_id
        done = await run_until(api, run_id, {"completed"})
        assert done["result"]["content"] == "answer: yes" or "answer: yes" in str(done["result"])

        again = await api.post(f"/v1/runs/{run_id}/reply", json={"answer": "no"})
        assert again.status_code == 409 and code(again) == "not_waiting"
        unknown = await api.post("/v1/runs/no-such-run/reply", json={"answer": "x"})
        assert unknown.status_code == 404 and code(unknown) == "not_found"


async def test_nats_down_is_503_and_reads_still_work(
    killable_nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    async with (
        api_world(killable_nats_server.url, sqlite_url(tmp_path / "rm.db")) as world,
        asgi_client(world.app()) as api,
    ):
        queued = await api.post(
            "/v1/sessions/s/messages",
            params={"wait": 5},
            json={"agent_type": "x", "content": "hi", "queue": True},
        )
        assert queued.status_code == 202
        ready = await api.get("/readyz")
        assert ready.status_code == 200 and ready.json()["lag"] == 0

        killable_nats_server.kill()
        async with asyncio.timeout(WAIT):
            while True:
                response = await api.post(
                    "/v1/sessions/s/messages",
                    json={"agent_type": "x", "content": "hi", "queue": True},
                )
                if response.status_code == 503:
                    break
                await asyncio.sleep(0.1)
        assert code(response) == "nats_unavailable"
        not_ready = await api.get("/readyz")
        assert not_ready.status_code == 503 and code(not_ready) == "nats_unavailable"
        stream = await api.get("/v1/sessions/s/stream")
        assert stream.status_code == 503 and code(stream) == "nats_unavailable"
        # the read model still answers
        assert (await api.get("/v1/sessions/s")).status_code == 200

        await killable_nats_server.restart()  # and commands work again once NATS is back
        async with asyncio.timeout(WAIT):
            while True:
                response = await api.post(
                    "/v1/sessions/s/messages",
                    json={"agent_type": "x", "content": "again", "queue": True},
                )
                if response.status_code == 202:
                    break
                await asyncio.sleep(0.1)
