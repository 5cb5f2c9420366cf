"""SQLAlchemy Core tables of the read model (DESIGN §5), one set per namespace and version.

Table names carry the schema version (``jl_v1_runs``) so a rebuild can fill new tables
while readers keep using the old ones (blue/green); ``{namespace}_meta`` says which
version is active. Columns follow the row dataclasses of :mod:`projections.rows` field
for field and in field order, so a selected row maps back with ``RowClass(*row)``.

Text keys compare by code point on every backend (PostgreSQL uses the ``C`` collation
for them) so orderings, and therefore ``dump()``, agree between SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

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

ROW_TYPES: dict[str, type[Any]] = {
    "events": EventRow,
    "rejected": RejectedRow,
    "sessions": SessionRow,
    "runs": RunRow,
    "transcript": TranscriptRow,
    "groups": GroupRow,
    "workers": WorkerRow,
    "state": StateRow,
}
"""The dataclass each table's rows become."""

CHECKPOINT = "checkpoint"
META = "meta"


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant on every backend.

    SQLite has no time zones: values are stored as naive UTC and given ``UTC`` back on
    read. Aware values in other zones are converted; naive values are refused, because
    their instant is unknown.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: read-model times must be aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _key() -> TypeEngine[str]:
    """Identifier text compared by code point (PostgreSQL's locale collations differ)."""
    return String().with_variant(String(collation="C"), "postgresql")


def _seq() -> TypeEngine[int]:
    """A stream sequence. On SQLite the primary-key seq becomes the rowid alias (64-bit)."""
    return BigInteger().with_variant(Integer(), "sqlite")


def _json() -> JSON:
    return JSON(none_as_null=True)


def _time() -> UtcDateTime:
    return UtcDateTime()


def _events(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("seq", _seq(), primary_key=True, autoincrement=False),
        Column("id", _key(), nullable=False),
        Column("type", _key(), nullable=False),
        Column("subject", Text(), nullable=False),
        Column("time", _time(), nullable=False),
        Column("schema", Integer(), nullable=False),
        *(
            Column(column, _key())
            for column in (
                "session_id",
                "run_id",
                "parent_run_id",
                "root_run_id",
                "group_id",
                "agent_type",
                "worker_id",
                "user_code",
                "trace_id",
                "causation_id",
            )
        ),
        Column("data", _json()),
        Index(f"ix_{name}_id", "id", unique=True),
        Index(f"ix_{name}_session", "session_id", "seq"),
        Index(f"ix_{name}_run", "run_id", "seq"),
        Index(f"ix_{name}_type", "type", "seq"),
    )


def _rejected(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("seq", _seq(), primary_key=True, autoincrement=False),
        Column("subject", Text(), nullable=False),
        Column("reason", Text(), nullable=False),
        Column("body_excerpt", Text(), nullable=False),
    )


def _sessions(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("session_id", _key(), primary_key=True),
        Column("first_seq", BigInteger(), nullable=False),
        Column("last_seq", BigInteger(), nullable=False),
        Column("created_at", _time(), nullable=False),
        Column("last_activity", _time(), nullable=False),
        Column("event_count", Integer(), nullable=False),
        Column("run_count", Integer(), nullable=False),
        Column("user_code", _key()),
        Index(f"ix_{name}_activity", "last_activity", "session_id"),
    )


def _runs(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("run_id", _key(), primary_key=True),
        Column("session_id", _key(), nullable=False),
        Column("status", _key(), nullable=False),
        *(
            Column(column, _key())
            for column in (
                "agent_type",
                "worker_id",
                "parent_run_id",
                "root_run_id",
                "group_id",
                "trace_id",
                "user_code",
            )
        ),
        Column("attempts", Integer(), nullable=False),
        Column("command_seq", BigInteger()),
        Column("created_at", _time()),
        Column("started_at", _time()),
        Column("ended_at", _time()),
        Column("result", _json()),
        Column("error", _json()),
        Column("first_seq", BigInteger(), nullable=False),
        Column("last_seq", BigInteger(), nullable=False),
        Index(f"ix_{name}_first", "first_seq"),
        Index(f"ix_{name}_status", "status", "first_seq"),
        Index(f"ix_{name}_agent", "agent_type", "first_seq"),
        Index(f"ix_{name}_session", "session_id", "first_seq"),
        Index(f"ix_{name}_parent", "parent_run_id", "first_seq"),
        Index(f"ix_{name}_root", "root_run_id", "first_seq"),
        Index(f"ix_{name}_group", "group_id"),
    )


def _transcript(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("turn_id", _key(), primary_key=True),
        Column("session_id", _key(), nullable=False),
        Column("role", _key(), nullable=False),
        Column("kind", _key(), nullable=False),
        Column("content", Text(), nullable=False),
        Column("status", _key(), nullable=False),
        Column("seq_from", BigInteger(), nullable=False),
        Column("seq_to", BigInteger(), nullable=False),
        Column("time", _time(), nullable=False),
        Column("run_id", _key()),
        Column("data", _json()),
        Index(f"ix_{name}_session", "session_id", "seq_from"),
    )


def _groups(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("group_id", _key(), primary_key=True),
        Column("session_id", _key(), nullable=False),
        Column("strategy", _key(), nullable=False),
        Column("total", Integer(), nullable=False),
        Column("parent_run_id", _key()),
        Column("members", _json()),
        Column("succeeded", Integer(), nullable=False),
        Column("failed", Integer(), nullable=False),
        Column("status", _key(), nullable=False),
        Column("timeout_s", Float()),
        Column("created_at", _time()),
        Column("ended_at", _time()),
        Column("first_seq", BigInteger(), nullable=False),
        Column("last_seq", BigInteger(), nullable=False),
    )


def _workers(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("worker_id", _key(), primary_key=True),
        Column("agent_types", _json()),
        Column("status", _key(), nullable=False),
        Column("max_concurrency", Integer()),
        Column("hostname", Text()),
        Column("pid", Integer()),
        Column("version", Text()),
        Column("started_at", _time()),
        Column("last_heartbeat", _time()),
        Column("stopped_at", _time()),
        Column("last_seq", BigInteger(), nullable=False),
        Index(f"ix_{name}_status", "status"),
    )


def _state(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("scope", _key(), primary_key=True),
        Column("scope_id", _key(), primary_key=True),
        Column("key", _key(), primary_key=True),
        Column("value", _json()),
        Column("seq", BigInteger(), nullable=False),
        Column("updated_at", _time(), nullable=False),
        Column("run_id", _key()),
        Index(f"ix_{name}_scope_key", "scope", "key"),
    )


def _checkpoint(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer(), primary_key=True, autoincrement=False),
        Column("seq", BigInteger(), nullable=False),
    )


def _meta(metadata: MetaData, name: str) -> Table:
    if name in metadata.tables:  # shared by every version of a namespace
        return metadata.tables[name]
    return Table(
        name,
        metadata,
        Column("key", _key(), primary_key=True),
        Column("value", Text(), nullable=False),
    )


_BUILDERS = {
    "events": _events,
    "rejected": _rejected,
    "sessions": _sessions,
    "runs": _runs,
    "transcript": _transcript,
    "groups": _groups,
    "workers": _workers,
    "state": _state,
    CHECKPOINT: _checkpoint,
}


def version_prefix(namespace: str, version: int) -> str:
    """``{namespace}_v{version}``: the prefix of every table of that version."""
    return f"{namespace}_v{version}"


def meta_table_name(namespace: str) -> str:
    return f"{namespace}_meta"


def build_tables(metadata: MetaData, namespace: str, version: int) -> dict[str, Table]:
    """Every table of one read-model version, keyed by its short name (``TABLES`` plus
    ``"checkpoint"`` and ``"meta"``), added to ``metadata``.

    >>> tables = build_tables(MetaData(), "jl", 1)
    >>> tables["runs"].name, tables["meta"].name
    ('jl_v1_runs', 'jl_meta')
    """
    prefix = version_prefix(namespace, version)
    tables = {short: build(metadata, f"{prefix}_{short}") for short, build in _BUILDERS.items()}
    tables[META] = _meta(metadata, meta_table_name(namespace))
    for short in TABLES:
        columns = [column.name for column in tables[short].columns]
        expected = [field.name for field in fields(ROW_TYPES[short])]
        if columns != expected:  # a rows.py change must be mirrored here
            raise RuntimeError(f"{short} columns {columns} do not match {expected}")
    return tables


__all__ = [
    "CHECKPOINT",
    "META",
    "ROW_TYPES",
    "UtcDateTime",
    "build_tables",
    "meta_table_name",
    "version_prefix",
]
