"""The read model's queries on DuckDB: the rows the API reads, and whole-table reads.

:class:`DuckDbQueries` is mixed into :class:`~projections.duckdb_database.DuckDbDatabase`
and runs on its connection, so it is no more thread-safe than that class. It is
separate because these reads serve the API and audits (``get_run``, ``list_sessions``,
``dump``, ``counts`` ...) and change with the read API, while the database module keeps
what the projector needs: the connection, the schema, the batch's load and its commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from projections.contract import TABLES, RunFilter
from projections.duckdb_tables import SPECS, encode_time, quote
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

_RUN_FILTER_COLUMNS = ("status", "agent_type", "session_id", "root_run_id", "parent_run_id")
_OLDEST_RUN_FIRST = '"first_seq", "run_id"'


class DuckDbQueries:
    """Read queries on the tables of one namespace and schema version."""

    connection: duckdb.DuckDBPyConnection

    if TYPE_CHECKING:
        # Defined by DuckDbDatabase: statements parsed once per connection, table names.

        def execute(
            self, sql: str, parameters: Sequence[Any] = ()
        ) -> duckdb.DuckDBPyConnection: ...

        def table_name(self, table: str, version: int | None = None) -> str: ...

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        dumped: dict[str, list[dict[str, Any]]] = {}
        for name, spec in SPECS.items():
            sql = f"{spec.select_sql(self.table_name(name))} ORDER BY {spec.order_by_key}"
            dumped[name] = [
                spec.to_dict(values) for values in self.connection.execute(sql).fetchall()
            ]
        return dumped

    def counts(self) -> dict[str, int]:
        per_table = " UNION ALL ".join(
            f"SELECT '{name}', count(*) FROM {quote(self.table_name(name))}" for name in TABLES
        )
        counts = {name: int(count) for name, count in self.connection.execute(per_table).fetchall()}
        by_status = self.connection.execute(
            f"SELECT status, count(*) FROM {quote(self.table_name('runs'))} GROUP BY status"
        ).fetchall()
        counts.update({f"runs:{status}": int(count) for status, count in by_status})
        return counts

    def get_run(self, run_id: str) -> RunRow | None:
        row: RunRow | None = self._first("runs", '"run_id" = ?', [run_id])
        return row

    def list_runs(self, query: RunFilter) -> list[RunRow]:
        conditions, params = ["true"], list[Any]()
        for column in _RUN_FILTER_COLUMNS:
            value = getattr(query, column)
            if value is not None:
                conditions.append(f"{quote(column)} = ?")
                params.append(value)
        if query.before_seq is not None:
            conditions.append('"first_seq" < ?')
            params.append(query.before_seq)
        where = " AND ".join(conditions)
        return self._rows("runs", where, params, '"first_seq" DESC, "run_id" DESC', query.limit)

    def children(self, run_id: str) -> list[RunRow]:
        return self._rows("runs", '"parent_run_id" = ?', [run_id], _OLDEST_RUN_FIRST)

    def tree(self, root_run_id: str) -> list[RunRow]:
        where = '"run_id" = ? OR "root_run_id" = ?'
        return self._rows("runs", where, [root_run_id, root_run_id], _OLDEST_RUN_FIRST)

    def run_events(self, run_id: str) -> list[EventRow]:
        return self._rows("events", '"run_id" = ?', [run_id], '"seq"')

    def events(
        self,
        after_seq: int = 0,
        limit: int = 100,
        event_type: str | None = None,
        session_id: str | None = None,
    ) -> list[EventRow]:
        conditions, params = ['"seq" > ?'], list[Any]([after_seq])
        for column, value in (("session_id", session_id), ("type", event_type)):
            if value is not None:
                conditions.append(f"{quote(column)} = ?")
                params.append(value)
        return self._rows("events", " AND ".join(conditions), params, '"seq"', limit)

    def get_session(self, session_id: str) -> SessionRow | None:
        row: SessionRow | None = self._first("sessions", '"session_id" = ?', [session_id])
        return row

    def list_sessions(self, limit: int = 50, before: datetime | None = None) -> list[SessionRow]:
        where, params = "true", list[Any]()
        if before is not None:
            where, params = '"last_activity" < make_timestamptz(?)', [encode_time(before)]
        order = '"last_activity" DESC, "session_id" DESC'
        return self._rows("sessions", where, params, order, limit)

    def sessions_as_of(
        self, as_of_seq: int, before_position: int | None = None, limit: int = 50
    ) -> list[tuple[int, SessionRow]]:
        spec = SPECS["sessions"]
        selected = ", ".join(column.selected for column in spec.columns)
        sessions, events = quote(self.table_name("sessions")), quote(self.table_name("events"))
        # Only sessions touched after as_of_seq need the look-up in the EventLog.
        sql = (
            f"WITH positioned AS (SELECT *, CASE WHEN s.last_seq <= ? THEN s.last_seq ELSE "
            f"(SELECT max(e.seq) FROM {events} e WHERE e.session_id = s.session_id "
            f"AND e.seq <= ?) END AS position FROM {sessions} s WHERE s.first_seq <= ?) "
            f"SELECT {selected}, position FROM positioned WHERE position < ? "
            f"ORDER BY position DESC LIMIT ?"
        )
        before = before_position if before_position is not None else 2**62
        params = [as_of_seq, as_of_seq, as_of_seq, before, max(limit, 0)]
        return [
            (int(values[-1]), spec.to_row(values[:-1]))
            for values in self.execute(sql, params).fetchall()
        ]

    def transcript(self, session_id: str) -> list[TranscriptRow]:
        return self._rows("transcript", '"session_id" = ?', [session_id], '"seq_from", "turn_id"')

    def get_group(self, group_id: str) -> GroupRow | None:
        row: GroupRow | None = self._first("groups", '"group_id" = ?', [group_id])
        return row

    def list_workers(self) -> list[WorkerRow]:
        return self._rows("workers", "true", [], '"worker_id"')

    def get_state(self, scope: str, scope_id: str, key: str) -> StateRow | None:
        where = '"scope" = ? AND "scope_id" = ? AND "key" = ?'
        row: StateRow | None = self._first("state", where, [scope, scope_id, key])
        return row

    def list_rejected(self, after_seq: int = 0, limit: int = 100) -> list[RejectedRow]:
        return self._rows("rejected", '"seq" > ?', [after_seq], '"seq"', limit)

    def _first(self, table: str, where: str, params: Sequence[Any]) -> Any:
        """The row with the primary key in ``where`` (no ORDER BY / LIMIT: they would
        keep DuckDB from using the key's index)."""
        rows = self._rows(table, where, params)
        return rows[0] if rows else None

    def _rows(
        self,
        table: str,
        where: str,
        params: Sequence[Any],
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        spec = SPECS[table]
        sql = f"{spec.select_sql(self.table_name(table))} WHERE {where}"
        bound = list(params)
        if order_by is not None:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += " LIMIT ?"
            bound.append(max(limit, 0))
        return [spec.to_row(values) for values in self.execute(sql, bound).fetchall()]


__all__ = ["DuckDbQueries"]
