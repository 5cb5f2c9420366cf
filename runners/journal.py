"""A run's journal (G5): its own events, read back from the log, indexed by step.

Orchestration calls (``call_agent``, ``dispatch_group``, ``collect_group_results``,
``ask_user``) are numbered in the order a handler makes them: step 0, 1, 2... Every id a
step creates is derived from the run id and the step number, so a handler re-invoked
after a wait (or after a crash) finds each earlier step's records and does not dispatch
again. Output (``emit_*``) is replayed by position: the first ``n`` emits of a re-invoked
handler are the ``n`` already in the log and are not published again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Final

from eventstore.catalog import (
    GroupDispatched,
    MessageDelta,
    RunAskedUser,
    RunCalled,
    RunResumed,
    RunStarted,
    RunWaiting,
    SteeringInjected,
    ToolCallCompleted,
)
from eventstore.codec import Undecodable
from eventstore.envelope import Event
from eventstore.store import EventStore
from eventstore.subjects import run_end_subject, run_out_subject, run_subjects_filter

REPLAYED_EMIT_TYPES: Final = frozenset(
    {
        "run.state",
        "artifact.created",
        "state.updated",
        "tool.call.started",
        "tool.call.completed",
        "message.completed",
    }
)
"""Output a handler produces through ``emit_*`` / ``call_tool`` / ``set_state``: replayed
by position. Deltas are replayed by character count (they are coalesced)."""


def child_run_id(run_id: str, step: int) -> str:
    return f"{run_id}-c{step}"


def group_id_of(run_id: str, step: int) -> str:
    return f"{run_id}-g{step}"


def member_run_id(group_id: str, index: int) -> str:
    return f"{group_id}-m{index}"


def question_id_of(run_id: str, step: int) -> str:
    return f"{run_id}-q{step}"


def _step_from(identifier: str, prefix: str) -> int | None:
    if not identifier.startswith(prefix):
        return None
    with contextlib.suppress(ValueError):
        return int(identifier[len(prefix) :])
    return None


@dataclass(slots=True)
class Journal:
    """What a run has recorded so far; built by :func:`load_journal`."""

    run_id: str
    events: list[tuple[int, Event]] = field(default_factory=list)
    called: dict[int, RunCalled] = field(default_factory=dict)
    groups: dict[int, GroupDispatched] = field(default_factory=dict)
    waits: dict[int, tuple[int, RunWaiting | RunAskedUser]] = field(default_factory=dict)
    """Step -> (seq, ``run.waiting`` or ``run.asked_user``)."""
    resumed: dict[int, tuple[int, RunResumed]] = field(default_factory=dict)
    emits: list[Event] = field(default_factory=list)
    steering: list[SteeringInjected] = field(default_factory=list)
    """Steering messages handed to the handler, in order (replayed by their own index)."""
    chunk_chars: int = 0
    delta_count: int = 0
    first_start: RunStarted | None = None
    last_seq: int = 0
    """Sequence of the last event on the run's ``.out`` subject (0: none)."""

    def add(self, seq: int, event: Event) -> None:
        self.events.append((seq, event))
        self.last_seq = max(self.last_seq, seq)
        if isinstance(event, MessageDelta):
            self.chunk_chars += len(event.data.text)
            self.delta_count += 1
        elif event.type in REPLAYED_EMIT_TYPES:
            self.emits.append(event)
        elif isinstance(event, RunStarted):
            self.first_start = self.first_start or event
        elif isinstance(event, RunCalled):
            self.called[event.data.step] = event
        elif isinstance(event, RunResumed):
            self.resumed[event.data.step] = (seq, event)
        elif isinstance(event, SteeringInjected):
            self.steering.append(event)
        else:
            self._add_step_marker(seq, event)

    def _add_step_marker(self, seq: int, event: Event) -> None:
        run_id = self.run_id
        if isinstance(event, GroupDispatched) and event.group_id:
            step = _step_from(event.group_id, f"{run_id}-g")
            if step is not None:
                self.groups[step] = event
        elif isinstance(event, RunAskedUser):
            step = _step_from(event.data.question_id, f"{run_id}-q")
            if step is not None:
                self.waits[step] = (seq, event)
        elif isinstance(event, RunWaiting):
            # Every wait names its step in its causation id (see wait_marker_id): a group
            # wait is a step of its own (collect_group_results), not the group's step.
            step = _step_from(event.causation_id or "", f"{run_id}-w")
            if step is not None:
                self.waits[step] = (seq, event)

    def open_wait(self) -> tuple[int, int, RunWaiting | RunAskedUser] | None:
        """The wait not answered yet, as (step, seq, event), if the run is parked."""
        for step in sorted(self.waits, reverse=True):
            if step not in self.resumed:
                seq, event = self.waits[step]
                return step, seq, event
        return None

    def tool_result(self, emit_index: int) -> ToolCallCompleted | None:
        """The recorded completion of the tool call whose start is emit ``emit_index``."""
        following = emit_index + 1
        if following < len(self.emits):
            event = self.emits[following]
            if isinstance(event, ToolCallCompleted):
                return event
        return None


def wait_marker_id(run_id: str, step: int) -> str:
    """The causation id a ``run.waiting`` of step ``step`` carries (see Journal)."""
    return f"{run_id}-w{step}"


async def load_journal(store: EventStore, session_id: str, run_id: str) -> Journal:
    """Read the run's ``.out`` events (its journal) from the log."""
    journal = Journal(run_id)
    subject = run_out_subject(session_id, run_id, store.settings.root)
    async for seq, item in store.on_subject(subject):
        if not isinstance(item, Undecodable):
            journal.add(seq, item)
    return journal


async def load_run(store: EventStore, session_id: str, run_id: str) -> tuple[Event | None, Journal]:
    """The run's terminal event (``None`` while it has not ended) and its journal, read
    in one pass over both of its subjects: a run that has written nothing yet, the
    usual case for a new command, costs one round trip."""
    journal = Journal(run_id)
    terminal: Event | None = None
    end = run_end_subject(session_id, run_id, store.settings.root)
    filter_ = run_subjects_filter(session_id, run_id, store.settings.root)
    async for record in store.stored_on_subject(filter_):
        if isinstance(record.item, Undecodable):
            continue
        if record.subject == end:
            terminal = terminal or record.item  # G2: the first is the only real one
        else:
            journal.add(record.seq, record.item)
    return terminal, journal


async def terminal_of(store: EventStore, session_id: str, run_id: str) -> Event | None:
    """The run's terminal event, if it has ended."""
    record = await store.last_on_subject(run_end_subject(session_id, run_id, store.settings.root))
    if record is None or isinstance(record[1], Undecodable):
        return None
    return record[1]


__all__ = [
    "REPLAYED_EMIT_TYPES",
    "Journal",
    "child_run_id",
    "group_id_of",
    "load_journal",
    "load_run",
    "member_run_id",
    "question_id_of",
    "terminal_of",
    "wait_marker_id",
]
