"""What a waiting run receives: child results and group outcomes (G5).

The log is the only source of truth: a child's result is its terminal event, read back by
direct get; a group is complete when its members' terminal events satisfy its strategy.
Both the worker that parks a run and the worker that handles a ``command.resume`` use
these functions, so they always agree on what a step's answer is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from eventstore.catalog import (
    ChildOutcome,
    ErrorInfo,
    GroupDispatched,
    RunCompleted,
    RunDeadLettered,
    RunFailed,
    parse_strategy,
)
from eventstore.envelope import Event
from eventstore.store import EventStore
from runners.journal import terminal_of


@dataclass(frozen=True, slots=True)
class AgentReply:
    """The result of ``call_agent(..., wait_for_reply=True)``: how the child ended."""

    run_id: str
    status: str
    """``completed``, ``failed``, ``cancelled``, ``dead_lettered`` or ``timed_out``."""
    content: Any = None
    data: Any = None
    error: ErrorInfo | None = None

    @property
    def is_success(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True, slots=True)
class MemberResult:
    """One group member's outcome, in member order (Gecko's Team result)."""

    member_index: int
    run_id: str
    result: AgentReply | None
    error: ErrorInfo | None

    @property
    def is_success(self) -> bool:
        return self.result is not None and self.result.is_success


def outcome_of(run_id: str, index: int, terminal: Event) -> ChildOutcome:
    """The outcome a parent sees for a child that ended with ``terminal``."""
    status = terminal.type.removeprefix("run.")
    if isinstance(terminal, RunCompleted):
        return ChildOutcome(
            run_id=run_id,
            index=index,
            status="completed",
            content=terminal.data.content,
            result=terminal.data.result,
        )
    error: ErrorInfo
    if isinstance(terminal, RunFailed):
        error = terminal.data.error
    elif isinstance(terminal, RunDeadLettered):
        error = terminal.data.last_error or ErrorInfo(type="DeadLettered", message="no attempt")
    else:
        error = ErrorInfo(type="Cancelled", message="the run was cancelled")
    return ChildOutcome(
        run_id=run_id,
        index=index,
        status=status if status in {"failed", "cancelled", "dead_lettered"} else "failed",
        error=error,
    )


def reply_of(outcome: ChildOutcome) -> AgentReply:
    return AgentReply(
        run_id=outcome.run_id,
        status=outcome.status,
        content=outcome.content,
        data=outcome.result,
        error=outcome.error,
    )


def member_results(outcomes: list[ChildOutcome]) -> list[MemberResult]:
    results = []
    for outcome in outcomes:
        reply = reply_of(outcome)
        results.append(
            MemberResult(
                member_index=outcome.index,
                run_id=outcome.run_id,
                result=reply if reply.is_success or outcome.status != "timed_out" else None,
                error=outcome.error,
            )
        )
    return results


async def child_outcome(
    store: EventStore, session_id: str, run_id: str, index: int = 0
) -> ChildOutcome | None:
    terminal = await terminal_of(store, session_id, run_id)
    return None if terminal is None else outcome_of(run_id, index, terminal)


@dataclass(frozen=True, slots=True)
class GroupState:
    """Where a group stands: each member's outcome so far and whether it is decided."""

    outcomes: list[ChildOutcome | None]
    complete: bool


def is_complete(strategy: str, outcomes: list[ChildOutcome | None]) -> bool:
    """Whether a group with these member outcomes has reached its outcome."""
    kind, quorum = parse_strategy(strategy)
    ended = [outcome for outcome in outcomes if outcome is not None]
    successes = sum(1 for outcome in ended if outcome.status == "completed")
    if len(ended) == len(outcomes):
        return True
    if kind == "all":
        return False
    needed = 1 if kind == "race" else (quorum or 1)
    if successes >= needed:
        return True
    # Not enough members left to reach the quorum: decided (as a failure).
    return successes + (len(outcomes) - len(ended)) < needed


_ENDED: dict[tuple[str, str], ChildOutcome] = {}
"""Terminal outcomes this process has read: a terminal event never changes, so a wake-up
only reads the members not known to have ended (a group of n costs O(n) reads per
worker, not O(n) per wake-up)."""
_ENDED_LIMIT = 100_000
_READ_CHUNK = 16


async def _known_outcome(
    store: EventStore, session_id: str, run_id: str, index: int
) -> ChildOutcome | None:
    key = (session_id, run_id)
    outcome = _ENDED.get(key)
    if outcome is None:
        outcome = await child_outcome(store, session_id, run_id, index)
        if outcome is not None:
            if len(_ENDED) >= _ENDED_LIMIT:
                _ENDED.clear()
            _ENDED[key] = outcome
    return outcome


async def group_state(store: EventStore, session_id: str, group: GroupDispatched) -> GroupState:
    """Read the members' terminal events, a chunk at a time in member order. For ``all``
    the first live member decides (not complete), so the rest is not read."""
    members = group.data.members
    outcomes: list[ChildOutcome | None] = [None] * len(members)
    wants_all = group.data.strategy == "all"
    for start in range(0, len(members), _READ_CHUNK):
        chunk = members[start : start + _READ_CHUNK]
        found = await asyncio.gather(
            *(_known_outcome(store, session_id, m.run_id, m.index) for m in chunk)
        )
        outcomes[start : start + len(chunk)] = found
        if wants_all and any(outcome is None for outcome in found):
            return GroupState(outcomes=outcomes, complete=False)
    return GroupState(outcomes=outcomes, complete=is_complete(group.data.strategy, outcomes))


def dispatch_limit(group: GroupDispatched, outcomes: list[ChildOutcome | None]) -> int:
    """How many members (a prefix) should have been dispatched, given ``max_concurrent``:
    each ended member frees a slot for the next one."""
    members = len(group.data.members)
    window = group.data.max_concurrent or members
    limit = min(members, window)
    while True:
        ended = sum(1 for outcome in outcomes[:limit] if outcome is not None)
        grown = min(members, window + ended)
        if grown == limit:
            return limit
        limit = grown


def final_outcomes(
    outcomes: list[ChildOutcome | None], run_ids: list[str], status: str = "cancelled"
) -> list[ChildOutcome]:
    """Every member's outcome; members still live are reported with ``status``."""
    final: list[ChildOutcome] = []
    for index, (run_id, known) in enumerate(zip(run_ids, outcomes, strict=True)):
        outcome = known
        if outcome is None:
            outcome = ChildOutcome(
                run_id=run_id,
                index=index,
                status=status,
                error=ErrorInfo(
                    type="TimedOut" if status == "timed_out" else "Cancelled",
                    message="the group finished without this member",
                ),
            )
        final.append(outcome)
    return final


__all__ = [
    "AgentReply",
    "GroupState",
    "MemberResult",
    "child_outcome",
    "dispatch_limit",
    "final_outcomes",
    "group_state",
    "is_complete",
    "member_results",
    "outcome_of",
    "reply_of",
]
