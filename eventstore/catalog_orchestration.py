"""Orchestration journal entries (G5): what a run records about its own steps.

A run that calls another agent, fans out or asks a human is re-invoked from the top
after each wait, and replays its journal (its own events). Two entries make that replay
exact, besides ``run.waiting`` / ``run.asked_user`` / ``group.dispatched``:

* ``run.called`` is written *before* a child command is published (write-ahead), so a
  crash between the two never loses track of a child: replay publishes the same child
  (same deterministic run id) again, and a cancel can always find the whole subtree.
* ``run.resumed`` records the answer to step ``step`` (a child's result, a group's member
  results, a human's reply). It is appended with an expected last subject sequence, so
  of two wake-ups racing for the same step exactly one is recorded.

Re-exported by :mod:`eventstore.catalog`; import them from there.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue

from eventstore.catalog_common import Content, ErrorInfo, IdStr
from eventstore.envelope import Payload, RunEvent

StepKind = Literal["call", "group", "ask_user", "timeout"]
OutcomeStatus = Literal["completed", "failed", "cancelled", "dead_lettered", "timed_out"]


class RunCalledData(Payload):
    """Step ``step`` of the run dispatches ``child_run_id`` to ``target_agent_type``."""

    step: Annotated[int, Field(ge=0)]
    child_run_id: IdStr
    target_agent_type: IdStr
    wait_for_reply: bool = True
    timeout_s: Annotated[float, Field(gt=0)] | None = None


class RunCalled(RunEvent):
    type: Literal["run.called"] = "run.called"
    data: RunCalledData


class ChildOutcome(Payload):
    """How one child run (or group member) ended, as its waiting parent sees it."""

    run_id: IdStr
    index: Annotated[int, Field(ge=0)] = 0
    status: OutcomeStatus
    content: Content | None = None
    result: JsonValue = None
    error: ErrorInfo | None = None


class RunResumedData(Payload):
    """The wait of step ``step`` is over; ``resume_event_id`` is the ``command.resume``
    that recorded it (a redelivery of that same command continues the run, any other
    resume for the step is stale)."""

    step: Annotated[int, Field(ge=0)]
    kind: StepKind
    resume_event_id: IdStr
    question_id: IdStr | None = None
    answer: JsonValue = None
    content: Content | None = None
    outcomes: list[ChildOutcome] = Field(default_factory=list)


class RunResumed(RunEvent):
    type: Literal["run.resumed"] = "run.resumed"
    data: RunResumedData


__all__ = [
    "ChildOutcome",
    "OutcomeStatus",
    "RunCalled",
    "RunCalledData",
    "RunResumed",
    "RunResumedData",
    "StepKind",
]
