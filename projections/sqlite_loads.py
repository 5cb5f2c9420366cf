"""A SQLite file's batch loads in one thread hop (:meth:`SqliteLoadThread.load`).

Through SQLAlchemy and aiosqlite a load is a dozen hops between the event loop and the
driver thread (connect, one execute and one fetch per table, the rollback on return),
and each hop waits for the loop's next turn. The loop is busy parsing the next records
meanwhile (several ms a turn), so a load of a 2,000-event batch took 120-170 ms of wall
time against ~15 ms of work, and the projector sat idle behind it (ops/bench/README.md,
session 5). Here the whole load is one function run in a thread of its own, on a plain
``sqlite3`` connection, like the DuckDB backend's loads.

The queries and row decoding are :class:`~projections.sql_reads.KeyLoader`'s, so the
rows are what the SQLAlchemy path returns. The load reads one snapshot (one read
transaction); the overlay makes the fold independent of whether the previous batch's
commit is in it (:mod:`projections.overlay`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from projections.contract import BatchKeys, Snapshot
from projections.sql_reads import KeyLoader
from projections.sql_schema import ROW_TYPES

RowsOf = Callable[[str, Collection[str]], list[Sequence[Any]]]


LOADED_TABLES = ("runs", "sessions", "groups", "transcript", "workers", "events")


def snapshot_targets(
    keys: BatchKeys, snapshot: Snapshot
) -> list[tuple[str, set[str], dict[str, Any]]]:
    """``(table, keys to load, where the rows go)`` for every keyed table of a load."""
    return [
        ("runs", keys.run_ids, snapshot.runs),
        ("sessions", keys.session_ids, snapshot.sessions),
        ("groups", keys.group_ids, snapshot.groups),
        ("transcript", keys.turn_ids, snapshot.turns),
        ("workers", keys.worker_ids, snapshot.workers),
    ]


def fill_snapshot(keys: BatchKeys, rows_of: RowsOf) -> Snapshot:
    """The snapshot for ``keys``, with ``rows_of(table, ids)`` running the queries."""
    snapshot = Snapshot()
    for table_name, ids, found in snapshot_targets(keys, snapshot):
        row_type = ROW_TYPES[table_name]
        for values in rows_of(table_name, ids):
            found[values[0]] = row_type(*values)  # the key is the first column
    known = rows_of("events", keys.event_ids)
    snapshot.known_event_ids.update(event_id for (event_id,) in known)
    return snapshot


class SqliteLoadThread:
    """One read connection to a SQLite file, used by one thread of its own."""

    def __init__(
        self, database: str, pragmas: Sequence[str], loaders: Mapping[str, KeyLoader]
    ) -> None:
        self._database = database
        self._pragmas = list(pragmas)
        self._loaders = dict(loaders)  # built by the caller: the thread only reads them
        self._connection: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-load")

    async def load(self, keys: BatchKeys) -> Snapshot:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._load, keys)

    def _load(self, keys: BatchKeys) -> Snapshot:
        connection = self._connected()
        # One read transaction: every table from the same committed state.
        connection.execute("BEGIN")
        try:
            return fill_snapshot(
                keys, lambda table, ids: self._loaders[table].rows_sync(connection, ids)
            )
        finally:
            connection.execute("COMMIT")

    def _connected(self) -> sqlite3.Connection:
        if self._connection is None:
            # autocommit mode: the read transaction is the explicit BEGIN ... COMMIT
            connection = sqlite3.connect(self._database, isolation_level=None)
            for pragma in self._pragmas:
                connection.execute(pragma)
            self._connection = connection
        return self._connection

    async def close(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


__all__ = ["LOADED_TABLES", "SqliteLoadThread", "fill_snapshot", "snapshot_targets"]
