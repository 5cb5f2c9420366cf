"""The read model's SQL on one DuckDB connection, synchronous.

:class:`DuckDbDatabase` is not thread-safe: :class:`~projections.duckdb_backend.
DuckDbReadModel` calls it from its single worker thread only. Scripts that need no
event loop (an offline audit of an exported file) may use it directly.

This module holds what the projector needs: the connection and its parsed statements,
the schema, the batch's load and its commit. The reads of the API and of audits are
:class:`~projections.duckdb_queries.DuckDbQueries`, which the database class inherits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from projections.contract import TABLES, BatchKeys, Changes, Snapshot
from projections.duckdb_queries import DuckDbQueries
from projections.duckdb_tables import (
    KEY_HASH,
    SPECS,
    bind_list,
    key_hash_sql,
    quote,
    unnest_param,
)

_ACTIVE_VERSION = "active_version"
_CREATE_ATTEMPTS = 5
_PARSED_LIMIT = 256
_WRITER_THREADS = 1
_AMONG_KEYS = f" SEMI JOIN (SELECT {unnest_param('str')} AS wanted) ON {{key}} = wanted"
"""Rows whose ``key`` is in a :func:`bind_list` parameter. A hash semi-join: the probe
side is the batch's keys, so the table is scanned once (``list_contains`` in a WHERE
clause tested every row against the whole list, O(rows x keys))."""
_AMONG_HASHES = f" WHERE {quote(KEY_HASH)} IN (SELECT {key_hash_sql(unnest_param('str'))})"
"""Rows whose hashed key may be in a :func:`bind_list` parameter (a collision brings a
stranger: callers keep the exact matches). The event-id look-up scans the whole
EventLog every batch (DuckDB uses its ART index for one key, never for a list):
joining on 64-bit hashes instead of the id strings took it from 31 to 10 ms of CPU
per 2,000 ids at 500k events. The other look-ups fetch every column of the rows, which
costs more than hashing their keys; hashes measured no gain there."""


class ReadModelNotFoundError(LookupError):
    """A read-only open found no tables for the namespace and schema version."""


class CheckpointNotAdvancedError(ValueError):
    """A commit would not move the checkpoint forward: another projector got there."""


class DuckDbDatabase(DuckDbQueries):
    """Tables ``{namespace}_v{schema_version}_{table}`` for every table in ``TABLES``,
    ``{namespace}_v{schema_version}_checkpoint`` (``id`` = 1, ``seq``) and the shared
    ``{namespace}_meta`` (``key``, ``value``) that records ``active_version``."""

    def __init__(
        self, connection: duckdb.DuckDBPyConnection, namespace: str, schema_version: int
    ) -> None:
        self.connection = connection
        self.namespace = namespace
        self.schema_version = schema_version
        self._meta = quote(f"{namespace}_meta")
        self._checkpoint = quote(self.table_name("checkpoint"))
        self._inserts = {
            name: spec.insert_sql(self.table_name(name)) for name, spec in SPECS.items()
        }
        self._deletes = {
            name: spec.delete_sql(self.table_name(name)) for name, spec in SPECS.items()
        }
        # Parsed statements by SQL text. DuckDB 2's parser takes ~1 ms for one of the
        # batch's wide INSERT ... SELECT unnest(...) statements, about as long as running
        # it on 300 rows; a parsed statement is bound afresh on each execute, so reusing
        # it is safe across DROP / CREATE of the tables it names.
        self._parsed: dict[str, duckdb.Statement] = {}

    @classmethod
    def open(
        cls, path: str, namespace: str, schema_version: int, *, read_only: bool = False
    ) -> DuckDbDatabase:
        """Connect; read-write creates the tables, read-only requires them to exist."""
        if not read_only and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(path, read_only=read_only)
        database = cls(connection, namespace, schema_version)
        try:
            if read_only:
                database.require_tables()
            else:
                # A batch's statements touch a few thousand rows: DuckDB's second thread
                # added 5-14 us of CPU per event and no speed (replay of recorded batches).
                # The setting is the database's, in the one process that writes it.
                connection.execute(f"SET threads = {_WRITER_THREADS}")
                database.create_tables()
        except BaseException:
            connection.close()
            raise
        return database

    def close(self) -> None:
        self.connection.close()

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> duckdb.DuckDBPyConnection:
        """``sql`` (one statement) with ``parameters``, parsed once per connection."""
        statement = self._parsed.get(sql)
        if statement is None:
            if len(self._parsed) >= _PARSED_LIMIT:  # filter combinations are few; a bound
                self._parsed.clear()
            (statement,) = self.connection.extract_statements(sql)
            self._parsed[sql] = statement
        return self.connection.execute(statement, parameters)

    def sibling(self) -> DuckDbDatabase:
        """The same tables through a second connection to this database (DuckDB's
        ``cursor()``), for another thread: it sees every committed write."""
        return DuckDbDatabase(self.connection.cursor(), self.namespace, self.schema_version)

    def table_name(self, table: str, version: int | None = None) -> str:
        """Unquoted name of ``table`` at ``version`` (default: this schema version)."""
        return f"{self.namespace}_v{self.schema_version if version is None else version}_{table}"

    # ----------------------------------------------------------- schema

    def create_tables(self) -> None:
        """Create what is missing. Backends starting at once on one file (blue and green,
        a rival projector) conflict on DuckDB's catalog; the loser retries and then finds
        the tables there."""
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                self._create_tables()
            except duckdb.TransactionException:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))  # in the worker thread, never the event loop
            else:
                return

    def _create_tables(self) -> None:
        with self._transaction():
            execute = self.connection.execute
            execute(
                f"CREATE TABLE IF NOT EXISTS {self._meta} "
                '("key" VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)'
            )
            execute(
                f"CREATE TABLE IF NOT EXISTS {self._checkpoint} "
                "(id INTEGER PRIMARY KEY, seq BIGINT NOT NULL)"
            )
            execute(f"INSERT INTO {self._checkpoint} VALUES (1, 0) ON CONFLICT DO NOTHING")
            for name, spec in SPECS.items():
                for statement in spec.create_sql(self.table_name(name)):
                    execute(statement)
        self._add_key_hashes()

    def _add_key_hashes(self) -> None:
        """Give tables made before the hashed keys their ``KEY_HASH`` column, filled.
        The rows a reader sees do not change, so the schema version stays."""
        hashed = {self.table_name(name): spec.hashed for name, spec in SPECS.items()}
        present = self.connection.execute(
            "SELECT table_name FROM duckdb_columns() WHERE column_name = ?", [KEY_HASH]
        ).fetchall()
        missing = {table: key for table, key in hashed.items() if key is not None}
        for (table,) in present:
            missing.pop(table, None)
        if not missing:
            return
        with self._transaction():
            for table, key in missing.items():
                self.connection.execute(
                    f"ALTER TABLE {quote(table)} ADD COLUMN {quote(KEY_HASH)} UBIGINT"
                )
                self.connection.execute(
                    f"UPDATE {quote(table)} SET {quote(KEY_HASH)} = {key_hash_sql(quote(key))}"
                )

    def require_tables(self) -> None:
        present = {
            name
            for (name,) in self.connection.execute(
                "SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, ?)",
                [self.namespace],
            ).fetchall()
        }
        wanted = {self.table_name(name) for name in (*TABLES, "checkpoint")}
        if missing := sorted(wanted - present):
            raise ReadModelNotFoundError(
                f"no read model v{self.schema_version} in namespace {self.namespace!r} "
                f"(missing {', '.join(missing)}): run the projector on this file first"
            )

    # ----------------------------------------------------------- writes

    def commit(self, changes: Changes) -> None:
        """``changes`` and the new checkpoint in one transaction (G4)."""
        writes = self._writes(changes)  # built before the transaction: it stays short
        try:
            with self._transaction():
                # first, so a racing projector fails on the checkpoint, not on a duplicate key
                self._advance_checkpoint(changes.last_seq)
                for statement, parameters in writes:
                    self.execute(statement, parameters)
        except duckdb.TransactionException as exc:
            raise CheckpointNotAdvancedError(
                f"checkpoint: another writer committed to {self.table_name('*')} at the same "
                f"time (DuckDB transaction conflict); only one projector may write: {exc}"
            ) from exc

    def _writes(self, changes: Changes) -> list[tuple[str, list[str]]]:
        writes = [
            (self._inserts[table], SPECS[table].to_columns(rows))
            for table, rows in (("events", changes.events), ("rejected", changes.rejected))
            if rows
        ]
        for table, keyed in (
            ("sessions", changes.sessions),
            ("runs", changes.runs),
            ("transcript", changes.turns),
            ("groups", changes.groups),
            ("workers", changes.workers),
            ("state", changes.states),
        ):
            if keyed:
                spec = SPECS[table]
                columns = spec.to_columns(keyed.values())
                writes.append((self._deletes[table], spec.key_columns(columns)))
                writes.append((self._inserts[table], columns))
        return writes

    def _advance_checkpoint(self, last_seq: int) -> None:
        moved = self.execute(
            f"UPDATE {self._checkpoint} SET seq = ? WHERE id = 1 AND seq < ? RETURNING seq",
            [last_seq, last_seq],
        ).fetchall()
        if not moved:
            raise CheckpointNotAdvancedError(
                f"checkpoint of read model {self.table_name('*')} is already "
                f"{self._read_checkpoint()}: a commit up to {last_seq} would not move it "
                "forward (did another projector apply this batch?)"
            )

    def activate(self) -> None:
        self.connection.execute(
            f"INSERT INTO {self._meta} VALUES (?, ?) "
            'ON CONFLICT ("key") DO UPDATE SET value = excluded.value',
            [_ACTIVE_VERSION, str(self.schema_version)],
        )

    def drop_version(self, version: int) -> None:
        if version == self.schema_version:
            raise ValueError(f"version {version} is this backend's own; use drop_namespace()")
        if version == self.active_version():
            raise ValueError(f"version {version} is the active read model; activate another")
        self._drop([self.table_name(table, version) for table in (*TABLES, "checkpoint")])

    def drop_namespace(self) -> None:
        versioned = re.compile(re.escape(self.namespace) + r"_v\d+_[a-z]+")
        meta = f"{self.namespace}_meta"
        tables = self.connection.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        self._drop(name for (name,) in tables if name == meta or versioned.fullmatch(name))

    def _drop(self, tables: Iterable[str]) -> None:
        with self._transaction():
            for table in tables:
                self.connection.execute(f"DROP TABLE IF EXISTS {quote(table)}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.connection.begin()
        try:
            yield
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()

    # ----------------------------------------------------------- the projector's reads

    def checkpoint(self) -> int:
        return self._read_checkpoint()

    def _read_checkpoint(self) -> int:
        row = self.execute(f"SELECT seq FROM {self._checkpoint} WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def active_version(self) -> int | None:
        row = self.execute(
            f'SELECT value FROM {self._meta} WHERE "key" = ?', [_ACTIVE_VERSION]
        ).fetchone()
        return None if row is None else int(row[0])

    def load(self, keys: BatchKeys) -> Snapshot:
        return Snapshot(
            runs=self._by_key("runs", "run_id", keys.run_ids),
            sessions=self._by_key("sessions", "session_id", keys.session_ids),
            groups=self._by_key("groups", "group_id", keys.group_ids),
            turns=self._by_key("transcript", "turn_id", keys.turn_ids),
            workers=self._by_key("workers", "worker_id", keys.worker_ids),
            known_event_ids=self._known_event_ids(keys.event_ids),
        )

    def _known_event_ids(self, ids: set[str]) -> set[str]:
        if not ids:
            return set()
        sql = f"SELECT id FROM {quote(self.table_name('events'))}{_AMONG_HASHES}"
        found = self.execute(sql, [bind_list(list(ids))]).fetchall()
        return {row[0] for row in found if row[0] in ids}

    def _by_key(self, table: str, key: str, ids: set[str]) -> dict[str, Any]:
        if not ids:
            return {}
        spec = SPECS[table]
        sql = spec.select_sql(self.table_name(table)) + _AMONG_KEYS.format(key=quote(key))
        rows = self.execute(sql, [bind_list(list(ids))]).fetchall()
        return {getattr(row, key): row for row in map(spec.to_row, rows)}


__all__ = ["CheckpointNotAdvancedError", "DuckDbDatabase", "ReadModelNotFoundError"]
