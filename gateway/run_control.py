"""Acting on a live run from the client side: answer its question, cancel it (G5, G6).

The log says where a run stands: its ``.out`` subject ends with ``run.asked_user`` while
it waits for a human, and its ``.end`` subject holds its terminal event once it is over.
Both are read by direct get on ``jl.data.*.<run_id>.(out|end)``, so only the run id is
needed, and a refusal ("not waiting", "already answered", "finished") changes nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from pydantic import JsonValue

from eventstore.catalog import (
    CommandAsk,
    CommandResume,
    CommandResumeData,
    RunAskedUser,
    RunResumed,
)
from eventstore.catalog_common import Content
from eventstore.codec import Undecodable
from eventstore.envelope import Event
from eventstore.routing import TERMINAL_TYPES
from eventstore.store import EventStore
from eventstore.subjects import ctrl_filter, encode_token, session_filter
from gateway.errors import RunNotFoundError, RunNotWaitingError


@dataclass(frozen=True, slots=True)
class RunLocation:
    """What the log says about a run right now."""

    run_id: str
    session_id: str
    agent_type: str | None
    last_output: Event | None
    terminal: Event | None


@dataclass(frozen=True, slots=True)
class SentCommand:
    """A command the client stored: the run it concerns and the command's position."""

    run_id: str
    session_id: str
    event_id: str
    seq: int


async def _last(store: EventStore, subject: str) -> Event | None:
    record = await store.last_on_subject(subject)
    if record is None or isinstance(record[1], Undecodable):
        return None
    return record[1]


async def locate_run(store: EventStore, run_id: str) -> RunLocation:
    """Where ``run_id`` stands; raises :class:`RunNotFoundError` if it never emitted."""
    prefix = f"{store.settings.root}.data.*.{encode_token(run_id)}"
    last_output = await _last(store, f"{prefix}.out")
    terminal = await _last(store, f"{prefix}.end")
    known = terminal or last_output
    if known is None or known.session_id is None:
        raise RunNotFoundError(f"run {run_id!r} has no events in the log (unknown or queued)")
    return RunLocation(
        run_id=run_id,
        session_id=known.session_id,
        agent_type=known.agent_type,
        last_output=last_output,
        terminal=terminal,
    )


def resume_for_reply(
    location: RunLocation,
    answer: JsonValue,
    content: Content | None,
    user_code: str | None,
) -> CommandResume:
    """The ``command.resume`` answering the run's open question, or
    :class:`RunNotWaitingError` saying why there is none."""
    run_id = location.run_id
    if location.terminal is not None:
        status = location.terminal.type.removeprefix("run.")
        raise RunNotWaitingError(f"run {run_id!r} has ended ({status}); it takes no reply")
    question = location.last_output
    if isinstance(question, RunResumed) and question.data.kind == "timeout":
        timed_out = question.data.question_id
        if timed_out is not None:
            raise RunNotWaitingError(f"run {run_id!r}: question {timed_out!r} timed out")
    if not isinstance(question, RunAskedUser):
        doing = "nothing yet" if question is None else question.type
        raise RunNotWaitingError(
            f"run {run_id!r} is not waiting for a reply (its latest step is {doing})"
        )
    question_id = question.data.question_id
    return CommandResume(
        # One reply per question: a second one has the same id and is refused below.
        id=f"reply-{run_id}-{question_id}",
        session_id=location.session_id,
        run_id=run_id,
        agent_type=question.agent_type,
        user_code=user_code,
        causation_id=question.id,
        data=CommandResumeData(
            reason="user_reply", question_id=question_id, answer=answer, content=content
        ),
    )


async def live_runs(
    store: EventStore, session_id: str, *, include_queued: bool = False
) -> list[RunLocation]:
    """Runs of ``session_id`` that have started and not ended, in order of first event;
    with ``include_queued``, also runs whose ``command.ask`` waits for a worker.

    Started runs are found on the session's ``data`` subjects. A queued run has written
    nothing there, and command subjects do not name sessions, so finding queued runs
    reads every command in the log (``<root>.ctrl.>``), one pass, in bulk: cheap next to
    the log's output events, but it grows with the number of commands kept."""
    seen: dict[str, str | None] = {}
    ended: set[str] = set()
    if include_queued:
        await _asked_runs(store, session_id, seen)
    records = store.records(1, subject_filter=session_filter(session_id, store.settings.root))
    async with contextlib.aclosing(records):
        async for record in records:
            event = record.item
            if isinstance(event, Undecodable) or event.run_id is None:
                continue
            seen.setdefault(event.run_id, event.agent_type)
            if event.type in TERMINAL_TYPES:
                ended.add(event.run_id)
    return [
        RunLocation(run_id, session_id, agent_type, None, None)
        for run_id, agent_type in seen.items()
        if run_id not in ended
    ]


async def _asked_runs(store: EventStore, session_id: str, seen: dict[str, str | None]) -> None:
    """Add every run a ``command.ask`` of ``session_id`` asked for (started or not)."""
    records = store.records(1, subject_filter=ctrl_filter(store.settings.root))
    async with contextlib.aclosing(records):
        async for record in records:
            event = record.item
            if isinstance(event, CommandAsk) and event.session_id == session_id:
                # A foreign publisher may omit run_id; workers derive it the same way.
                seen.setdefault(event.run_id or f"run-{event.id}", event.agent_type)


__all__ = [
    "RunLocation",
    "RunNotFoundError",
    "RunNotWaitingError",
    "SentCommand",
    "live_runs",
    "locate_run",
    "resume_for_reply",
]
