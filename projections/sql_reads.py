"""Loading a batch's existing rows by primary key on the SQL read model: one statement
per table per batch, the keys bound as ONE parameter (a JSON array expanded by
``json_each`` on SQLite, a text array expanded by ``unnest`` on PostgreSQL).

The statement is compiled once and run through the driver, and rows are decoded here
(UTC times, SQLite's JSON text) the way the column types decode them for the query side: at
projector batch sizes SQLAlchemy's per-query compile of an ``IN`` list and its per-row
result processing cost more than the database's own index lookups.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy import JSON, Column, Dialect, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.sql_schema import UtcDateTime

Decoder = Callable[[Any], Any]


def _sqlite_time(value: str | None) -> datetime | None:
    # stored as naive UTC text by sql_writes (SQLAlchemy's DATETIME format)
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _aware_time(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _json_value(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class KeyLoader:
    """Selects ``columns`` of ``table`` for the rows whose ``key`` is among given keys."""

    def __init__(
        self, table: Table, key: Column[Any], columns: Sequence[Column[Any]], dialect: Dialect
    ):
        quote = dialect.identifier_preparer.quote
        selected = ", ".join(quote(column.name) for column in columns)
        if dialect.name == "sqlite":
            among = "IN (SELECT value FROM json_each(?))"
            self._bind: Callable[[list[str]], Any] = _json_array
        else:
            # One array parameter: one prepared statement for any number of keys. Not
            # "= ANY($1)": once PostgreSQL caches a generic plan for it, every row scanned
            # is compared with every key in turn (measured 10x slower on 6,000 runs).
            among = "IN (SELECT unnest($1::VARCHAR[]))"
            self._bind = _same
        self.sql = f"SELECT {selected} FROM {quote(table.name)} WHERE {quote(key.name)} {among}"
        self._decoders: list[tuple[int, Decoder]] = []
        for index, column in enumerate(columns):
            if isinstance(column.type, UtcDateTime):
                time = _sqlite_time if dialect.name == "sqlite" else _aware_time
                self._decoders.append((index, time))
            elif isinstance(column.type, JSON) and dialect.name == "sqlite":
                # (SQLAlchemy's asyncpg dialect registers a json codec that decodes)
                self._decoders.append((index, _json_value))

    async def rows(self, conn: AsyncConnection, keys: Collection[str]) -> list[Sequence[Any]]:
        """The matching rows as value tuples, decoded, in no particular order."""
        if not keys:
            return []
        result = await conn.exec_driver_sql(self.sql, (self._bind(list(keys)),))
        return self._decoded(list(result.all()))

    def rows_sync(self, connection: sqlite3.Connection, keys: Collection[str]) -> list[Any]:
        """:meth:`rows` on a plain ``sqlite3`` connection (the SQLite load thread's)."""
        if not keys:
            return []
        return self._decoded(connection.execute(self.sql, (self._bind(list(keys)),)).fetchall())

    def _decoded(self, rows: list[Sequence[Any]]) -> list[Sequence[Any]]:
        if not rows or not self._decoders:
            return rows
        columns: list[Iterable[Any]] = list(zip(*rows, strict=True))
        for index, decode in self._decoders:
            columns[index] = map(decode, columns[index])
        return list(zip(*columns, strict=True))


def _json_array(keys: list[str]) -> str:
    return to_json(keys).decode()


def _same(keys: list[str]) -> list[str]:
    return keys


__all__ = ["KeyLoader"]
