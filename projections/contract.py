"""The port between the projector and a read-model database (eventsourcing's "tracking
recorder" idea): load the rows a batch touches, then write the batch's changes together
with the new checkpoint in ONE transaction (G4). Queries the API serves live here too,
so every backend answers them the same way.

A batch goes: ``keys_for(records)`` -> ``backend.load(keys)`` -> ``fold(records, snapshot)``
-> ``backend.commit(changes)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from eventstore.types import StoredRecord
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

SCHEMA_VERSION = 1
"""Version of the read-model schema. Bump it when tables or fold rules change: a
projector that finds an older version rebuilds into new tables and swaps (blue/green)."""

TABLES = ("events", "rejected", "sessions", "runs", "transcript", "groups", "workers", "state")
"""Every read-model table, in the order ``dump`` returns them."""


SourceRecord = StoredRecord
"""One stored message as the projector sees it: ``(seq, subject, item)``, where item is an
Event or an Undecodable."""


@dataclass(slots=True)
class BatchKeys:
    """Primary keys of the existing rows a batch may update."""

    run_ids: set[str] = field(default_factory=set)
    session_ids: set[str] = field(default_factory=set)
    group_ids: set[str] = field(default_factory=set)
    turn_ids: set[str] = field(default_factory=set)
    worker_ids: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    """Ids of the batch's events: a repeat of an already projected event (republished
    after the dedupe window) must be skipped, not applied twice."""


@dataclass(slots=True)
class Snapshot:
    """Existing rows for a batch's keys (absent keys are simply missing)."""

    runs: dict[str, RunRow] = field(default_factory=dict)
    sessions: dict[str, SessionRow] = field(default_factory=dict)
    groups: dict[str, GroupRow] = field(default_factory=dict)
    turns: dict[str, TranscriptRow] = field(default_factory=dict)
    workers: dict[str, WorkerRow] = field(default_factory=dict)
    known_event_ids: set[str] = field(default_factory=set)
    """Those of ``BatchKeys.event_ids`` already in the EventLog."""


@dataclass(slots=True)
class Changes:
    """Everything one batch writes. Rows in the dicts are upserted whole (insert or replace
    by primary key); ``events`` and ``rejected`` are inserted. ``last_seq`` becomes the
    checkpoint in the same transaction."""

    last_seq: int
    events: list[EventRow] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    runs: dict[str, RunRow] = field(default_factory=dict)
    sessions: dict[str, SessionRow] = field(default_factory=dict)
    groups: dict[str, GroupRow] = field(default_factory=dict)
    turns: dict[str, TranscriptRow] = field(default_factory=dict)
    workers: dict[str, WorkerRow] = field(default_factory=dict)
    states: dict[tuple[str, str, str], StateRow] = field(default_factory=dict)
    """Keyed by ``(scope, scope_id, key)``."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    status: str | None = None
    agent_type: str | None = None
    session_id: str | None = None
    root_run_id: str | None = None
    parent_run_id: str | None = None
    limit: int = 50
    before_seq: int | None = None
    """Cursor: only runs whose ``first_seq`` is below this (newest first)."""


class ReadModelBackend(Protocol):
    """One read-model database at one schema version (its tables carry the version)."""

    name: str
    """``sqlite``, ``postgresql`` or ``duckdb``."""
    schema_version: int

    async def start(self) -> None:
        """Connect and create this version's tables and indexes if they do not exist."""

    async def close(self) -> None: ...

    async def checkpoint(self) -> int:
        """Last stream sequence applied at this schema version (0 when none)."""

    async def load(self, keys: BatchKeys) -> Snapshot: ...

    async def commit(self, changes: Changes) -> None:
        """Write ``changes`` and set the checkpoint to ``changes.last_seq``, atomically.
        A checkpoint that would not move forward raises ``ValueError`` (another projector
        got there first) and writes nothing."""

    # blue/green: which schema version the API should read
    async def active_version(self) -> int | None: ...

    async def activate(self) -> None:
        """Make this backend's schema version the one readers use."""

    async def drop_version(self, version: int) -> None:
        """Drop the tables of another (older) schema version."""

    # queries (all ordered deterministically)
    async def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table in ``TABLES``, ordered by primary key; JSON columns
        decoded, times as timezone-aware UTC datetimes. Used by verify and tests."""

    async def get_run(self, run_id: str) -> RunRow | None: ...

    async def list_runs(self, query: RunFilter) -> list[RunRow]:
        """Newest first (by ``first_seq`` descending)."""

    async def children(self, run_id: str) -> list[RunRow]:
        """Runs whose parent is ``run_id``, oldest first."""

    async def tree(self, root_run_id: str) -> list[RunRow]:
        """The root run and every run with that ``root_run_id``, oldest first."""

    async def run_events(self, run_id: str) -> list[EventRow]: ...

    async def session_events(
        self, session_id: str, after_seq: int = 0, limit: int = 100, event_type: str | None = None
    ) -> list[EventRow]: ...

    async def events(
        self, after_seq: int = 0, limit: int = 100, event_type: str | None = None
    ) -> list[EventRow]: ...

    async def get_session(self, session_id: str) -> SessionRow | None: ...

    async def list_sessions(
        self, limit: int = 50, before: datetime | None = None
    ) -> list[SessionRow]:
        """Most recent activity first."""

    async def sessions_as_of(
        self, as_of_seq: int, before_position: int | None = None, limit: int = 50
    ) -> list[tuple[int, SessionRow]]:
        """Sessions that existed at ``as_of_seq``, most recent activity first, as
        ``(position, current row)``: a session's position is the seq of its latest event
        at or below ``as_of_seq`` (so it does not move when the session gets newer events),
        and only positions below ``before_position`` are returned. Pages keyed this way
        never repeat or skip a session however much is written meanwhile."""

    async def transcript(self, session_id: str) -> list[TranscriptRow]:
        """Turns ordered by ``seq_from``."""

    async def get_group(self, group_id: str) -> GroupRow | None: ...

    async def list_workers(self) -> list[WorkerRow]: ...

    async def get_state(self, scope: str, scope_id: str, key: str) -> StateRow | None: ...

    async def list_rejected(self, after_seq: int = 0, limit: int = 100) -> list[RejectedRow]: ...

    async def counts(self) -> dict[str, int]:
        """Row count per table (``TABLES``) and runs per status as ``runs:<status>``."""


__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "BatchKeys",
    "Changes",
    "ReadModelBackend",
    "RunFilter",
    "Snapshot",
    "SourceRecord",
]
