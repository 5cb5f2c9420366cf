"""Read-model rows (DESIGN §5) as plain dataclasses.

Every value is derived from events only (times are event times, never the clock), so a
rebuild from sequence 1 produces the same rows as the live projector (G4). JSON columns
hold plain ``dict`` / ``list`` / scalars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

JSON = Any
"""A JSON-compatible value (dict, list, str, int, float, bool or None)."""

RunStatus = Literal[
    "queued",
    "running",
    "waiting",
    "asked_user",
    "completed",
    "failed",
    "cancelled",
    "dead_lettered",
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "dead_lettered"})

TurnRole = Literal["user", "assistant", "question", "artifact"]
TurnStatus = Literal["complete", "streaming", "failed", "cancelled", "asked", "answered"]
GroupStatus = Literal["running", "completed", "failed", "cancelled", "timed_out"]
WorkerStatus = Literal["live", "suspended", "stopped"]


@dataclass(slots=True)
class EventRow:
    """EventLog: one row per decodable event; ``seq`` is the primary key and the cursor."""

    seq: int
    id: str
    type: str
    subject: str
    time: datetime
    schema: int
    session_id: str | None
    run_id: str | None
    parent_run_id: str | None
    root_run_id: str | None
    group_id: str | None
    agent_type: str | None
    worker_id: str | None
    user_code: str | None
    trace_id: str | None
    causation_id: str | None
    data: JSON


@dataclass(slots=True)
class RejectedRow:
    """A stored message that is not a valid event, with the reason (G6)."""

    seq: int
    subject: str
    reason: str
    body_excerpt: str


@dataclass(slots=True)
class SessionRow:
    session_id: str
    first_seq: int
    last_seq: int
    created_at: datetime
    last_activity: datetime
    event_count: int = 0
    run_count: int = 0
    user_code: str | None = None


@dataclass(slots=True)
class RunRow:
    run_id: str
    session_id: str
    status: RunStatus = "queued"
    agent_type: str | None = None
    worker_id: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    group_id: str | None = None
    trace_id: str | None = None
    user_code: str | None = None
    attempts: int = 0
    command_seq: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    result: JSON = None
    """For completed runs: ``{"content": ..., "result": ..., "finish_reason": ...}``."""
    error: JSON = None
    """For failed / dead-lettered / cancelled runs: the error or reason as a dict."""
    first_seq: int = 0
    last_seq: int = 0


@dataclass(slots=True)
class TranscriptRow:
    """One turn of a session's conversation, with the seq range it came from.

    ``turn_id`` is stable: user turns use their command's event id, the assistant turn of
    a run is ``assistant:<run_id>``, a question ``question:<run_id>:<question_id>``, an
    artifact ``artifact:<event id>``. Order a transcript by ``seq_from``.
    """

    turn_id: str
    session_id: str
    role: TurnRole
    kind: str
    """The event type the turn started from (``command.ask``, ``message.delta``, ...)."""
    content: str
    status: TurnStatus
    seq_from: int
    seq_to: int
    time: datetime
    run_id: str | None = None
    data: JSON = None
    """Extra structure: content parts, attachments, artifact refs, question schema, answer."""


@dataclass(slots=True)
class GroupRow:
    group_id: str
    session_id: str
    strategy: str
    total: int
    parent_run_id: str | None = None
    members: JSON = field(default_factory=list)
    """``[{"index", "run_id", "agent_type", "status"}]`` in member order."""
    succeeded: int = 0
    failed: int = 0
    status: GroupStatus = "running"
    timeout_s: float | None = None
    created_at: datetime | None = None
    ended_at: datetime | None = None
    first_seq: int = 0
    last_seq: int = 0


@dataclass(slots=True)
class WorkerRow:
    worker_id: str
    agent_types: JSON = field(default_factory=list)
    status: WorkerStatus = "live"
    max_concurrency: int | None = None
    hostname: str | None = None
    pid: int | None = None
    version: str | None = None
    started_at: datetime | None = None
    last_heartbeat: datetime | None = None
    """Time of the worker's latest event (start, run start or end, stop)."""
    stopped_at: datetime | None = None
    last_seq: int = 0


@dataclass(slots=True)
class StateRow:
    """Key/value state by scope; ``scope_id`` is the session id, user code, agent type or ""."""

    scope: str
    scope_id: str
    key: str
    value: JSON
    seq: int
    updated_at: datetime
    run_id: str | None = None


__all__ = [
    "JSON",
    "TERMINAL_STATUSES",
    "EventRow",
    "GroupRow",
    "GroupStatus",
    "RejectedRow",
    "RunRow",
    "RunStatus",
    "SessionRow",
    "StateRow",
    "TranscriptRow",
    "TurnRole",
    "TurnStatus",
    "WorkerRow",
    "WorkerStatus",
]
