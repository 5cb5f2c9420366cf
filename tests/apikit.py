"""Helpers for the HTTP API tests: a real log (nats-server), a real projector folding it
into a real read model, and the API in-process (httpx over ASGI, or uvicorn on a free
port for streaming), plus a ``jetledger api`` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from projectkit import store_env
from readmodel_suite import new_namespace
from storekit import isolated_settings

from eventstore.envelope import Event
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from gateway.api import ApiSettings, create_app
from gateway.api.auth import TokenTable, parse_tokens
from gateway.api.context import ApiContext
from projections.backends import open_backend
from projections.contract import ReadModelBackend
from projections.projector import ProjectorSettings
from projections.service import prepare
from projections.sql_backend import SqlReadModel

WAIT = 10.0
"""Upper bound of any wait in these tests (seconds)."""


def api_settings(nats_url: str, db_url: str, **overrides: Any) -> ApiSettings:
    """Settings with test-sized timeouts."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "db_url": db_url,
        "sse_heartbeat_seconds": 0.5,
        "wait_max_seconds": 5.0,
        "wait_poll_seconds": 0.02,
        "nats_connect_retry_seconds": 0.2,
        "worker_probe_seconds": 0.5,
    }
    values.update(overrides)
    return ApiSettings(**values)


def tokens(*specs: dict[str, Any]) -> TokenTable:
    return TokenTable(parse_tokens(list(specs), "test"))


@dataclass
class ApiWorld:
    """A log, a projector following it, and an API app reading what it folds."""

    nats_url: str
    db_url: str
    store: EventStore
    settings: StoreSettings
    api: ApiSettings
    backend: ReadModelBackend
    token_table: TokenTable = field(default_factory=lambda: TokenTable([]))

    def app(self, **overrides: Any) -> FastAPI:
        return create_app(
            replace(self.api, **overrides), store_settings=self.settings, tokens=self.token_table
        )

    async def append(self, events: Sequence[Event]) -> int:
        """Append ``events`` in order; the last one's sequence."""
        last = 0
        for event in events:
            result = await self.store.append(event)
            last = result.seq or last
        return last

    async def projected(self, seq: int | None = None) -> int:
        """Wait until the read model has applied ``seq`` (default: the log's end)."""
        target = seq if seq is not None else await self.store.last_seq()
        async with asyncio.timeout(WAIT):
            while True:
                checkpoint = await self.backend.checkpoint()
                if checkpoint >= target:
                    return checkpoint
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def api_world(nats_url: str, db_url: str, **api_overrides: Any) -> AsyncIterator[ApiWorld]:
    """The read model gets a namespace of its own, so tests may share a PostgreSQL."""
    settings = isolated_settings()
    store = await EventStore.open(nats_url, settings)
    namespace = new_namespace()
    api_overrides.setdefault("db_namespace", namespace)
    backend = open_backend(db_url, namespace=namespace)
    projector_backend = open_backend(db_url, namespace=namespace)
    projector = await prepare(store, projector_backend, settings=ProjectorSettings(batch_wait=0.01))
    await backend.start()
    stop = asyncio.Event()
    projecting = asyncio.create_task(projector.run(stop))
    try:
        yield ApiWorld(
            nats_url,
            db_url,
            store,
            settings,
            api_settings(nats_url, db_url, **api_overrides),
            backend,
        )
    finally:
        await backend.close()
        stop.set()
        try:
            async with asyncio.timeout(WAIT):
                await projecting
        finally:
            projecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await projecting
            if (
                isinstance(projector_backend, SqlReadModel)
                and projector_backend.name == "postgresql"
            ):
                await projector_backend.drop_namespace()  # a shared database: leave it clean
            await projector_backend.close()
            await store.close()


@contextlib.asynccontextmanager
async def asgi_client(app: FastAPI, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling ``app`` in-process, with its lifespan run and NATS connected."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        context: ApiContext = app.state.context
        async with asyncio.timeout(WAIT):
            await context.nats_ready.wait()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api.test", headers=headers, timeout=WAIT
        ) as client:
            yield client


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port (for streaming); its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=1)
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if serving.done():
                    await serving
                await asyncio.sleep(0.02)
            context: ApiContext = app.state.context
            await context.nats_ready.wait()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(WAIT):
            await serving
        listener.close()


def spawn_api(
    settings: StoreSettings, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``jetledger api *args`` as a subprocess on the test's stream (the caller stops it)."""
    environment = store_env(settings)
    environment.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "api", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sse_frames(text: str) -> list[dict[str, str]]:
    """Parse SSE ``text`` into frames (comments dropped)."""
    frames = []
    for block in text.split("\n\n"):
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")
        if frame and "data" in frame:
            frames.append(frame)
    return frames
