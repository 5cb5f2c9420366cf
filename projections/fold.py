"""The pure fold of a batch of log records into read-model changes (DESIGN §5, G4).

A batch goes ``keys_for(records)`` -> ``backend.load(keys)`` -> ``fold(records, snapshot)``
-> ``backend.commit(changes)``. Both functions are pure: no I/O, no clock (every time is
an event time), no randomness, no dependence on where batches are cut. Folding a log in
one batch or in many gives the same rows, which is what lets ``verify`` compare a rebuild
with the live read model byte for byte. That holds because every rule reads only rows
that :func:`keys_for` (:mod:`projections.fold_keys`) derives from the records themselves.

Rules common to every record (the per-table rules are in the docstrings of
:mod:`projections.fold_runs`, :mod:`projections.fold_groups`,
:mod:`projections.fold_transcript` and :mod:`projections.fold_system`):

* Records are applied in ascending ``seq`` order; anything else is a caller bug and
  raises :class:`ValueError`.
* An :class:`Undecodable` record becomes a :class:`RejectedRow` (record seq and subject,
  reason, body excerpt) and nothing else. An ``ingest.rejected`` *event* is a valid event
  like any other: it becomes an :class:`EventRow` only.
* Every decodable event becomes an :class:`EventRow`: envelope fields, ``schema`` =
  ``event.schema_version`` and ``data`` = the payload as JSON with every field present
  (``model_dump(mode="json", by_alias=True, exclude_none=False)``). This keeps inline
  artifact content: the EventLog is the complete record.
* An event id seen earlier in the same batch is skipped (a republish after the dedupe
  window). Ids already in the database are not visible here; the projector must drop
  those records before folding, or the unique ``id`` column refuses the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from eventstore.codec import Undecodable
from eventstore.envelope import Event
from projections import fold_groups, fold_runs, fold_system, fold_transcript
from projections.contract import Changes, Snapshot, SourceRecord
from projections.fold_keys import keys_for
from projections.fold_state import FoldState
from projections.rows import TERMINAL_STATUSES, EventRow, RejectedRow, RunRow

Handler = Callable[[FoldState, int, Event, dict[str, Any], RunRow | None], None]
"""Applies one event type: ``(state, seq, event, data as JSON, the event's run)``."""


def fold(records: Sequence[SourceRecord], snapshot: Snapshot) -> Changes:
    """Apply ``records`` (ascending seq, at least one) onto ``snapshot``'s rows.

    The snapshot is not modified. The result holds every row the batch touched, once, in
    its final state, and ``last_seq`` = the last record's seq (the new checkpoint).
    """
    if not records:
        raise ValueError("fold needs at least one record: the checkpoint is the last seq")
    state = FoldState(snapshot=snapshot, changes=Changes(last_seq=records[-1].seq))
    # An id already projected (or seen earlier in this batch) is a republished duplicate:
    # the log may hold it twice once the dedupe window has passed; project it once.
    seen_ids: set[str] = set(snapshot.known_event_ids)
    previous = 0
    for seq, subject, item in records:
        if seq <= previous:
            raise ValueError(
                f"records must come in ascending stream sequence (>= 1): got {seq} after {previous}"
            )
        previous = seq
        if isinstance(item, Undecodable):
            state.changes.rejected.append(
                RejectedRow(seq=seq, subject=subject, reason=item.reason, body_excerpt=item.excerpt)
            )
        elif item.id not in seen_ids:
            seen_ids.add(item.id)
            _apply(state, seq, subject, item)
    return state.finish()


def _apply(state: FoldState, seq: int, subject: str, event: Event) -> None:
    payload = event.data
    # The serializer directly: model_dump's wrapper costs more than the dump of a delta.
    data: dict[str, Any] = payload.__pydantic_serializer__.to_python(
        payload, mode="json", by_alias=True
    )
    state.changes.events.append(
        EventRow(
            seq=seq,
            id=event.id,
            type=event.type,
            subject=subject,
            time=event.time,
            schema=event.schema_version,
            session_id=event.session_id,
            run_id=event.run_id,
            parent_run_id=event.parent_run_id,
            root_run_id=event.root_run_id,
            group_id=event.group_id,
            agent_type=event.agent_type,
            worker_id=event.worker_id,
            user_code=event.user_code,
            trace_id=event.trace_id,
            causation_id=event.causation_id,
            data=data,
        )
    )
    session = None
    if event.session_id is not None:
        session = fold_system.touch_session(state, seq, event, event.session_id)
    run = None
    if event.run_id is not None:
        run, created = fold_runs.touch_run(state, seq, event, event.run_id)
        if created and session is not None:
            session.run_count += 1
    if event.worker_id is not None:
        fold_system.heartbeat(state, seq, event, event.worker_id)
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(state, seq, event, data, run)


# -- handlers, one per event type that changes more than the common rows ------------


def _ask(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_command_ask(run, seq, event)
    fold_transcript.on_user_message(state, seq, event, data)


def _steer(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    fold_transcript.on_user_message(state, seq, event, data)


def _resume(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_command_resume(run)
    reason = data["reason"]
    if reason == "user_reply":
        fold_transcript.on_user_reply(state, seq, event, data, run)
    elif reason == "timeout":
        fold_groups.on_group_timeout(state, seq, event)


def _started(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_run_started(run, event)


def _output(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_output(run)


def _delta(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_output(run)
        fold_transcript.on_delta(state, seq, event, data, run)


def _message_completed(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_output(run)
        fold_transcript.on_message_completed(state, seq, event, data, run)


def _artifact(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_output(run)
        fold_transcript.on_artifact(state, seq, event, data, run)


def _state_updated(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_output(run)
    fold_system.on_state_updated(state, seq, event, data)


def _group_dispatched(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_output(run)
    fold_groups.on_group_dispatched(state, seq, event)


def _waiting(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None:
        fold_runs.on_suspended(run, "waiting")


def _asked_user(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    # A question asked after the run ended could never be answered: it is not a turn.
    if run is not None and run.status not in TERMINAL_STATUSES:
        fold_runs.on_suspended(run, "asked_user")
        fold_transcript.on_asked_user(state, seq, event, run)


def _terminal(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    if run is not None and fold_runs.end_run(run, event, data):
        fold_transcript.on_run_ended(state, seq, event, data, run)
        fold_groups.on_member_ended(state, seq, event, run.run_id, run.status)


def _worker_started(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    fold_system.on_worker_started(state, seq, event)


def _worker_stopped(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    fold_system.on_worker_stopped(state, seq, event)


def _command_worker(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    fold_system.on_command_worker(state, seq, event)


_HANDLERS: Final[dict[str, Handler]] = {
    "command.ask": _ask,
    "command.steer": _steer,
    "command.resume": _resume,
    "command.worker": _command_worker,
    "run.started": _started,
    "message.delta": _delta,
    "message.completed": _message_completed,
    "run.state": _output,
    "tool.call.started": _output,
    "tool.call.completed": _output,
    "steering.injected": _output,
    "steering.dropped": _output,
    "run.called": _output,
    "run.resumed": _output,
    "artifact.created": _artifact,
    "state.updated": _state_updated,
    "group.dispatched": _group_dispatched,
    "run.waiting": _waiting,
    "run.asked_user": _asked_user,
    "run.completed": _terminal,
    "run.failed": _terminal,
    "run.cancelled": _terminal,
    "run.dead_lettered": _terminal,
    "worker.started": _worker_started,
    "worker.stopped": _worker_stopped,
}
"""Types not listed (``command.cancel``, ``command.reload_plugins``, ``plugins.reloaded``,
``ingest.rejected``) change only the EventLog and the common session / run / worker rows."""


__all__ = ["fold", "keys_for"]
