"""Run commands of the CLI: ``send`` (ask an agent type), ``tail`` (follow a session) and
``worker`` (serve agent types)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import typer
from pydantic import JsonValue

from eventstore.catalog_common import content_text
from eventstore.envelope import Event
from eventstore.errors import EventStoreError
from eventstore.settings import StoreSettings
from gateway.client import GatewayClient, GatewayError, StreamedEvent
from runners.app import load_worker_class, run_worker

NatsUrl = Annotated[str, typer.Option("--nats-url", envvar="JETLEDGER_NATS_URL", help="NATS URL.")]

SHORT_CONTENT = 60
"""Characters of content ``tail`` shows per event."""


class RunNotCompleted(GatewayError):
    """The run ended otherwise than ``run.completed``."""


def _parse_metadata(pairs: list[str]) -> dict[str, JsonValue]:
    metadata: dict[str, JsonValue] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--meta")
        try:
            metadata[key] = json.loads(raw)
        except json.JSONDecodeError:
            metadata[key] = raw  # a bare word is a string
    return metadata


def event_summary(event: Event) -> str:
    """The short text of an event: its content, delta, state line or error."""
    data = event.data
    if event.type in ("run.failed", "run.dead_lettered"):
        error = getattr(data, "error", None) or getattr(data, "last_error", None)
        text = f"{error.type}: {error.message}" if error is not None else ""
    elif hasattr(data, "text"):
        text = str(data.text)
    elif hasattr(data, "content"):
        text = content_text(data.content)
    elif hasattr(data, "reason"):
        text = str(data.reason or "")
    else:
        text = ""
    text = " ".join(text.split())
    return text if len(text) <= SHORT_CONTENT else text[: SHORT_CONTENT - 1] + "…"


def _outcome(terminal: Event) -> str:
    """The run's final content; raises :class:`RunNotCompleted` for any other ending."""
    if terminal.type != "run.completed":
        detail = event_summary(terminal)
        raise RunNotCompleted(
            f"run {terminal.run_id} ended {terminal.type}" + (f": {detail}" if detail else "")
        )
    return content_text(getattr(terminal.data, "content", None))


async def _stream_run(client: GatewayClient, run_id: str, from_seq: int) -> Event:
    terminal: Event | None = None
    async for streamed in client.stream(run_id=run_id, from_seq=from_seq):
        if streamed.event.type == "message.delta":
            typer.echo(getattr(streamed.event.data, "text", ""), nl=False)
        terminal = streamed.event
    typer.echo("")
    assert terminal is not None  # a run's stream ends only after its terminal event
    return terminal


async def _send(
    *,
    nats_url: str,
    agent_type: str,
    session_id: str,
    text: str,
    metadata: dict[str, JsonValue],
    wait: float | None,
    stream: bool,
    queue: bool,
) -> None:
    async with GatewayClient(nats_url, StoreSettings.from_env()) as client:
        sent = await client.send_message(
            agent_type, session_id, text, metadata=metadata, queue_if_no_worker=queue
        )
        typer.echo(sent.run_id)
        if stream:
            following = _stream_run(client, sent.run_id, sent.seq)
            terminal = await (following if wait is None else asyncio.wait_for(following, wait))
            _outcome(terminal)
        elif wait is not None:
            terminal = await client.wait(sent.run_id, session_id, wait)
            typer.echo(_outcome(terminal))


def send(
    text: Annotated[str, typer.Argument(help="The message content.")],
    *,
    agent_type: Annotated[str, typer.Option("--agent-type", help="Agent type to ask.")],
    session: Annotated[str, typer.Option("--session", help="Session id.")],
    wait: Annotated[
        float | None,
        typer.Option(help="Wait up to SECONDS for the run; print its final content."),
    ] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print deltas as they arrive.")] = False,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Metadata KEY=VALUE (JSON value).")
    ] = None,
    queue: Annotated[
        bool, typer.Option("--queue", help="Queue the message even if no worker is live.")
    ] = False,
    nats_url: NatsUrl = "",
) -> None:
    """Ask an agent type; print the run id (and, with --wait / --stream, its result).

    Exits 1 when no worker serves the agent type, or, with --wait / --stream, when the
    run did not complete (failed, cancelled, dead-lettered or timed out).
    """
    metadata = _parse_metadata(meta or [])
    try:
        asyncio.run(
            _send(
                nats_url=nats_url,
                agent_type=agent_type,
                session_id=session,
                text=text,
                metadata=metadata,
                wait=wait,
                stream=stream,
                queue=queue,
            )
        )
    except TimeoutError as exc:
        message = str(exc) or f"the run did not end within {wait:g}s"
        typer.echo(f"jetledger send: {message}", err=True)
        raise typer.Exit(1) from exc
    except (GatewayError, EventStoreError, OSError) as exc:
        typer.echo(f"jetledger send: {exc}", err=True)
        raise typer.Exit(1) from exc


async def _tail(nats_url: str, session_id: str, from_seq: int) -> None:
    async with GatewayClient(nats_url, StoreSettings.from_env()) as client:
        async for streamed in client.stream(session_id=session_id, from_seq=from_seq):
            typer.echo(_tail_line(streamed))


def _tail_line(streamed: StreamedEvent) -> str:
    event = streamed.event
    return f"{streamed.seq:>8}  {event.type:<20} {event.run_id or '-':<38} {event_summary(event)}"


def tail(
    session: Annotated[str, typer.Argument(help="Session id.")],
    from_seq: Annotated[int, typer.Option("--from-seq", min=1, help="First sequence.")] = 1,
    nats_url: NatsUrl = "",
) -> None:
    """Print a session's events live (seq, type, run id, content) until Ctrl-C."""
    try:
        asyncio.run(_tail(nats_url, session, from_seq))
    except KeyboardInterrupt:
        return
    except (EventStoreError, OSError) as exc:
        typer.echo(f"jetledger tail: {exc}", err=True)
        raise typer.Exit(1) from exc


def worker(
    worker_class: Annotated[
        str, typer.Option("--worker-class", help="The worker, as package.module:ClassName.")
    ],
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="Worker id [default: a random one].")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(help="Runs at once [default: $JETLEDGER_WORKER_MAX_CONCURRENCY].")
    ] = None,
    nats_url: NatsUrl = "",
) -> None:
    """Serve the worker's agent types until SIGTERM / Ctrl-C (in-flight runs drain first)."""
    try:
        cls = load_worker_class(worker_class)
    except (ValueError, TypeError, ImportError) as exc:
        typer.echo(f"jetledger worker: cannot load {worker_class!r}: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_worker(cls, worker_id=worker_id, nats_url=nats_url, max_concurrency=max_concurrency)
    except (EventStoreError, OSError) as exc:
        typer.echo(f"jetledger worker: {exc}", err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add ``send``, ``tail`` and ``worker`` to ``app``."""
    app.command()(send)
    app.command()(tail)
    app.command()(worker)


__all__ = ["event_summary", "register"]
