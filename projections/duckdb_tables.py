"""The read model's tables as DuckDB sees them, derived from the row dataclasses in
:mod:`projections.rows`, and the codecs between rows and DuckDB values.

Rows travel column-wise: a batch becomes one JSON array per column, bound as a single
text parameter, cast to a DuckDB ``LIST`` and expanded with ``unnest`` inside one
``INSERT ... SELECT``. That is one statement per table per batch instead of one per row
(DuckDB's ``executemany`` managed about 2,000 rows/s here). The JSON text matters:
binding a Python list converts and casts every element on its own (about 2 us per
string), while Python's C JSON encoder plus DuckDB's JSON cast take about a fifth of that.

Times are bound and selected as epoch microseconds (``make_timestamptz`` /
``epoch_us``): the columns are real ``TIMESTAMPTZ`` for analytics, yet the Python side
never depends on the session time zone or on ``pytz`` (which DuckDB needs to convert
``TIMESTAMPTZ`` values itself and which is not installed).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Literal, NamedTuple

from pydantic_core import to_json

from projections.contract import TABLES
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

ColumnKind = Literal["int", "float", "str", "json", "time"]

_SQL_TYPES: dict[ColumnKind, str] = {
    "int": "BIGINT",
    "float": "DOUBLE",
    "str": "VARCHAR",
    "json": "JSON",
    "time": "TIMESTAMPTZ",
}
# What a column is bound as (a LIST of this) before it is converted to its SQL type.
_BIND_TYPES: dict[ColumnKind, str] = {**_SQL_TYPES, "json": "VARCHAR", "time": "BIGINT"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def quote(identifier: str) -> str:
    """``identifier`` as a quoted SQL identifier (column names include ``key``, ``type``)."""
    return '"' + identifier.replace('"', '""') + '"'


def encode_time(value: datetime | None) -> int | None:
    """Epoch microseconds of an aware datetime; naive ones are refused (unknown instant)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: read-model times must be aware")
    return (value - _EPOCH) // _MICROSECOND


def decode_time(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def encode_json(value: Any) -> str | None:
    # pydantic-core's encoder: compact, UTF-8, about 4x faster than json.dumps on the
    # small dicts of event payloads (values are JSON-native: no NaN, no datetimes)
    return None if value is None else to_json(value).decode()


def bind_list(values: Sequence[Any]) -> str:
    """``values`` as one JSON array: the parameter of ``unnest(?::JSON::<type>[])``."""
    return to_json(values).decode()


def unnest_param(kind: ColumnKind) -> str:
    """SQL expanding one :func:`bind_list` parameter of a ``kind`` column into rows."""
    return f"unnest(?::JSON::{_BIND_TYPES[kind]}[])"


KEY_HASH = "key_hash"
"""Extra column of a table with a ``hashed`` key: not a row field, never selected."""


def key_hash_sql(expression: str) -> str:
    """The stored 64-bit hash of a key: the low half of its MD5, a fixed function
    (DuckDB's ``hash()`` may change between versions; stored values must not). Should
    it ever change, a missed look-up fails loudly: the unique keys refuse the row."""
    # the mask, not md5_number_lower(): that macro goes through a bit string (4x slower)
    return f"CAST(md5_number({expression}) & CAST({2**64 - 1} AS UHUGEINT) AS UBIGINT)"


def decode_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_ENCODERS: dict[ColumnKind, Callable[[Any], Any]] = {"json": encode_json, "time": encode_time}
_DECODERS: dict[ColumnKind, Callable[[Any], Any]] = {"json": decode_json, "time": decode_time}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind
    nullable: bool

    @property
    def ddl(self) -> str:
        null = "" if self.nullable else " NOT NULL"
        return f"{quote(self.name)} {_SQL_TYPES[self.kind]}{null}"

    @property
    def selected(self) -> str:
        """The select-list expression that hands Python a plain value."""
        return f"epoch_us({quote(self.name)})" if self.kind == "time" else quote(self.name)

    def bound(self, position: int) -> str:
        """Expression converting the unnested parameter column ``c<position>``."""
        alias = f"c{position}"
        if self.kind == "time":
            return f"make_timestamptz({alias})"
        if self.kind == "json":
            return f"{alias}::JSON"
        return alias


def _column_kind(hint: Any) -> tuple[ColumnKind, bool]:
    """Column kind of a row field's type hint, and whether it may be NULL."""
    if hint is Any:
        return "json", True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _column_kind(inner)[0], True
    if typing.get_origin(hint) is Literal:
        return "str", False
    kinds: dict[Any, ColumnKind] = {int: "int", float: "float", str: "str", datetime: "time"}
    return kinds[hint], False


class Index(NamedTuple):
    suffix: str
    """Named ``ix_<table>_<suffix>``, as in the SQL backend."""
    columns: tuple[str, ...]
    unique: bool


class TableSpec:
    """One read-model table: its row type, columns in field order, keys and indexes."""

    def __init__(
        self,
        name: str,
        row_type: type[Any],
        primary_key: tuple[str, ...],
        indexes: tuple[Index, ...] = (),
        hashed: str | None = None,
    ) -> None:
        self.name = name
        self.row_type = row_type
        self.primary_key = primary_key
        self.indexes = indexes
        self.hashed = hashed
        """The string column whose :func:`key_hash_sql` is stored in ``KEY_HASH``, so
        batch look-ups scan and hash 64-bit integers instead of strings."""
        hints = typing.get_type_hints(row_type)
        self.columns = tuple(Column(f.name, *_column_kind(hints[f.name])) for f in fields(row_type))
        self.order_by_key = ", ".join(quote(name) for name in primary_key)
        self._names = tuple(column.name for column in self.columns)
        self._values = attrgetter(*self._names)
        self._key_positions = [self._names.index(name) for name in primary_key]
        self._encoders = _codecs(self.columns, _ENCODERS)
        self._decoders = _codecs(self.columns, _DECODERS)

    def create_sql(self, table: str) -> list[str]:
        """DDL for this table named ``table`` (unquoted) and its indexes."""
        columns = ", ".join(column.ddl for column in self.columns)
        if self.hashed is not None:
            columns += f", {quote(KEY_HASH)} UBIGINT"
        statements = [
            f"CREATE TABLE IF NOT EXISTS {quote(table)} "
            f"({columns}, PRIMARY KEY ({self.order_by_key}))"
        ]
        for index in self.indexes:
            unique = "UNIQUE " if index.unique else ""
            indexed = ", ".join(quote(name) for name in index.columns)
            statements.append(
                f"CREATE {unique}INDEX IF NOT EXISTS {quote(f'ix_{table}_{index.suffix}')} "
                f"ON {quote(table)} ({indexed})"
            )
        return statements

    def select_sql(self, table: str) -> str:
        selected = ", ".join(column.selected for column in self.columns)
        return f"SELECT {selected} FROM {quote(table)}"

    def insert_sql(self, table: str) -> str:
        """One ``INSERT ... SELECT`` over unnested list parameters, one per column."""
        names = ", ".join(quote(name) for name in self._names)
        unnested = ", ".join(
            f"{unnest_param(column.kind)} AS c{position}"
            for position, column in enumerate(self.columns)
        )
        converted = ", ".join(
            column.bound(position) for position, column in enumerate(self.columns)
        )
        if self.hashed is not None:
            names += f", {quote(KEY_HASH)}"
            converted += f", {key_hash_sql(f'c{self._names.index(self.hashed)}')}"
        return f"INSERT INTO {quote(table)} ({names}) SELECT {converted} FROM (SELECT {unnested})"

    def delete_sql(self, table: str) -> str:
        """``DELETE`` of the rows whose primary keys are bound as one list per key column
        (:meth:`key_columns`).

        Upserts are this ``DELETE`` then :meth:`insert_sql` in one transaction: measured
        1.5-2x faster in DuckDB than ``INSERT ... ON CONFLICT DO UPDATE`` (which has a
        high fixed cost per statement), and the rows are replaced whole either way.
        """
        target = quote(table)
        unnested = ", ".join(
            f"{unnest_param(self.columns[position].kind)} AS k{i}"
            for i, position in enumerate(self._key_positions)
        )
        matched = " AND ".join(
            f"{target}.{quote(name)} = doomed.k{i}" for i, name in enumerate(self.primary_key)
        )
        return f"DELETE FROM {target} USING (SELECT {unnested}) AS doomed WHERE {matched}"

    def key_columns(self, columns: list[str]) -> list[str]:
        """The primary-key parameters out of :meth:`to_columns`' result."""
        return [columns[position] for position in self._key_positions]

    def to_columns(self, rows: Iterable[Any]) -> list[str]:
        """``rows`` as one :func:`bind_list` parameter per column (the parameters of
        :meth:`insert_sql`)."""
        columns: list[Any] = list(zip(*map(self._values, rows), strict=True))
        for position, encode in self._encoders:
            columns[position] = list(map(encode, columns[position]))
        return [bind_list(column) for column in columns]

    def to_row(self, values: Sequence[Any]) -> Any:
        """A row object from one result tuple of :meth:`select_sql`."""
        return self.row_type(*self._decode(values))

    def to_dict(self, values: Sequence[Any]) -> dict[str, Any]:
        """A ``dump`` entry from one result tuple of :meth:`select_sql`."""
        return dict(zip(self._names, self._decode(values), strict=True))

    def _decode(self, values: Sequence[Any]) -> list[Any]:
        decoded = list(values)
        for position, decode in self._decoders:
            decoded[position] = decode(decoded[position])
        return decoded


def _codecs(
    columns: Sequence[Column], by_kind: dict[ColumnKind, Callable[[Any], Any]]
) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """``(position, codec)`` for the columns whose values need converting."""
    return tuple(
        (position, by_kind[column.kind])
        for position, column in enumerate(columns)
        if column.kind in by_kind
    )


SPECS: dict[str, TableSpec] = {
    "events": TableSpec(
        "events",
        EventRow,
        ("seq",),
        (Index("id", ("id",), unique=True), Index("run", ("run_id",), unique=False)),
        hashed="id",
    ),
    "rejected": TableSpec("rejected", RejectedRow, ("seq",)),
    "sessions": TableSpec("sessions", SessionRow, ("session_id",)),
    "runs": TableSpec(
        "runs", RunRow, ("run_id",), (Index("parent", ("parent_run_id",), unique=False),)
    ),
    "transcript": TableSpec(
        "transcript",
        TranscriptRow,
        ("turn_id",),
        (Index("session", ("session_id",), unique=False),),
    ),
    "groups": TableSpec("groups", GroupRow, ("group_id",)),
    "workers": TableSpec("workers", WorkerRow, ("worker_id",)),
    "state": TableSpec("state", StateRow, ("scope", "scope_id", "key")),
}
"""Primary keys and the unique event id as in the SQL backend (``projections.sql_schema``),
so both refuse the same rows. Secondary indexes differ on purpose: DuckDB's planner uses
an ART index only for a plain equality on one column with no ``LIMIT`` on top, so the SQL
backend's composite ``(x, seq)`` indexes would cost every insert and serve no query here.
Kept are the single-column ones measured to pay off on 1M events: ``run_events`` (13 ->
3 ms), ``children`` (4 -> 2 ms) and ``transcript`` (8 -> 2 ms). Filters with a cursor
and a limit (``session_events``, ``list_runs``, ``list_sessions``) are vectorised scans
(5-9 ms on 1M events) either way.
"""
if tuple(SPECS) != TABLES:
    raise RuntimeError(f"DuckDB table specs {tuple(SPECS)} do not match the contract's {TABLES}")
