"""``jetledger redis``: serve the Redis protocol over JetStream (the RESP adapter).

by-framework workers and clients point ``REDIS_HOST``/``REDIS_PORT`` here and run
unmodified; see README "Redis-compatible adapter".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Annotated

import typer

from eventstore.connection import ConnectOptions
from eventstore.errors import EventStoreError
from eventstore.settings import StoreSettings, nats_url_from_env
from eventstore.store import EventStore
from gateway.resp.server import RespServer, RespServerError
from gateway.resp.settings import RespSettings

NatsUrl = Annotated[str, typer.Option("--nats-url", envvar="JETLEDGER_NATS_URL", help="NATS URL.")]


async def serve(settings: RespSettings, nats_url: str, ready: asyncio.Event | None = None) -> None:
    """Run the adapter until SIGINT/SIGTERM (or cancellation)."""
    store = await EventStore.open(ConnectOptions(url=nats_url), StoreSettings.from_env())
    server = RespServer(store, settings)
    try:
        await server.start()
        typer.echo(f"jetledger redis serving redis://{server.host}:{server.port}", err=True)
        if ready is not None:
            ready.set()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await server.close()
        await store.close()


def redis(
    *,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 6380,
    password: Annotated[
        str | None,
        typer.Option(envvar="JETLEDGER_REDIS_PASSWORD", help="Require AUTH with this password."),
    ] = None,
    max_clients: Annotated[int, typer.Option(help="Connections served at once.")] = 1000,
    kv_bucket: Annotated[str, typer.Option(help="KV bucket for non-stream keys.")] = "jl_redis",
    nats_url: NatsUrl = "",
) -> None:
    """Serve the Redis protocol (RESP2/3) over JetStream for unmodified by-framework apps."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = RespSettings(
        host=host, port=port, password=password, max_clients=max_clients, kv_bucket=kv_bucket
    )
    try:
        asyncio.run(serve(settings, nats_url or nats_url_from_env()))
    except (EventStoreError, RespServerError, OSError) as exc:
        typer.echo(f"jetledger redis: {exc}", err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add ``redis`` to ``app``."""
    app.command()(redis)


__all__ = ["register", "serve"]
