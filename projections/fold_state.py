"""The working set of one fold: copy-on-write views of the snapshot plus the batch's changes.

Rows are copied (``dataclasses.replace``) the first time a batch edits them, so the
snapshot's objects are never mutated. JSON fields are never mutated in place either: a
rule that changes one assigns a new value (``{**old, "answer": ...}``, a new members
list), so a shallow copy of the row is enough and a row in :class:`Changes` may share
untouched JSON with the snapshot or with an :class:`EventRow` of the same batch. Treat
the JSON values of both as immutable.

Assistant text is assembled in a list of parts per turn and joined once, when the batch
ends (:meth:`FoldState.finish`), so a run with thousands of deltas costs linear time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from projections.contract import Changes, Snapshot
from projections.rows import GroupRow, RunRow, SessionRow, TranscriptRow, WorkerRow

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    Row = TypeVar("Row", bound=DataclassInstance)
else:
    Row = TypeVar("Row")


def assistant_turn_id(run_id: str) -> str:
    """The one assistant turn of a run."""
    return f"assistant:{run_id}"


def question_turn_id(run_id: str, question_id: str) -> str:
    return f"question:{run_id}:{question_id}"


def artifact_turn_id(event_id: str) -> str:
    return f"artifact:{event_id}"


def _edit(changed: dict[str, Row], existing: dict[str, Row], key: str) -> Row | None:
    row = changed.get(key)
    if row is None:
        base = existing.get(key)
        if base is None:
            return None
        row = changed[key] = replace(base)
    return row


@dataclass(slots=True)
class FoldState:
    """Rows of one batch: ``peek_*`` reads the current version of a row without claiming
    it, ``edit_*`` returns a private copy that is part of the batch's changes."""

    snapshot: Snapshot
    changes: Changes
    pending_text: dict[str, list[str]] = field(default_factory=dict)
    """Turn id -> text parts of an assistant turn being assembled in this batch."""

    def peek_run(self, run_id: str) -> RunRow | None:
        row = self.changes.runs.get(run_id)
        return row if row is not None else self.snapshot.runs.get(run_id)

    def edit_run(self, run_id: str) -> RunRow | None:
        return _edit(self.changes.runs, self.snapshot.runs, run_id)

    def edit_session(self, session_id: str) -> SessionRow | None:
        return _edit(self.changes.sessions, self.snapshot.sessions, session_id)

    def peek_group(self, group_id: str) -> GroupRow | None:
        row = self.changes.groups.get(group_id)
        return row if row is not None else self.snapshot.groups.get(group_id)

    def edit_group(self, group_id: str) -> GroupRow | None:
        return _edit(self.changes.groups, self.snapshot.groups, group_id)

    def peek_turn(self, turn_id: str) -> TranscriptRow | None:
        row = self.changes.turns.get(turn_id)
        return row if row is not None else self.snapshot.turns.get(turn_id)

    def edit_turn(self, turn_id: str) -> TranscriptRow | None:
        return _edit(self.changes.turns, self.snapshot.turns, turn_id)

    def add_turn(self, turn: TranscriptRow) -> None:
        self.changes.turns[turn.turn_id] = turn

    def peek_worker(self, worker_id: str) -> WorkerRow | None:
        row = self.changes.workers.get(worker_id)
        return row if row is not None else self.snapshot.workers.get(worker_id)

    def edit_worker(self, worker_id: str) -> WorkerRow | None:
        return _edit(self.changes.workers, self.snapshot.workers, worker_id)

    def append_text(self, turn: TranscriptRow, text: str) -> None:
        """Add a chunk to an edited turn's text (joined by :meth:`finish`)."""
        parts = self.pending_text.get(turn.turn_id)
        if parts is None:
            self.pending_text[turn.turn_id] = [turn.content, text]
        else:
            parts.append(text)

    def replace_text(self, turn: TranscriptRow, text: str) -> None:
        """Set an edited turn's whole text, dropping chunks assembled so far."""
        self.pending_text.pop(turn.turn_id, None)
        turn.content = text

    def finish(self) -> Changes:
        for turn_id, parts in self.pending_text.items():
            self.changes.turns[turn_id].content = "".join(parts)
        self.pending_text.clear()
        return self.changes


__all__ = ["FoldState", "artifact_turn_id", "assistant_turn_id", "question_turn_id"]
