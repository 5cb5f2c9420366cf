"""Read-model commands of the CLI: project, replay, verify, runs, audit, export."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.tree import Tree

from eventstore.codec import Undecodable
from eventstore.connection import ConnectOptions
from eventstore.errors import EventStoreError
from eventstore.settings import StoreSettings, nats_url_from_env
from eventstore.store import EventStore
from projections.audit import AuditNode, audit_tree
from projections.backends import DEFAULT_DB_URL, normalize_url, open_backend
from projections.contract import ReadModelBackend, RunFilter
from projections.projector import BatchApplied, Projector
from projections.service import run_projection
from projections.verify import verify

console = Console(stderr=True)

NatsUrl = Annotated[str, typer.Option("--nats-url", envvar="JETLEDGER_NATS_URL", help="NATS URL.")]
DbUrl = Annotated[
    str, typer.Option("--db", envvar="JETLEDGER_DB_URL", help="Read-model database URL.")
]


@contextlib.asynccontextmanager
async def _store(nats_url: str) -> AsyncIterator[EventStore]:
    store = await EventStore.open(
        ConnectOptions(url=nats_url or nats_url_from_env()), StoreSettings.from_env()
    )
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _backend(url: str, *, namespace: str = "jl") -> AsyncIterator[ReadModelBackend]:
    backend = open_backend(url, namespace=namespace)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10} ev/s"),
        TimeElapsedColumn(),
        console=console,
    )


def _batch_reporter(
    progress: Progress, task: TaskID, start_seq: int
) -> Callable[[BatchApplied], None]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    applied = 0

    def report(batch: BatchApplied) -> None:
        nonlocal applied
        applied += batch.events
        rate = applied / max(loop.time() - started, 1e-6)
        progress.update(task, completed=batch.last_seq - start_seq + 1, rate=f"{rate:,.0f}")

    return report


async def _apply_range(
    store: EventStore, backend: ReadModelBackend, label: str, from_seq: int, until_seq: int
) -> Projector:
    """Fold sequences ``from_seq``..``until_seq`` into ``backend`` behind a progress bar."""
    with _progress() as progress:
        task = progress.add_task(label, total=max(0, until_seq - from_seq + 1), rate="-")
        projector = Projector(store, backend, on_batch=_batch_reporter(progress, task, from_seq))
        await projector.start()
        projector.start_seq = from_seq
        await projector.catch_up(until_seq)
    return projector


def _run(coro: object) -> None:
    # These commands allocate many short-lived objects per event; collecting the young
    # generation less often measured ~30% faster projection (ops/bench/README.md).
    gc.set_threshold(50_000, 20, 100)
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except (EventStoreError, OSError, ValueError, RuntimeError, LookupError) as exc:
        console.print(f"[red]jetledger: {exc}")
        raise typer.Exit(1) from exc


def project(nats_url: NatsUrl = "", db: DbUrl = DEFAULT_DB_URL) -> None:
    """Run the projector: fold the log into the read model and follow it (Ctrl-C stops)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with _store(nats_url) as store:
            console.print(f"projecting into {normalize_url(db)} (Ctrl-C stops)")
            await run_projection(store, db, stop=stop, status=_print_status)
        console.print("projector stopped")

    _run(main())


def replay(
    to: Annotated[str, typer.Option("--to", help="Target database URL (a new one).")],
    nats_url: NatsUrl = "",
    from_seq: Annotated[int, typer.Option(help="First sequence to apply.")] = 1,
    until_seq: Annotated[int | None, typer.Option(help="Last sequence to apply.")] = None,
    until_time: Annotated[
        datetime | None, typer.Option(help="Apply what was stored before this time (UTC).")
    ] = None,
) -> None:
    """Rebuild the read model into another database, up to a sequence or a moment."""

    async def main() -> None:
        async with _store(nats_url) as store, _backend(to) as backend:
            target = until_seq
            if until_time is not None:
                moment = until_time if until_time.tzinfo else until_time.replace(tzinfo=UTC)
                target = await store.seq_before(moment)
            if target is None:
                target = await store.last_seq()
            projector = await _apply_range(store, backend, "replay", from_seq, target)
            await backend.activate()
            console.print(
                f"replayed into {normalize_url(to)} up to sequence {projector.checkpoint}"
            )

    _run(main())


def verify_command(nats_url: NatsUrl = "", db: DbUrl = DEFAULT_DB_URL) -> None:
    """Rebuild into a scratch database and compare with the live read model."""

    async def main() -> bool:
        url = normalize_url(db)
        with tempfile.TemporaryDirectory(prefix="jetledger-verify-") as scratch_dir:
            scratch_url, namespace = _scratch_for(url, Path(scratch_dir))
            async with (
                _store(nats_url) as store,
                _backend(url) as live,
                _backend(scratch_url, namespace=namespace) as scratch,
            ):
                with _progress() as progress:
                    task = progress.add_task("rebuild", total=await live.checkpoint(), rate="-")
                    report = await verify(
                        store, live, scratch, on_batch=_batch_reporter(progress, task, 1)
                    )
                if namespace != "jl":
                    await scratch.drop_version(scratch.schema_version)
        table = Table("table", "rows", title=f"verify at sequence {report.checkpoint}")
        for name, count in report.rows.items():
            table.add_row(name, str(count))
        console.print(table)
        for difference in report.differences[:20]:
            console.print(
                f"[red]{difference.table} {difference.key}:[/red] "
                f"live {difference.live} != rebuilt {difference.rebuilt}"
            )
        console.print(
            "[green]equal" if report.equal else f"[red]{len(report.differences)} differences"
        )
        return report.equal

    try:
        equal = asyncio.run(main())
    except (EventStoreError, OSError, ValueError, RuntimeError) as exc:
        console.print(f"[red]jetledger verify: {exc}")
        raise typer.Exit(1) from exc
    raise typer.Exit(0 if equal else 1)


def runs(
    db: DbUrl = DEFAULT_DB_URL,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    agent_type: Annotated[str | None, typer.Option(help="Only this agent type.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """List runs from the read model, newest first."""

    async def main() -> None:
        async with _backend(db) as backend:
            rows = await backend.list_runs(
                RunFilter(status=status, agent_type=agent_type, session_id=session, limit=limit)
            )
        table = Table("run", "status", "agent type", "session", "worker", "attempts", "ended")
        for run in rows:
            ended = run.ended_at.isoformat(timespec="seconds") if run.ended_at else ""
            table.add_row(
                run.run_id,
                run.status,
                run.agent_type or "",
                run.session_id,
                run.worker_id or "",
                str(run.attempts),
                ended,
            )
        Console().print(table)

    _run(main())


def audit(run_id: str, db: DbUrl = DEFAULT_DB_URL) -> None:
    """Show the call tree a run belongs to, with statuses and timings."""

    async def main() -> None:
        async with _backend(db) as backend:
            root = await audit_tree(backend, run_id)
        tree = Tree(_label(root, run_id))
        _grow(tree, root, run_id)
        Console().print(tree)

    _run(main())


def export(
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    format: Annotated[Literal["jsonl", "duckdb", "parquet"], typer.Option("--format")] = "jsonl",
    nats_url: NatsUrl = "",
    from_seq: Annotated[int, typer.Option()] = 1,
    until_seq: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Export the log: JSONL (one event per line), or a DuckDB / Parquet read model."""

    async def main() -> None:
        async with _store(nats_url) as store:
            target = until_seq if until_seq is not None else await store.last_seq()
            if format == "jsonl":
                await _export_jsonl(store, out, from_seq, target)
                return
            duck_path = out if format == "duckdb" else Path(tempfile.mkdtemp()) / "export.duckdb"
            async with _backend(f"duckdb:///{duck_path}") as backend:
                await _apply_range(store, backend, "export", from_seq, target)
                await backend.activate()
            if format == "parquet":
                _duckdb_events_to_parquet(duck_path, out)
        console.print(f"exported sequences {from_seq}..{target} to {out}")

    _run(main())


def register(app: typer.Typer) -> None:
    """Add the read-model commands to the ``jetledger`` app."""
    app.command(name="project")(project)
    app.command(name="replay")(replay)
    app.command(name="verify")(verify_command)
    app.command(name="runs")(runs)
    app.command(name="audit")(audit)
    app.command(name="export")(export)


def _print_status(projector: Projector) -> None:
    console.print(
        f"applied through sequence {projector.checkpoint:,}, lag {projector.lag:,} events"
    )


def _scratch_for(url: str, directory: Path) -> tuple[str, str]:
    """A scratch database of the same kind as ``url``, and the namespace to use in it."""
    if url.startswith("postgresql"):
        return url, f"jlverify{uuid.uuid4().hex[:8]}"
    if url.startswith("duckdb:///"):
        return f"duckdb:///{directory / 'scratch.duckdb'}", "jl"
    return f"sqlite+aiosqlite:///{directory / 'scratch.db'}", "jl"


STATUS_COLOURS = {
    "completed": "green",
    "failed": "red",
    "dead_lettered": "red",
    "cancelled": "yellow",
}


def _label(node: AuditNode, highlight: str) -> str:
    run = node.run
    timing = []
    if node.queued_seconds is not None:
        timing.append(f"queued {node.queued_seconds:.3f}s")
    if node.run_seconds is not None:
        timing.append(f"ran {node.run_seconds:.3f}s")
    name = f"[bold]{run.run_id}[/bold]" if run.run_id == highlight else run.run_id
    colour = STATUS_COLOURS.get(run.status, "cyan")
    return (
        f"{name} [{colour}]{run.status}[/{colour}] {run.agent_type or '?'} "
        f"worker={run.worker_id or '-'} attempts={run.attempts} {' '.join(timing)}"
    )


def _grow(tree: Tree, node: AuditNode, highlight: str) -> None:
    for child in node.children:
        _grow(tree.add(_label(child, highlight)), child, highlight)


async def _export_jsonl(store: EventStore, out: Path, from_seq: int, until_seq: int) -> None:
    with out.open("w", encoding="utf-8") as sink, _progress() as progress:
        task = progress.add_task("export", total=max(0, until_seq - from_seq + 1), rate="-")
        async with contextlib.aclosing(store.records(from_seq, until_seq=until_seq)) as records:
            async for record in records:
                if isinstance(record.item, Undecodable):
                    line = {
                        "seq": record.seq,
                        "subject": record.subject,
                        "undecodable": record.item.reason,
                    }
                else:
                    line = {
                        "seq": record.seq,
                        "subject": record.subject,
                        "event": json.loads(record.item.to_json()),
                    }
                sink.write(json.dumps(line, ensure_ascii=False) + "\n")
                progress.update(task, completed=record.seq - from_seq + 1)


def _duckdb_events_to_parquet(duck_path: Path, out: Path) -> None:
    import duckdb  # noqa: PLC0415 - only this command needs it

    with duckdb.connect(str(duck_path), read_only=True) as conn:
        tables = [
            row[0]
            for row in conn.execute("SHOW TABLES").fetchall()
            if str(row[0]).endswith("_events")
        ]
        if not tables:
            raise RuntimeError("the export database has no events table")
        # key_hash: the DuckDB backend's look-up column, not a field of the EventLog
        described = conn.execute(f"DESCRIBE {tables[0]}").fetchall()
        columns = ", ".join(f'"{row[0]}"' for row in described if row[0] != "key_hash")
        conn.execute(
            f"COPY (SELECT {columns} FROM {tables[0]} ORDER BY seq) TO '{out}' (FORMAT parquet)"
        )


__all__ = ["register"]
