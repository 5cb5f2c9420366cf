"""Bulk writes for the SQL read model: one compiled statement per table, rows turned into
positional driver parameters in a tight loop, one ``executemany`` per table per batch
(on PostgreSQL the insert-only tables go through ``COPY``).

SQLAlchemy's per-parameter processing costs about as much as SQLite's own insert work
at projector batch sizes, so the few conversions the tables need (aware datetimes,
JSON text) are done here instead, matching what the column types would have sent: the
query side still reads through the SQLAlchemy types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from pydantic_core import to_json
from sqlalchemy import JSON, Dialect, Insert, Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.sql_schema import UtcDateTime

Converter = Callable[[Any], Any]


def _sqlite_time(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME text (naive UTC, always with microseconds), so
    comparisons stay lexical and the column type reads it back."""
    if value is None:
        return None
    if value.tzinfo is UTC:  # event times always are: cut the "+00:00", skip astimezone
        return value.isoformat(" ", "microseconds")[:-6]
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: read-model times must be aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _aware_time(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: read-model times must be aware")
    return value


def _json_text(value: Any) -> str | None:
    # JSON(none_as_null=True): a top-level None is SQL NULL, as the column type stores it.
    # pydantic-core's encoder (compact, UTF-8) is about 4x faster than json.dumps on the
    # small dicts of event payloads; the values are JSON-native, so both read back equal.
    return None if value is None else to_json(value).decode()


_INTEGRITY_SQLSTATE_CLASS = "23"  # unique, not-null, foreign-key ... violations


async def copy_rows(conn: AsyncConnection, table: Table, params: list[tuple[Any, ...]]) -> None:
    """``COPY table FROM STDIN`` (binary) with asyncpg, inside ``conn``'s transaction.

    The transaction must already be open (the checkpoint update runs first), or the
    rows would commit on their own. A constraint violation is raised as SQLAlchemy's
    ``IntegrityError``, like the same failure through ``executemany``.
    """
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:
        raise RuntimeError(f"COPY {table.name}: the connection was invalidated")
    columns = [column.name for column in table.columns]
    try:
        await driver.copy_records_to_table(table.name, records=params, columns=columns)
    except Exception as error:
        if str(getattr(error, "sqlstate", "")).startswith(_INTEGRITY_SQLSTATE_CLASS):
            raise IntegrityError(f"COPY {table.name}", None, error) from error
        raise


class BulkWriter:
    """Writes rows of one dataclass kind with one compiled ``INSERT`` (or upsert).

    The statement's positional parameters must be the table's columns in order, which
    holds for ``table.insert()`` and its ``ON CONFLICT`` variants built from the
    dataclass fields (checked at construction).
    """

    def __init__(self, table: Table, statement: Insert, row_type: type[Any], dialect: Dialect):
        names = tuple(field.name for field in fields(row_type))
        compiled = statement.compile(
            dialect=dialect, column_keys=list(names), compile_kwargs={"render_postcompile": True}
        )
        if tuple(compiled.positiontup or ()) != names:
            raise RuntimeError(f"{table.name}: parameters {compiled.positiontup} != {names}")
        self.sql = str(compiled)
        self._values = attrgetter(*names)
        self._converters: list[tuple[int, Converter]] = []
        for index, column in enumerate(table.columns):
            if isinstance(column.type, UtcDateTime):
                time = _sqlite_time if dialect.name == "sqlite" else _aware_time
                self._converters.append((index, time))
            elif isinstance(column.type, JSON):
                self._converters.append((index, _json_text))

    def params(self, rows: Iterable[Any]) -> list[tuple[Any, ...]]:
        # Column-wise: zip and map run their loops in C, and only the few converted
        # columns pay a Python call per value (a per-row loop cost twice as much).
        columns: list[Iterable[Any]] = list(zip(*map(self._values, rows), strict=True))
        if not columns:
            return []
        for index, convert in self._converters:
            columns[index] = map(convert, columns[index])
        return list(zip(*columns, strict=True))


__all__ = ["BulkWriter", "copy_rows"]
