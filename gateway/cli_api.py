"""``jetledger api``: serve the read-model HTTP API with uvicorn.

Contract for process supervisors (``jetledger up``): ``--port 0`` picks a free port; once
the socket listens, the first line on stdout is exactly
``jetledger api: serving http://<host>:<port>``; SIGINT / SIGTERM stop it cleanly (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated

import typer

from gateway.api.auth import TokenConfigError
from gateway.api.settings import ApiSettings, ApiSettingsError


def register(app: typer.Typer) -> None:
    app.command(name="api")(api)


def api(
    *,
    host: Annotated[
        str, typer.Option(envvar="JETLEDGER_API_HOST", help="Interface to bind.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="JETLEDGER_API_PORT", help="TCP port; 0 picks a free one.")
    ] = 8000,
    db: Annotated[
        str,
        typer.Option(
            "--db",
            envvar="JETLEDGER_DB_URL",
            help="Read-model URL (SQLite or PostgreSQL).",
            show_default="sqlite+aiosqlite:///./.jetledger/readmodel.db",
        ),
    ] = "",
    nats_url: Annotated[
        str,
        typer.Option(
            "--nats-url",
            envvar="JETLEDGER_NATS_URL",
            help="NATS server URL.",
            show_default="nats://127.0.0.1:4222",
        ),
    ] = "",
    tokens: Annotated[
        str,
        typer.Option(
            "--tokens",
            envvar="JETLEDGER_API_TOKENS_FILE",
            help="JSON or TOML file of bearer tokens; none (and no JETLEDGER_API_TOKENS) "
            "means local mode: no auth, loopback only.",
        ),
    ] = "",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) over the read model and NATS."""
    from gateway.api.app import ApiConfigError, create_app  # noqa: PLC0415 (keeps --help fast)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # options left empty keep what JETLEDGER_API_* / JETLEDGER_* give
        settings = ApiSettings.from_env(host=host, port=port)
        settings = replace(
            settings,
            db_url=db or settings.db_url,
            nats_url=nats_url or settings.nats_url,
            tokens_file=tokens or settings.tokens_file,
        )
        fastapi_app = create_app(settings)
    except (ApiConfigError, ApiSettingsError, TokenConfigError) as exc:
        typer.echo(f"jetledger api: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        listener = _listen(settings.host, settings.port)
    except OSError as exc:
        typer.echo(f"jetledger api: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from exc
    raise typer.Exit(asyncio.run(_serve(fastapi_app, listener, access_log)))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


async def _serve(fastapi_app: object, listener: socket.socket, access_log: bool) -> int:
    import uvicorn  # noqa: PLC0415

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises a captured signal after shutdown (exit 130 / -15); a clean
            # stop on SIGINT / SIGTERM must exit 0, so only ask the server to exit.
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            listening.set()

        def _stop(self) -> None:
            self.force_exit = self.should_exit  # a second Ctrl-C does not wait for tails
            self.should_exit = True

    config = uvicorn.Config(
        fastapi_app,  # type: ignore[arg-type]
        access_log=access_log,
        log_config=None,
        timeout_graceful_shutdown=5,
    )
    listening = asyncio.Event()
    server = Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    started = asyncio.create_task(listening.wait())
    await asyncio.wait([serving, started], return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if listening.is_set():
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        sys.stdout.write(f"jetledger api: serving http://{shown}:{port}\n")
        sys.stdout.flush()
    try:
        await serving
    except SystemExit as exc:  # uvicorn exits this way when the lifespan fails
        return int(exc.code or 1)
    return 0 if server.started else 1


__all__ = ["register"]
