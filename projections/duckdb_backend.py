"""The read model in a DuckDB file: EventLog analytics and audit queries (DESIGN §5).

DuckDB runs in-process and blocks, so every call on the connection runs in ONE
dedicated worker thread owned by the backend: the event loop never waits on the
database, and the connection is only ever touched by the thread that opened it. Each
job is complete in itself (a whole transaction, or one query), so a caller cancelled
while its job runs cannot leave a transaction open.

**One writer process.** A DuckDB file opened read-write is locked by that process: no
other process may open it, not even read-only. Several processes may share it only
when every one of them opens it read-only. Hence:

* only the projector writes (``read_only=False``, the default);
* a reader in another process opens with ``read_only=True``, and only while no
  projector has the file open (offline audit, after ``jetledger export``);
* an API that serves while the projector runs reads the SQL backend (SQLite or
  PostgreSQL), or a copy / export of the DuckDB file.

Within one process several backends may open the same file read-write (blue/green
versions side by side, a rival projector in tests): DuckDB shares one database between
them. Mixing read-only and read-write opens of one file in one process is refused by
DuckDB.

Example::

    backend = DuckDbReadModel("./.jetledger/readmodel.duckdb")
    await backend.start()
    snapshot = await backend.load(keys)
    await backend.commit(fold(records, snapshot))
    await backend.close()
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from projections.contract import SCHEMA_VERSION, BatchKeys, Changes, RunFilter, Snapshot
from projections.duckdb_database import (
    CheckpointNotAdvancedError,
    DuckDbDatabase,
    ReadModelNotFoundError,
)
from projections.rows import (
    EventRow,
    GroupRow,
    RejectedRow,
    RunRow,
    SessionRow,
    StateRow,
    TranscriptRow,
    WorkerRow,
)

T = TypeVar("T")
_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,23}")


class ReadModelNotStartedError(RuntimeError):
    """A call before ``start()`` or after ``close()``."""


class ReadOnlyReadModelError(RuntimeError):
    """A write through a backend opened with ``read_only=True``."""


class DuckDbReadModel:
    """:class:`~projections.contract.ReadModelBackend` on a DuckDB file.

    Tables are ``{namespace}_v{schema_version}_{table}`` for every table in ``TABLES``,
    plus ``{namespace}_v{schema_version}_checkpoint`` (``id`` = 1, ``seq``) and the
    shared ``{namespace}_meta`` (``key``, ``value``; ``active_version``).
    """

    name = "duckdb"

    def __init__(
        self,
        path: str | Path,
        *,
        namespace: str = "jl",
        schema_version: int = SCHEMA_VERSION,
        read_only: bool = False,
    ) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace {namespace!r} must be 1-24 of a-z, 0-9, _ starting with a letter"
            )
        self.path = str(path)
        self.namespace = namespace
        self.schema_version = schema_version
        self.read_only = read_only
        self._executor: ThreadPoolExecutor | None = None
        self._database: DuckDbDatabase | None = None
        # Batch loads go through a second connection in a thread of their own, so the
        # projector can load (and fold) batch N+1 while batch N commits in the first one.
        self._loader: ThreadPoolExecutor | None = None
        self._load_database: DuckDbDatabase | None = None

    async def start(self) -> None:
        if self._database is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"duckdb-{self.namespace}")
        opening = executor.submit(self._open)
        try:
            database, load_database = await asyncio.wrap_future(opening)
        except BaseException:
            # Cancelled mid-open, the open still completes in the worker: close what it
            # opened there (jobs run in order) so the file lock is not left behind.
            executor.submit(_close_opened, opening)
            executor.shutdown(wait=False)
            raise
        self._database, self._load_database = database, load_database
        self._executor = executor
        self._loader = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"duckdb-{self.namespace}-load"
        )

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        load_database, loader = self._load_database, self._loader
        self._load_database = self._loader = None
        if load_database is not None and loader is not None:
            try:
                await loop.run_in_executor(loader, load_database.close)
            finally:
                loader.shutdown(wait=False)
        database, executor = self._database, self._executor
        self._database = self._executor = None
        if database is None or executor is None:
            return
        try:
            await loop.run_in_executor(executor, database.close)
        finally:
            executor.shutdown(wait=False)  # its last job is done: the thread just exits

    async def checkpoint(self) -> int:
        return await self._call(lambda db: db.checkpoint())

    async def load(self, keys: BatchKeys) -> Snapshot:
        database, loader = self._load_database, self._loader
        if database is None or loader is None:
            raise ReadModelNotStartedError(
                f"DuckDB read model {self.path!r} is not open: await start() first"
            )
        return await asyncio.get_running_loop().run_in_executor(loader, database.load, keys)

    async def commit(self, changes: Changes) -> None:
        self._refuse_writes("commit")
        await self._call(lambda db: db.commit(changes))

    async def active_version(self) -> int | None:
        return await self._call(lambda db: db.active_version())

    async def activate(self) -> None:
        self._refuse_writes("activate")
        await self._call(lambda db: db.activate())

    async def drop_version(self, version: int) -> None:
        """Drop the tables of ``version`` (missing tables are fine). Refuses this
        backend's own version and the active one: readers may be using them."""
        self._refuse_writes("drop_version")
        await self._call(lambda db: db.drop_version(version))

    async def drop_namespace(self) -> None:
        """Drop every table of this namespace: all versions and the meta table. For
        scratch databases (``verify``) and tests."""
        self._refuse_writes("drop_namespace")
        await self._call(lambda db: db.drop_namespace())

    @property
    def table_prefix(self) -> str:
        """``{namespace}_v{schema_version}``: the prefix of this version's tables."""
        return f"{self.namespace}_v{self.schema_version}"

    async def dump(self) -> dict[str, list[dict[str, Any]]]:
        return await self._call(lambda db: db.dump())

    async def get_run(self, run_id: str) -> RunRow | None:
        return await self._call(lambda db: db.get_run(run_id))

    async def list_runs(self, query: RunFilter) -> list[RunRow]:
        return await self._call(lambda db: db.list_runs(query))

    async def children(self, run_id: str) -> list[RunRow]:
        return await self._call(lambda db: db.children(run_id))

    async def tree(self, root_run_id: str) -> list[RunRow]:
        return await self._call(lambda db: db.tree(root_run_id))

    async def run_events(self, run_id: str) -> list[EventRow]:
        return await self._call(lambda db: db.run_events(run_id))

    async def session_events(
        self, session_id: str, after_seq: int = 0, limit: int = 100, event_type: str | None = None
    ) -> list[EventRow]:
        return await self._call(
            lambda db: db.events(after_seq, limit, event_type, session_id=session_id)
        )

    async def events(
        self, after_seq: int = 0, limit: int = 100, event_type: str | None = None
    ) -> list[EventRow]:
        return await self._call(lambda db: db.events(after_seq, limit, event_type))

    async def get_session(self, session_id: str) -> SessionRow | None:
        return await self._call(lambda db: db.get_session(session_id))

    async def list_sessions(
        self, limit: int = 50, before: datetime | None = None
    ) -> list[SessionRow]:
        return await self._call(lambda db: db.list_sessions(limit, before))

    async def sessions_as_of(
        self, as_of_seq: int, before_position: int | None = None, limit: int = 50
    ) -> list[tuple[int, SessionRow]]:
        return await self._call(lambda db: db.sessions_as_of(as_of_seq, before_position, limit))

    async def transcript(self, session_id: str) -> list[TranscriptRow]:
        return await self._call(lambda db: db.transcript(session_id))

    async def get_group(self, group_id: str) -> GroupRow | None:
        return await self._call(lambda db: db.get_group(group_id))

    async def list_workers(self) -> list[WorkerRow]:
        return await self._call(lambda db: db.list_workers())

    async def get_state(self, scope: str, scope_id: str, key: str) -> StateRow | None:
        return await self._call(lambda db: db.get_state(scope, scope_id, key))

    async def list_rejected(self, after_seq: int = 0, limit: int = 100) -> list[RejectedRow]:
        return await self._call(lambda db: db.list_rejected(after_seq, limit))

    async def counts(self) -> dict[str, int]:
        return await self._call(lambda db: db.counts())

    # ----------------------------------------------------------- plumbing

    def _open(self) -> tuple[DuckDbDatabase, DuckDbDatabase]:
        """Runs in the worker thread, which then owns the connection; the second
        connection, for batch loads, is used by the load thread only."""
        database = DuckDbDatabase.open(
            self.path, self.namespace, self.schema_version, read_only=self.read_only
        )
        try:
            return database, database.sibling()
        except BaseException:
            database.close()
            raise

    async def _call(self, job: Callable[[DuckDbDatabase], T]) -> T:
        database, executor = self._database, self._executor
        if database is None or executor is None:
            raise ReadModelNotStartedError(
                f"DuckDB read model {self.path!r} is not open: await start() first"
            )
        return await asyncio.get_running_loop().run_in_executor(executor, job, database)

    def _refuse_writes(self, operation: str) -> None:
        if self.read_only:
            raise ReadOnlyReadModelError(
                f"{operation}: DuckDB read model {self.path!r} was opened read-only; only the "
                "projector process writes (open it with read_only=False there)"
            )


def _close_opened(opening: Future[tuple[DuckDbDatabase, DuckDbDatabase]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        for database in reversed(opening.result()):
            database.close()


__all__ = [
    "CheckpointNotAdvancedError",
    "DuckDbReadModel",
    "ReadModelNotFoundError",
    "ReadModelNotStartedError",
    "ReadOnlyReadModelError",
]
