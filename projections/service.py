"""Running the projector as a service, with blue/green schema upgrades.

A projector that finds the read model at an older schema version builds the new
version's tables from sequence 1 while the old tables keep answering readers, then
switches readers over (``activate``) and drops the old tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from eventstore.errors import EventStoreError
from eventstore.store import EventStore
from projections.backends import open_backend
from projections.contract import SCHEMA_VERSION, ReadModelBackend
from projections.projector import BatchApplied, Projector, ProjectorSettings

log = logging.getLogger(__name__)


class NewerSchemaError(RuntimeError):
    """The read model was written by a newer jetledger."""


async def prepare(
    store: EventStore,
    backend: ReadModelBackend,
    *,
    settings: ProjectorSettings | None = None,
    on_batch: Callable[[BatchApplied], None] | None = None,
) -> Projector:
    """Start ``backend`` and make it the active version, rebuilding first if needed."""
    projector = Projector(store, backend, settings, on_batch=on_batch)
    await projector.start()
    active = await backend.active_version()
    if active is not None and active > backend.schema_version:
        raise NewerSchemaError(
            f"the read model is at schema version {active}, newer than this jetledger's "
            f"{backend.schema_version}: upgrade jetledger or project into another database"
        )
    if active != backend.schema_version:
        log.info(
            "read model schema v%s -> v%s: rebuilding from sequence %d while v%s keeps answering",
            active,
            backend.schema_version,
            projector.checkpoint + 1,
            active,
        )
        await projector.catch_up()
        await backend.activate()
        if active is not None:
            await backend.drop_version(active)
        log.info(
            "read model v%s is active at sequence %d", backend.schema_version, projector.checkpoint
        )
    return projector


async def run_projection(
    store: EventStore,
    db_url: str,
    *,
    stop: asyncio.Event | None = None,
    settings: ProjectorSettings | None = None,
    on_batch: Callable[[BatchApplied], None] | None = None,
    schema_version: int = SCHEMA_VERSION,
    status: Callable[[Projector], None] | None = None,
    status_every: float = 5.0,
) -> None:
    """Project into ``db_url`` until ``stop`` is set; ``status`` is called every
    ``status_every`` seconds with the projector (its lag freshly measured)."""
    backend = open_backend(db_url, schema_version=schema_version)
    reporter: asyncio.Task[None] | None = None
    try:
        projector = await prepare(store, backend, settings=settings, on_batch=on_batch)
        if status is not None:
            reporter = asyncio.create_task(_report(projector, status, status_every))
        await projector.run(stop)
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        await backend.close()


async def _report(projector: Projector, status: Callable[[Projector], None], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await projector.refresh_lag()
        except EventStoreError as exc:  # NATS away for a moment: report what we know
            log.warning("cannot measure projection lag: %s", exc)
        status(projector)


__all__ = ["NewerSchemaError", "prepare", "run_projection"]
