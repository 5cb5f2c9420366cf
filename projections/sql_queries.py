"""The queries the API serves, on the SQL read model (one mixin shared by SQLite and
PostgreSQL). Orderings are total: ties break on the primary key, and text keys compare
by code point on both databases (see :mod:`projections.sql_schema`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.contract import TABLES, RunFilter
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
from projections.sql_schema import ROW_TYPES


def read_rows(table_name: str, result: Iterable[Sequence[Any]]) -> list[Any]:
    """Selected rows (all columns, table order) as the table's row dataclass."""
    row_type = ROW_TYPES[table_name]
    return [row_type(*row) for row in result]


class SqlQueries:
    """Query side of :class:`~projections.sql_backend.SqlReadModel`."""

    name: str
    _tables: dict[str, Table]

    @property
    def engine(self) -> AsyncEngine:
        raise NotImplementedError

    async def _fetch(self, table_name: str, query: Select[Any]) -> list[Any]:
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            return read_rows(table_name, result)

    async def _fetch_one(self, table_name: str, *where: ColumnElement[bool]) -> Any | None:
        rows = await self._fetch(table_name, select(self._tables[table_name]).where(*where))
        return rows[0] if rows else None

    async def dump(self) -> dict[str, list[dict[str, Any]]]:
        dumped: dict[str, list[dict[str, Any]]] = {}
        engine = self.engine
        if self.name == "postgresql":  # one snapshot for every table
            engine = engine.execution_options(isolation_level="REPEATABLE READ")
        async with engine.connect() as conn:
            for table_name in TABLES:
                table = self._tables[table_name]
                result = await conn.execute(select(table).order_by(*table.primary_key.columns))
                dumped[table_name] = [dict(row._mapping) for row in result]
        return dumped

    async def get_run(self, run_id: str) -> RunRow | None:
        runs = self._tables["runs"]
        row: RunRow | None = await self._fetch_one("runs", runs.c.run_id == run_id)
        return row

    async def list_runs(self, query: RunFilter) -> list[RunRow]:
        runs = self._tables["runs"]
        where: list[ColumnElement[bool]] = [
            runs.c[column] == value
            for column, value in (
                ("status", query.status),
                ("agent_type", query.agent_type),
                ("session_id", query.session_id),
                ("root_run_id", query.root_run_id),
                ("parent_run_id", query.parent_run_id),
            )
            if value is not None
        ]
        if query.before_seq is not None:
            where.append(runs.c.first_seq < query.before_seq)
        return await self._fetch(
            "runs",
            select(runs)
            .where(*where)
            .order_by(runs.c.first_seq.desc(), runs.c.run_id.desc())
            .limit(query.limit),
        )

    async def children(self, run_id: str) -> list[RunRow]:
        runs = self._tables["runs"]
        return await self._fetch(
            "runs",
            select(runs)
            .where(runs.c.parent_run_id == run_id)
            .order_by(runs.c.first_seq, runs.c.run_id),
        )

    async def tree(self, root_run_id: str) -> list[RunRow]:
        runs = self._tables["runs"]
        return await self._fetch(
            "runs",
            select(runs)
            .where(or_(runs.c.run_id == root_run_id, runs.c.root_run_id == root_run_id))
            .order_by(runs.c.first_seq, runs.c.run_id),
        )

    async def run_events(self, run_id: str) -> list[EventRow]:
        events = self._tables["events"]
        return await self._fetch(
            "events", select(events).where(events.c.run_id == run_id).order_by(events.c.seq)
        )

    async def session_events(
        self, session_id: str, after_seq: int = 0, limit: int = 100, event_type: str | None = None
    ) -> list[EventRow]:
        events = self._tables["events"]
        return await self._events_after(
            after_seq, limit, event_type, events.c.session_id == session_id
        )

    async def events(
        self, after_seq: int = 0, limit: int = 100, event_type: str | None = None
    ) -> list[EventRow]:
        return await self._events_after(after_seq, limit, event_type)

    async def _events_after(
        self, after_seq: int, limit: int, event_type: str | None, *where: ColumnElement[bool]
    ) -> list[EventRow]:
        events = self._tables["events"]
        conditions = [*where, events.c.seq > after_seq]
        if event_type is not None:
            conditions.append(events.c.type == event_type)
        return await self._fetch(
            "events", select(events).where(*conditions).order_by(events.c.seq).limit(limit)
        )

    async def get_session(self, session_id: str) -> SessionRow | None:
        sessions = self._tables["sessions"]
        row: SessionRow | None = await self._fetch_one(
            "sessions", sessions.c.session_id == session_id
        )
        return row

    async def list_sessions(
        self, limit: int = 50, before: datetime | None = None
    ) -> list[SessionRow]:
        sessions = self._tables["sessions"]
        query = select(sessions)
        if before is not None:
            query = query.where(sessions.c.last_activity < before)
        return await self._fetch(
            "sessions",
            query.order_by(sessions.c.last_activity.desc(), sessions.c.session_id.desc()).limit(
                limit
            ),
        )

    async def sessions_as_of(
        self, as_of_seq: int, before_position: int | None = None, limit: int = 50
    ) -> list[tuple[int, SessionRow]]:
        sessions, events = self._tables["sessions"], self._tables["events"]
        # Only sessions touched after as_of_seq need the (indexed) look-up in the EventLog.
        position = case(
            (sessions.c.last_seq <= as_of_seq, sessions.c.last_seq),
            else_=select(func.max(events.c.seq))
            .where(events.c.session_id == sessions.c.session_id, events.c.seq <= as_of_seq)
            .scalar_subquery(),
        ).label("position")
        positioned = select(sessions, position).where(sessions.c.first_seq <= as_of_seq).subquery()
        query = select(positioned)
        if before_position is not None:
            query = query.where(positioned.c.position < before_position)
        query = query.order_by(positioned.c.position.desc()).limit(limit)
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            return [(int(row[-1]), SessionRow(*row[:-1])) for row in result]

    async def transcript(self, session_id: str) -> list[TranscriptRow]:
        turns = self._tables["transcript"]
        return await self._fetch(
            "transcript",
            select(turns)
            .where(turns.c.session_id == session_id)
            .order_by(turns.c.seq_from, turns.c.turn_id),
        )

    async def get_group(self, group_id: str) -> GroupRow | None:
        groups = self._tables["groups"]
        row: GroupRow | None = await self._fetch_one("groups", groups.c.group_id == group_id)
        return row

    async def list_workers(self) -> list[WorkerRow]:
        workers = self._tables["workers"]
        return await self._fetch("workers", select(workers).order_by(workers.c.worker_id))

    async def get_state(self, scope: str, scope_id: str, key: str) -> StateRow | None:
        state = self._tables["state"]
        row: StateRow | None = await self._fetch_one(
            "state", state.c.scope == scope, state.c.scope_id == scope_id, state.c.key == key
        )
        return row

    async def list_rejected(self, after_seq: int = 0, limit: int = 100) -> list[RejectedRow]:
        rejected = self._tables["rejected"]
        return await self._fetch(
            "rejected",
            select(rejected)
            .where(rejected.c.seq > after_seq)
            .order_by(rejected.c.seq)
            .limit(limit),
        )

    async def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        runs = self._tables["runs"]
        async with self.engine.connect() as conn:
            for table_name in TABLES:
                table = self._tables[table_name]
                counts[table_name] = int(
                    await conn.scalar(select(func.count()).select_from(table)) or 0
                )
            by_status = await conn.execute(
                select(runs.c.status, func.count()).group_by(runs.c.status).order_by(runs.c.status)
            )
            for status, count in by_status:
                counts[f"runs:{status}"] = int(count)
        return counts


__all__ = ["SqlQueries", "read_rows"]
