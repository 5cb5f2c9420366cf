"""Handling ``command.resume`` (G5): does it answer the step the run waits in?

A resume is *stale* when the run is not waiting, waits for something else, or the answer
is not complete yet (a group still missing members): it is acknowledged and changes
nothing. Otherwise the answer is recorded as ``run.resumed`` with the run's last
``.out`` sequence as the expected one, so of two wake-ups racing for one step exactly
one is recorded, and that one's worker re-invokes the handler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from eventstore.catalog import (
    ChildOutcome,
    CommandResume,
    GroupDispatched,
    RunAskedUser,
    RunResumed,
    RunResumedData,
    RunWaiting,
    StepKind,
)
from eventstore.errors import ConcurrencyError
from runners.context import AgentContext
from runners.journal import Journal
from runners.outcomes import child_outcome
from runners.timers import disarm, timer_step

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    step: int
    kind: StepKind
    data: RunResumedData


def driver_of(journal: Journal, ask_id: str) -> str:
    """The id of the command whose execution currently drives the run: the resume that
    recorded the latest ``run.resumed``, or the run's ask before any resume."""
    if not journal.resumed:
        return ask_id
    _seq, latest = journal.resumed[max(journal.resumed)]
    return latest.data.resume_event_id


async def answer_for(
    context: AgentContext, journal: Journal, resume: CommandResume
) -> Answer | None:
    """The answer ``resume`` gives to the run's open wait, or ``None`` if it is stale."""
    open_wait = journal.open_wait()
    if open_wait is None:
        log.info("resume %s: run %s is not waiting; ignored", resume.id, journal.run_id)
        return None
    step, _seq, waiting = open_wait
    data = resume.data
    if data.reason == "timeout":
        return await _timeout_answer(context, journal, resume, step, waiting)
    if isinstance(waiting, RunAskedUser):
        if data.reason != "user_reply" or data.question_id != waiting.data.question_id:
            log.info("resume %s does not answer question %s", resume.id, waiting.data.question_id)
            return None
        return Answer(
            step,
            "ask_user",
            RunResumedData(
                step=step,
                kind="ask_user",
                resume_event_id=resume.id,
                question_id=data.question_id,
                answer=data.answer,
                content=data.content,
            ),
        )
    outcomes: list[ChildOutcome] | None
    kind: StepKind
    if waiting.data.on == "child":
        kind = "call"
        found = await child_outcome(
            context.store, context.session_id, waiting.data.child_run_ids[0]
        )
        outcomes = None if found is None else [found]
    else:
        kind = "group"
        group = _group(journal, waiting.data.group_id or "")
        if group is None:
            log.error("run %s waits on unknown group %s", journal.run_id, waiting.data.group_id)
            return None
        group_step = int((group.group_id or "").rsplit("-g", 1)[1])
        outcomes = await context._steps.group_answer(group, group_step)
    if outcomes is None:
        return None
    return Answer(
        step,
        kind,
        RunResumedData(step=step, kind=kind, resume_event_id=resume.id, outcomes=outcomes),
    )


async def _timeout_answer(
    context: AgentContext,
    journal: Journal,
    resume: CommandResume,
    step: int,
    waiting: RunWaiting | RunAskedUser,
) -> Answer | None:
    """What a step timer answers: nothing unless it times out the open step. A child
    or member that ended before the timer keeps its result; the others are cancelled
    and reported ``timed_out``; a question gets no answer (``AskTimeout``)."""
    if timer_step(resume) != step:
        log.info("timer %s: run %s no longer waits in that step", resume.id, journal.run_id)
        return None
    if isinstance(waiting, RunAskedUser):
        question = waiting.data.question_id
        return Answer(step, "timeout", _timed_out(step, resume, question_id=question))
    steps = context._steps
    kind: StepKind
    if waiting.data.on == "child":
        kind = "call"
        outcomes = [await steps.stop_child(waiting.data.child_run_ids[0])]
    else:
        kind = "group"
        group = _group(journal, waiting.data.group_id or "")
        if group is None:
            log.error("run %s waits on unknown group %s", journal.run_id, waiting.data.group_id)
            return None
        outcomes = await steps.group_timed_out(group)
    if any(outcome.status == "timed_out" for outcome in outcomes):
        kind = "timeout"
    # else everything had ended by the time the timer fired: an ordinary answer.
    return Answer(step, kind, _timed_out(step, resume, outcomes, kind=kind))


def _timed_out(
    step: int,
    resume: CommandResume,
    outcomes: list[ChildOutcome] | None = None,
    *,
    question_id: str | None = None,
    kind: StepKind = "timeout",
) -> RunResumedData:
    return RunResumedData(
        step=step,
        kind=kind,
        resume_event_id=resume.id,
        question_id=question_id,
        outcomes=outcomes or [],
    )


def _group(journal: Journal, group_id: str) -> GroupDispatched | None:
    for group in journal.groups.values():
        if group.group_id == group_id:
            return group
    return None


async def record_answer(context: AgentContext, journal: Journal, answer: Answer) -> bool:
    """Record ``answer`` unless another wake-up recorded this step first."""
    event = RunResumed(
        id=f"{journal.run_id}:resumed:{answer.step}:{answer.data.resume_event_id}",
        **context.envelope(),
        data=answer.data,
    )
    try:
        result = await context.store.append(event, expected_last_subject_seq=journal.last_seq)
    except ConcurrencyError:
        log.info("step %d of run %s was resumed by another wake-up", answer.step, journal.run_id)
        return False
    if result.seq is not None:
        journal.add(result.seq, event)
    waited = journal.waits.get(answer.step)
    if answer.kind != "timeout" and waited is not None and waited[1].data.timeout_s:
        # Answered in time: the step's timer would only fire into a stale resume.
        await disarm(context.store, context.session_id, journal.run_id, f"w{answer.step}")
    return True


__all__ = ["Answer", "answer_for", "driver_of", "record_answer"]
