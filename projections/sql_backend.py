"""The read model on SQLAlchemy 2 async: SQLite (aiosqlite, the default) and PostgreSQL
(asyncpg), one class for both.

``commit`` writes a batch and moves the checkpoint in one transaction (G4): the guarded
checkpoint update runs first, so a second projector racing on the same tables blocks on
it and then fails with ``ValueError`` before it writes a row. Rows go in through one
``executemany`` per table (:mod:`projections.sql_writes`), never row by row.

>>> model = SqlReadModel("sqlite+aiosqlite:///./.jetledger/readmodel.db")  # doctest: +SKIP
>>> await model.start()  # doctest: +SKIP
>>> await model.commit(Changes(last_seq=10, events=[...]))  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Insert,
    MetaData,
    Table,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from projections.contract import SCHEMA_VERSION, BatchKeys, Changes, Snapshot
from projections.sql_queries import SqlQueries
from projections.sql_reads import KeyLoader
from projections.sql_schema import (
    CHECKPOINT,
    META,
    ROW_TYPES,
    build_tables,
    meta_table_name,
)
from projections.sql_writes import BulkWriter, copy_rows
from projections.sqlite_loads import LOADED_TABLES, SqliteLoadThread, snapshot_targets
from projections.sqlite_process import CheckpointNotAdvancedError, SqliteWriterProcess

DEFAULT_URL = "sqlite+aiosqlite:///./.jetledger/readmodel.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 64 * 1024
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000
"""About 40 MB of WAL between checkpoints: the event-id index is random, so each batch
rewrites most of its pages; checkpointing less often copies each page once, not once
per batch (about +20% events/s). 40,000 pages took another 1-3 us of the write process's
CPU per event off, but a checkpoint runs inside the commit that triggers it, and 4x
longer ones put the live projector's lag p99 over its target (session 5)."""
ACTIVE_VERSION_KEY = "active_version"

_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,23}")

# (Changes attribute, table): inserted first, then upserted whole by primary key
_INSERTS = (("events", "events"), ("rejected", "rejected"))
_UPSERTS = (
    ("runs", "runs"),
    ("sessions", "sessions"),
    ("groups", "groups"),
    ("turns", "transcript"),
    ("workers", "workers"),
    ("states", "state"),
)

_Write = tuple[str, list[tuple[Any, ...]]]
"""(table, positional parameters of its rows)"""


class SqlReadModel(SqlQueries):
    """A :class:`~projections.contract.ReadModelBackend` on SQLite or PostgreSQL.

    ``namespace`` prefixes every table (``jl_v1_runs``, ``jl_meta``) so several read
    models, or test runs, can share one database.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        namespace: str = "jl",
        schema_version: int = SCHEMA_VERSION,
    ) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace {namespace!r} must be 1-24 of a-z, 0-9, _ starting with a letter"
            )
        self._url = make_url(url)
        backend = self._url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"{url!r}: SqlReadModel supports sqlite and postgresql URLs only")
        self.name: str = backend
        self.namespace = namespace
        self.schema_version = schema_version
        self._metadata = MetaData()
        self._tables = build_tables(self._metadata, namespace, schema_version)
        self._dialect_insert = sqlite.insert if backend == "sqlite" else postgresql.insert
        self._engine: AsyncEngine | None = None
        self._sqlite_writer: SqliteWriterProcess | None = None
        self._sqlite_loads: SqliteLoadThread | None = None
        self._writers: dict[str, BulkWriter] = {}
        self._loaders: dict[str, KeyLoader] = {}

    # ----------------------------------------------------------- lifecycle

    @property
    def engine(self) -> AsyncEngine:
        """The engine, created on first use (and again after :meth:`close`)."""
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> AsyncEngine:
        if self.name == "postgresql":
            return create_async_engine(self._url, pool_pre_ping=True)
        database = self._url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(self._url)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        return engine

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(self._metadata.create_all)
            checkpoint = self._tables[CHECKPOINT]
            await conn.execute(
                self._dialect_insert(checkpoint)
                .values(id=1, seq=0)
                .on_conflict_do_nothing(index_elements=["id"])
            )

    async def close(self) -> None:
        if self._sqlite_loads is not None:
            loads, self._sqlite_loads = self._sqlite_loads, None
            await loads.close()
        if self._sqlite_writer is not None:
            writer, self._sqlite_writer = self._sqlite_writer, None
            await writer.close()
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    # ----------------------------------------------------------- projector port

    async def checkpoint(self) -> int:
        async with self.engine.connect() as conn:
            return await self._checkpoint(conn) or 0

    async def _checkpoint(self, conn: AsyncConnection) -> int | None:
        table = self._tables[CHECKPOINT]
        seq = await conn.scalar(select(table.c.seq).where(table.c.id == 1))
        return None if seq is None else int(seq)

    async def load(self, keys: BatchKeys) -> Snapshot:
        load_thread = self._sqlite_file_loads()
        if load_thread is not None:
            return await load_thread.load(keys)
        snapshot = Snapshot()
        async with self.engine.connect() as conn:
            for table_name, ids, found in snapshot_targets(keys, snapshot):
                row_type = ROW_TYPES[table_name]
                for values in await self._loader(table_name).rows(conn, ids):
                    found[values[0]] = row_type(*values)  # the key is the first column
            known = await self._loader("events").rows(conn, keys.event_ids)
            snapshot.known_event_ids.update(event_id for (event_id,) in known)
        return snapshot

    @property
    def commit_pipeline_depth(self) -> int:
        """Commits this backend takes at once, in order (the projector's pipelining): a
        SQLite file's write process queues them (:mod:`projections.sqlite_process`)."""
        return 2 if self._sqlite_file() is not None else 1

    def _sqlite_file_loads(self) -> SqliteLoadThread | None:
        """Loads of a SQLite file in one thread hop (:mod:`projections.sqlite_loads`)."""
        if self._sqlite_loads is None and (database := self._sqlite_file()) is not None:
            loaders = {name: self._loader(name) for name in LOADED_TABLES}
            self._sqlite_loads = SqliteLoadThread(str(database), _SQLITE_PRAGMAS, loaders)
        return self._sqlite_loads

    def _loader(self, table_name: str) -> KeyLoader:
        loader = self._loaders.get(table_name)
        if loader is None:
            table = self._tables[table_name]
            if table_name == "events":  # only whether the batch's event ids exist
                key = table.c.id
                columns: list[Column[Any]] = [key]
            else:
                (key,) = table.primary_key.columns
                columns = list(table.columns)
                if columns[0] is not key:
                    raise RuntimeError(f"{table.name}: the primary key must be the first column")
            loader = KeyLoader(table, key, columns, self.engine.dialect)
            self._loaders[table_name] = loader
        return loader

    async def commit(self, changes: Changes) -> None:
        # Parameters are built before the transaction opens: the write lock is held
        # only for the statements themselves.
        inserts, upserts = self._writes(changes)
        sqlite_writer = self._sqlite_file_writer()
        if sqlite_writer is not None:
            writes = [(self._writer(table).sql, params) for table, params in inserts + upserts]
            try:
                await sqlite_writer.commit(changes.last_seq, writes)
            except CheckpointNotAdvancedError as refused:
                raise self._checkpoint_error(
                    refused.current, changes.last_seq, refused.expected
                ) from None
            return
        async with self.engine.begin() as conn:
            # first: it opens the transaction and serializes racing projectors
            await self._advance_checkpoint(conn, changes.last_seq)
            for table_name, params in inserts:
                if self.name == "postgresql":
                    await copy_rows(conn, self._tables[table_name], params)
                else:
                    await conn.exec_driver_sql(self._writer(table_name).sql, params)
            for table_name, params in upserts:
                await conn.exec_driver_sql(self._writer(table_name).sql, params)

    def _sqlite_file(self) -> Path | None:
        """The database file; ``None`` for PostgreSQL and for an in-memory SQLite, which
        is private to its connection and keeps the SQLAlchemy path."""
        database = self._url.database
        if self.name != "sqlite" or not database or database == ":memory:":
            return None
        return None if database.startswith("file:") else Path(database).resolve()

    def _sqlite_file_writer(self) -> SqliteWriterProcess | None:
        """The write process (:mod:`projections.sqlite_process`) of a SQLite file."""
        if self._sqlite_writer is not None or (database := self._sqlite_file()) is None:
            return self._sqlite_writer
        quote = self.engine.dialect.identifier_preparer.quote
        checkpoint = quote(self._tables[CHECKPOINT].name)
        self._sqlite_writer = SqliteWriterProcess(
            str(database),
            list(_SQLITE_PRAGMAS),
            advance=f"UPDATE {checkpoint} SET seq = ? WHERE id = 1 AND seq < ?",
            advance_after=f"UPDATE {checkpoint} SET seq = ? WHERE id = 1 AND seq = ?",
            current=f"SELECT seq FROM {checkpoint} WHERE id = 1",
        )
        return self._sqlite_writer

    def _writes(self, changes: Changes) -> tuple[list[_Write], list[_Write]]:
        inserts: list[_Write] = []
        for attribute, table_name in _INSERTS:
            rows: list[Any] = getattr(changes, attribute)
            if rows:
                inserts.append((table_name, self._writer(table_name).params(rows)))
        upserts: list[_Write] = []
        for attribute, table_name in _UPSERTS:
            keyed: dict[Any, Any] = getattr(changes, attribute)
            if keyed:
                upserts.append((table_name, self._writer(table_name).params(keyed.values())))
        return inserts, upserts

    def _writer(self, table_name: str) -> BulkWriter:
        writer = self._writers.get(table_name)
        if writer is None:
            table = self._tables[table_name]
            statement = table.insert() if table_name in dict(_INSERTS) else self._upsert(table)
            writer = BulkWriter(table, statement, ROW_TYPES[table_name], self.engine.dialect)
            self._writers[table_name] = writer
        return writer

    async def _advance_checkpoint(self, conn: AsyncConnection, seq: int) -> None:
        table = self._tables[CHECKPOINT]
        moved = await conn.execute(
            update(table).where(table.c.id == 1, table.c.seq < seq).values(seq=seq)
        )
        if moved.rowcount != 1:
            raise self._checkpoint_error(await self._checkpoint(conn), seq)

    def _checkpoint_error(
        self, current: int | None, seq: int, expected: int | None = None
    ) -> ValueError:
        name = self._tables[CHECKPOINT].name
        if current is None:
            return ValueError(f"checkpoint of {name} is missing: call start() first")
        if expected is not None and current < expected:
            return ValueError(
                f"checkpoint of {name} is at {current}, not at {expected} where the batch "
                f"up to {seq} was to follow: an earlier batch was not written"
            )
        return ValueError(
            f"checkpoint of {name} already at {current}, cannot move it to {seq}: "
            "another projector is writing this read model"
        )

    def _upsert(self, table: Table) -> Insert:
        statement = self._dialect_insert(table)
        keys = [column.name for column in table.primary_key.columns]
        return statement.on_conflict_do_update(
            index_elements=keys,
            set_={
                column.name: statement.excluded[column.name]
                for column in table.columns
                if not column.primary_key
            },
        )

    # ----------------------------------------------------------- blue/green

    async def active_version(self) -> int | None:
        meta = self._tables[META]
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(meta.c.value).where(meta.c.key == ACTIVE_VERSION_KEY))
        return None if value is None else int(value)

    async def activate(self) -> None:
        meta = self._tables[META]
        statement = self._dialect_insert(meta).values(
            key=ACTIVE_VERSION_KEY, value=str(self.schema_version)
        )
        statement = statement.on_conflict_do_update(
            index_elements=["key"], set_={"value": statement.excluded.value}
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def drop_version(self, version: int) -> None:
        """Drop the tables of ``version`` (missing tables are fine). Refuses this
        backend's own version and the active one: readers may be using them."""
        if version == self.schema_version:
            raise ValueError(f"version {version} is this backend's own; use drop_namespace()")
        if version == await self.active_version():
            raise ValueError(f"version {version} is the active read model; activate another")
        metadata = MetaData()
        tables = build_tables(metadata, self.namespace, version)
        doomed = [table for short, table in tables.items() if short != META]
        async with self.engine.begin() as conn:
            await conn.run_sync(lambda sync: metadata.drop_all(sync, tables=doomed))

    async def drop_namespace(self) -> None:
        """Drop every table of this namespace: all versions and the meta table. For
        scratch databases (``verify``) and tests."""
        versioned = re.compile(re.escape(self.namespace) + r"_v\d+_[a-z]+")
        meta = meta_table_name(self.namespace)

        def drop(sync: Connection) -> None:
            quote = sync.dialect.identifier_preparer.quote
            for name in inspect(sync).get_table_names():
                if name == meta or versioned.fullmatch(name):
                    sync.execute(text(f"DROP TABLE IF EXISTS {quote(name)}"))

        async with self.engine.begin() as conn:
            await conn.run_sync(drop)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the API read while the projector writes; NORMAL sync is crash-safe in WAL
    mode (a power cut may lose the last commits, never consistency: the checkpoint is in
    the same transaction)."""
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}",
    f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}",
)
"""Every connection's settings, the write process's included."""


__all__ = ["DEFAULT_URL", "SqlReadModel"]
