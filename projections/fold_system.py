"""Sessions, workers and key/value state (DESIGN §5).

Rules:

* Sessions: every event with a ``session_id`` creates or updates its session:
  ``first_seq`` / ``created_at`` from the first event, ``last_seq`` from the latest,
  ``last_activity`` = the latest event time seen (times from several publishers need not
  be monotonic), ``event_count`` + 1; ``run_count`` + 1 when a run is first seen (the
  event creates its run row); ``user_code`` from the first command that carries one.
* Workers: ``worker.started`` makes a worker ``live`` with its agent types, concurrency,
  host, pid and version (a restart under the same id starts afresh); ``worker.stopped``
  makes it ``stopped`` (a worker first seen stopping gets a row too). Any other event
  whose envelope ``worker_id`` names a known worker that has not stopped refreshes its
  ``last_heartbeat`` (the latest event time) and ``last_seq``; unknown ids create
  nothing. ``command.worker`` ``suspend`` turns a live worker ``suspended`` and
  ``resume`` turns it ``live`` again; ``evict`` changes nothing here (the evicted
  worker reports its own ``worker.stopped``), and a stopped worker stays stopped.
* State: ``state.updated`` sets ``(scope, scope_id, key)`` where ``scope_id`` is the
  envelope's ``session_id`` (scope ``session``), ``user_code`` (``user``),
  ``agent_type`` (``agent_type``) or ``""`` (``global``, or the field is missing). The
  latest seq wins; ``value`` may be ``null``.
"""

from __future__ import annotations

from typing import Any, cast

from eventstore.catalog import CommandWorker, WorkerStarted
from eventstore.envelope import Event
from projections.fold_state import FoldState
from projections.rows import SessionRow, StateRow, WorkerRow, WorkerStatus


def touch_session(state: FoldState, seq: int, event: Event, session_id: str) -> SessionRow:
    session = state.edit_session(session_id)
    if session is None:
        session = SessionRow(
            session_id=session_id,
            first_seq=seq,
            last_seq=seq,
            created_at=event.time,
            last_activity=event.time,
            event_count=1,
        )
        state.changes.sessions[session_id] = session
    else:
        session.last_seq = seq
        session.event_count += 1
        session.last_activity = max(session.last_activity, event.time)
    if (
        session.user_code is None
        and event.user_code is not None
        and event.type.startswith("command.")
    ):
        session.user_code = event.user_code
    return session


def heartbeat(state: FoldState, seq: int, event: Event, worker_id: str) -> None:
    known = state.peek_worker(worker_id)
    if known is None or known.status == "stopped":
        return
    worker = state.edit_worker(worker_id)
    if worker is None:
        return
    worker.last_seq = seq
    if worker.last_heartbeat is None or event.time > worker.last_heartbeat:
        worker.last_heartbeat = event.time


def on_worker_started(state: FoldState, seq: int, event: Event) -> None:
    if event.worker_id is None:  # the catalog requires it; kept for type narrowing
        return
    data = cast(WorkerStarted, event).data
    state.changes.workers[event.worker_id] = WorkerRow(
        worker_id=event.worker_id,
        agent_types=list(data.agent_types),
        status="live",
        max_concurrency=data.max_concurrency,
        hostname=data.hostname,
        pid=data.pid,
        version=data.version,
        started_at=event.time,
        last_heartbeat=event.time,
        last_seq=seq,
    )


def on_worker_stopped(state: FoldState, seq: int, event: Event) -> None:
    if event.worker_id is None:
        return
    worker = state.edit_worker(event.worker_id)
    if worker is None:
        worker = WorkerRow(worker_id=event.worker_id)
        state.changes.workers[event.worker_id] = worker
    worker.status = "stopped"
    worker.stopped_at = event.time
    if worker.last_heartbeat is None or event.time > worker.last_heartbeat:
        worker.last_heartbeat = event.time
    worker.last_seq = seq


def on_command_worker(state: FoldState, seq: int, event: Event) -> None:
    data = cast(CommandWorker, event).data
    known = state.peek_worker(data.target_worker_id)
    if known is None:
        return
    if data.action == "suspend" and known.status == "live":
        status: WorkerStatus = "suspended"
    elif data.action == "resume" and known.status == "suspended":
        status = "live"
    else:
        return
    worker = state.edit_worker(data.target_worker_id)
    if worker is not None:
        worker.status = status
        worker.last_seq = seq


def on_state_updated(state: FoldState, seq: int, event: Event, data: dict[str, Any]) -> None:
    scope: str = data["scope"]
    if scope == "session":
        scope_id = event.session_id
    elif scope == "user":
        scope_id = event.user_code
    elif scope == "agent_type":
        scope_id = event.agent_type
    else:
        scope_id = None
    key: str = data["key"]
    row_key = (scope, scope_id or "", key)
    state.changes.states[row_key] = StateRow(
        scope=scope,
        scope_id=row_key[1],
        key=key,
        value=data["value"],
        seq=seq,
        updated_at=event.time,
        run_id=event.run_id,
    )


__all__ = [
    "heartbeat",
    "on_command_worker",
    "on_state_updated",
    "on_worker_started",
    "on_worker_stopped",
    "touch_session",
]
