"""The run status machine (DESIGN §5 State: runs).

::

    command.ask ─> queued ──run.started / output──> running ──run.waiting──> waiting
                     ^                                 │ └──run.asked_user─> asked_user
                     └──────── command.resume ─────────┴──── (from waiting / asked_user)
    any non-terminal ── run.completed | run.failed | run.cancelled | run.dead_lettered ─> end

Rules:

* Every event with an envelope ``run_id`` belongs to that run: it moves ``last_seq``; the
  first one creates the row (``first_seq``, ``created_at``).
* ``command.ask`` creates the run ``queued`` with its agent type, parent / root / group,
  trace, user code and ``command_seq``. A run first seen through another event (a stream
  read from the middle, a foreign publisher) is created ``queued`` from that envelope; a
  later ``command.ask`` then fills in its identity. Only the first ask of a run counts.
* Identity fields still empty are filled from later events of the run. ``group_id`` is
  never taken from ``group.dispatched``, ``command.resume`` or ``run.waiting``: there it
  names the group the run dispatched or waits on, not one it belongs to. ``worker_id`` is
  never taken from commands: there it names the producer.
* ``run.started`` -> ``running``; ``attempts`` is the highest ``data.attempt`` seen,
  ``worker_id`` the latest starter, ``started_at`` the first start.
* Run output (deltas, messages, tool calls, state, artifacts, steering, group dispatch)
  moves a ``queued`` run to ``running``: someone is evidently executing it.
* ``run.waiting`` -> ``waiting``, ``run.asked_user`` -> ``asked_user``; ``command.resume``
  moves a ``waiting`` or ``asked_user`` run back to ``queued`` until it is picked up again.
* The first terminal event ends the run (``ended_at`` = its time) and fills ``result``
  (completed) or ``error`` (the rest). After it nothing but ``last_seq`` changes, so a
  zombie's late events cannot reopen a run and rebuilds stay deterministic.
"""

from __future__ import annotations

from typing import Any, Final, cast

from eventstore.catalog import RunDeadLettered, RunStarted
from eventstore.envelope import Event
from projections.fold_state import FoldState
from projections.rows import TERMINAL_STATUSES, RunRow, RunStatus

OUTPUT_TYPES: Final[frozenset[str]] = frozenset(
    {
        "message.delta",
        "message.completed",
        "run.state",
        "tool.call.started",
        "tool.call.completed",
        "artifact.created",
        "state.updated",
        "steering.injected",
        "steering.dropped",
        "group.dispatched",
        "run.called",
        "run.resumed",
    }
)
"""Events a run emits while it executes (besides ``run.started``)."""

TERMINAL_STATUS_OF: Final[dict[str, RunStatus]] = {
    "run.completed": "completed",
    "run.failed": "failed",
    "run.cancelled": "cancelled",
    "run.dead_lettered": "dead_lettered",
}

_FOREIGN_GROUP_TYPES: Final = frozenset({"group.dispatched", "command.resume", "run.waiting"})
"""Types whose envelope ``group_id`` is a group the run dispatched or waits on."""

_RESUMABLE: Final = frozenset({"waiting", "asked_user"})


def touch_run(state: FoldState, seq: int, event: Event, run_id: str) -> tuple[RunRow, bool]:
    """The run ``event`` belongs to, edited, and whether this event created it."""
    run = state.edit_run(run_id)
    is_command = event.type.startswith("command.")
    if run is None:
        run = RunRow(
            run_id=run_id,
            session_id=event.session_id or "",
            agent_type=event.agent_type,
            worker_id=None if is_command else event.worker_id,
            parent_run_id=event.parent_run_id,
            root_run_id=event.root_run_id,
            group_id=None if event.type in _FOREIGN_GROUP_TYPES else event.group_id,
            trace_id=event.trace_id,
            user_code=event.user_code,
            created_at=event.time,
            first_seq=seq,
            last_seq=seq,
        )
        state.changes.runs[run_id] = run
        return run, True
    run.last_seq = seq
    # Cheap checks per event; they let an out-of-order stream converge to full rows.
    if run.agent_type is None:
        run.agent_type = event.agent_type
    if run.parent_run_id is None:
        run.parent_run_id = event.parent_run_id
    if run.root_run_id is None:
        run.root_run_id = event.root_run_id
    if run.trace_id is None:
        run.trace_id = event.trace_id
    if run.user_code is None:
        run.user_code = event.user_code
    if run.group_id is None and event.type not in _FOREIGN_GROUP_TYPES:
        run.group_id = event.group_id
    if run.worker_id is None and not is_command:
        run.worker_id = event.worker_id
    return run, False


def on_command_ask(run: RunRow, seq: int, event: Event) -> None:
    """The first ask of a run states its identity, overriding envelope guesses."""
    if run.command_seq is not None:
        return
    run.command_seq = seq
    for name in ("agent_type", "parent_run_id", "root_run_id", "group_id", "trace_id"):
        value = getattr(event, name)
        if value is not None:
            setattr(run, name, value)
    if event.user_code is not None:
        run.user_code = event.user_code


def on_run_started(run: RunRow, event: Event) -> None:
    if run.status in TERMINAL_STATUSES:
        return
    data = cast(RunStarted, event).data
    run.status = "running"
    run.attempts = max(run.attempts, data.attempt)
    if event.worker_id is not None:
        run.worker_id = event.worker_id
    if run.started_at is None:
        run.started_at = event.time
    if run.command_seq is None:
        run.command_seq = data.command_seq


def on_output(run: RunRow) -> None:
    if run.status == "queued":
        run.status = "running"


def on_suspended(run: RunRow, status: RunStatus) -> None:
    """``run.waiting`` / ``run.asked_user``."""
    if run.status not in TERMINAL_STATUSES:
        run.status = status


def on_command_resume(run: RunRow) -> None:
    if run.status in _RESUMABLE:
        run.status = "queued"


def end_run(run: RunRow, event: Event, data: dict[str, Any]) -> bool:
    """Apply a terminal event; ``False`` when the run had already ended (first wins)."""
    if run.status in TERMINAL_STATUSES:
        return False
    status = TERMINAL_STATUS_OF[event.type]
    run.status = status
    run.ended_at = event.time
    if status == "completed":
        run.result = {
            "content": data["content"],
            "result": data["result"],
            "finish_reason": data["finish_reason"],
        }
    elif status == "failed":
        error = data["error"]
        run.error = {
            "type": error["type"],
            "message": error["message"],
            "code": data["code"],
            "retryable": data["retryable"],
        }
    elif status == "cancelled":
        run.error = {
            "reason": data["reason"],
            "mode": data["mode"],
            "requested_by": data["requested_by"],
        }
    else:
        attempts = cast(RunDeadLettered, event).data.attempts
        last_error = data["last_error"] or {"type": None, "message": None}
        run.error = {
            "type": last_error["type"],
            "message": last_error["message"],
            "attempts": attempts,
        }
        run.attempts = max(run.attempts, attempts)
    return True


__all__ = [
    "OUTPUT_TYPES",
    "TERMINAL_STATUS_OF",
    "end_run",
    "on_command_ask",
    "on_command_resume",
    "on_output",
    "on_run_started",
    "on_suspended",
    "touch_run",
]
