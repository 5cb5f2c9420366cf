"""``jetledger api`` as a real subprocess: the first stdout line contract, serving real
requests, clean exit 0 on SIGINT / SIGTERM, and refusals of unsafe settings."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from apikit import WAIT, ApiWorld, api_world, spawn_api
from projectkit import sqlite_url

SERVING = re.compile(r"^jetledger api: serving (http://127\.0\.0\.1:(\d+))$")


async def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), WAIT)
    return line.rstrip("\n")


def api_process(world: ApiWorld, *args: str) -> subprocess.Popen[str]:
    return spawn_api(
        world.settings,
        "--port",
        "0",
        "--db",
        world.db_url,
        "--nats-url",
        world.nats_url,
        *args,
        env={"JETLEDGER_API_DB_NAMESPACE": world.api.db_namespace},
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_serves_and_stops_cleanly(
    nats_url: str, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        process = api_process(world)
        try:
            line = await first_line(process)
            match = SERVING.match(line)
            assert match, line
            base = match.group(1)
            async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
                assert (await http.get("/healthz")).json() == {"status": "ok"}
                async with asyncio.timeout(WAIT):
                    while True:  # NATS connects in the background
                        if (await http.get("/readyz")).status_code == 200:
                            break
                        await asyncio.sleep(0.1)
                sent = await http.post(
                    "/v1/sessions/cli/messages",
                    params={"wait": 5},
                    json={"agent_type": "echo", "content": "from curl", "queue": True},
                )
                assert sent.status_code == 202 and sent.json()["reflected"] is True
                transcript = (await http.get("/v1/sessions/cli/transcript")).json()
                assert [t["content"] for t in transcript["turns"]] == ["from curl"]
                assert "/v1/runs" in (await http.get("/openapi.json")).json()["paths"]
            process.send_signal(stop_signal)
            code = await asyncio.wait_for(asyncio.to_thread(process.wait), WAIT)
            stderr = process.stderr.read() if process.stderr else ""
            assert code == 0, stderr
            assert "local mode" in stderr
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--host", "0.0.0.0"), "loopback"),
        (("--db", "duckdb:///x.duckdb"), "SQLite or PostgreSQL"),
    ],
)
async def test_refuses_unsafe_or_unsupported_settings(
    nats_url: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        process = api_process(world, *args)
        out, err = await asyncio.wait_for(asyncio.to_thread(process.communicate), WAIT)
        assert process.returncode == 2
        assert out == "" and message in err
