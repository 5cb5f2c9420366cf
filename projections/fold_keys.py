"""Which existing rows a batch may read or change: the keys the projector loads before
:func:`projections.fold.fold` runs. Every rule of the fold reads only rows named here,
which is what makes the fold independent of where batches are cut (G4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, cast

from eventstore.catalog import CommandResume, CommandWorker, GroupDispatched, RunAskedUser
from eventstore.codec import Undecodable
from eventstore.envelope import Event
from projections.contract import BatchKeys, SourceRecord
from projections.fold_state import artifact_turn_id, assistant_turn_id, question_turn_id


def keys_for(records: Sequence[SourceRecord]) -> BatchKeys:
    """Primary keys of every existing row ``fold`` may read or update for ``records``.

    Envelope ids (session, run, group, worker), plus: the user turn of a command (its
    event id), the assistant turn of a run with message or terminal events, question
    turns asked or answered, artifact turns, the member runs of a dispatched group and
    the target of ``command.worker``. Parent runs are not included: no rule reads or
    changes a parent through its child's events.
    """
    keys = BatchKeys()
    for record in records:
        event = record.item
        if isinstance(event, Undecodable):
            continue
        keys.event_ids.add(event.id)
        if event.session_id is not None:
            keys.session_ids.add(event.session_id)
        if event.run_id is not None:
            keys.run_ids.add(event.run_id)
        if event.group_id is not None:
            keys.group_ids.add(event.group_id)
        if event.worker_id is not None:
            keys.worker_ids.add(event.worker_id)
        add_keys = _EXTRA_KEYS.get(event.type)
        if add_keys is not None:
            add_keys(keys, event)
    return keys


# -- keys beyond the envelope ids -----------------------------------------------------


def _user_turn_key(keys: BatchKeys, event: Event) -> None:
    keys.turn_ids.add(event.id)


def _resume_keys(keys: BatchKeys, event: Event) -> None:
    data = cast(CommandResume, event).data
    if data.reason == "user_reply":
        keys.turn_ids.add(event.id)
        if event.run_id is not None and data.question_id is not None:
            keys.turn_ids.add(question_turn_id(event.run_id, data.question_id))


def _assistant_key(keys: BatchKeys, event: Event) -> None:
    if event.run_id is not None:
        keys.turn_ids.add(assistant_turn_id(event.run_id))


def _question_key(keys: BatchKeys, event: Event) -> None:
    if event.run_id is not None:
        keys.turn_ids.add(
            question_turn_id(event.run_id, cast(RunAskedUser, event).data.question_id)
        )


def _artifact_key(keys: BatchKeys, event: Event) -> None:
    keys.turn_ids.add(artifact_turn_id(event.id))


def _member_keys(keys: BatchKeys, event: Event) -> None:
    keys.run_ids.update(member.run_id for member in cast(GroupDispatched, event).data.members)


def _worker_target_key(keys: BatchKeys, event: Event) -> None:
    keys.worker_ids.add(cast(CommandWorker, event).data.target_worker_id)


_EXTRA_KEYS: Final[dict[str, Callable[[BatchKeys, Event], None]]] = {
    "command.ask": _user_turn_key,
    "command.steer": _user_turn_key,
    "command.resume": _resume_keys,
    "message.delta": _assistant_key,
    "message.completed": _assistant_key,
    "run.completed": _assistant_key,
    "run.failed": _assistant_key,
    "run.cancelled": _assistant_key,
    "run.dead_lettered": _assistant_key,
    "run.asked_user": _question_key,
    "artifact.created": _artifact_key,
    "group.dispatched": _member_keys,
    "command.worker": _worker_target_key,
}


__all__ = ["keys_for"]
