"""``jetledger up``: the command line of :mod:`gateway.up` (signals, lock, banner)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer

from eventstore.errors import EventStoreError
from gateway.up import DEMO_AGENT_TYPE, Ready, System, UpError
from gateway.up import jetledger_command as _jetledger_command
from gateway.up_children import ChildError
from gateway.up_settings import UpOptions, UpSettings

DEMO_SESSION = "demo"


class DataDirBusyError(UpError):
    """Another ``jetledger up`` already runs on the data directory."""


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir/up.lock``: two servers on one JetStream store would corrupt it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir / "up.lock"
    with lock_path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise DataDirBusyError(
                f"another 'jetledger up' (pid {holder}) is using {data_dir}: stop it, "
                "or pass --data-dir to run a second system elsewhere"
            ) from exc
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield  # the lock goes with the file descriptor, also when up is killed


def banner(ready: Ready, jetledger: str) -> str:
    """What ``up`` prints once everything is ready: where things are, what to try."""
    url, nats = ready.api_url, shlex.quote(ready.nats_url)
    lines = [f"jetledger is up: {url}  (OpenAPI: {url}/docs)", *ready.notes]
    if ready.nats_pid is not None:
        lines.append(f"  {'nats-server':<12} pid {ready.nats_pid:<8} {ready.nats_url}")
    else:
        lines.append(f"  {'nats':<12} {'external':<12} {ready.nats_url}")
    described = {"projector": ready.db_url, "api": url, "worker": f"agent type {DEMO_AGENT_TYPE}"}
    for child in ready.children:
        lines.append(
            f"  {child.name:<12} pid {child.pid:<8} {described.get(child.name, '')}"
            f"  (log {child.log_path})"
        )
    sid = DEMO_SESSION
    lines += [
        "",
        "Try it from another shell:",
        f'  {jetledger} send --nats-url {nats} --agent-type {DEMO_AGENT_TYPE} --session {sid} "hello" --wait 30',  # noqa: E501
        f"  curl {url}/v1/sessions/{sid}/transcript",
        f"  curl -N {url}/v1/sessions/{sid}/stream",
        f"  {jetledger} tail {sid} --nats-url {nats}",
        f"  {jetledger} runs --db {shlex.quote(ready.db_url)}",
        "",
        "Ctrl-C stops everything; 'jetledger up' again continues where this one stopped.",
    ]
    return "\n".join(lines)


async def _main(options: UpOptions, settings: UpSettings, out: TextIO, err: TextIO) -> int:
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        # The first Ctrl-C stops in order; a second one kills what is still running.
        (hurry if stop.is_set() else stop).set()
        if hurry.is_set():
            print("jetledger up: hurrying: killing what is still running", file=err, flush=True)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    system = System(options, settings)
    failure: str | None = None
    try:
        failure = await _serve(system, stop, out)
    except (UpError, ChildError, EventStoreError, OSError, TimeoutError) as exc:
        failure = str(exc) or type(exc).__name__
    finally:
        print("jetledger up: stopping", file=err, flush=True)
        problems = await system.shutdown(hurry)
    for line in ([failure] if failure else []) + problems:
        print(f"jetledger up: {line}", file=err, flush=True)
    if failure is None and not problems:
        print("jetledger up: stopped cleanly", file=err, flush=True)
        return 0
    return 1


async def _serve(system: System, stop: asyncio.Event, out: TextIO) -> str | None:
    """Start, print the banner, watch; the failure to report, ``None`` on a stop signal."""
    stopping = asyncio.create_task(stop.wait())
    try:
        starting = asyncio.create_task(system.start())
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return None
        print(banner(starting.result(), _jetledger_command()), file=out, flush=True)
        watching = asyncio.create_task(system.watch())
        await asyncio.wait((watching, stopping), return_when=asyncio.FIRST_COMPLETED)
        if watching.done():
            return str(watching.result())
        watching.cancel()
        return None
    finally:
        stopping.cancel()


def up(
    *,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the log, read model and logs live.")
    ] = Path(".jetledger"),
    nats_url: Annotated[
        str | None,
        typer.Option("--nats-url", help="Use this NATS server instead of the embedded one."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Read-model URL (default: SQLite DATA_DIR/readmodel.db)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="API port; 0 picks a free one (default: 8000, or a free one if taken)."),
    ] = None,
    ready_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to get ready (env JETLEDGER_UP_READY_TIMEOUT, default 60)."),
    ] = None,
    stop_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds each part gets to stop (env JETLEDGER_UP_STOP_TIMEOUT, default 20)."
        ),
    ] = None,
    nats_start_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds for nats-server to start (JETLEDGER_UP_NATS_START_TIMEOUT, 10)."
        ),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option(help="The demo worker's id (default: up-echo).")
    ] = None,
) -> None:
    """Run the whole system: NATS, projector, HTTP API and the echo demo worker.

    Data lives under --data-dir (logs in DATA_DIR/logs). Ctrl-C or SIGTERM stops all of it
    cleanly; running 'up' again in the same directory continues where it stopped.
    """
    try:
        settings = UpSettings.from_env(
            ready_timeout=ready_timeout,
            stop_timeout=stop_timeout,
            nats_start_timeout=nats_start_timeout,
            worker_id=worker_id,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    options = UpOptions(data_dir=data_dir, nats_url=nats_url, db_url=db, api_port=port)
    try:
        with _exclusive(data_dir):
            code = asyncio.run(_main(options, settings, sys.stdout, sys.stderr))
    except DataDirBusyError as exc:
        typer.echo(f"jetledger up: {exc}", err=True)
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``up`` to the ``jetledger`` app."""
    app.command()(up)


__all__ = ["banner", "register", "up"]
