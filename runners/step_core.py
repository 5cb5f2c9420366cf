"""The core of durable orchestration steps (see :mod:`runners.orchestration`): step
numbering, child commands, and the wait every step that waits goes through.

:class:`StepsBase` records a wait (``run.waiting``), checks once whether its answer is
there, and either records the answer inline (``run.resumed``) or arms the step's timer
and raises :class:`RunSuspended`. :mod:`runners.group_steps` and
:mod:`runners.orchestration` build the handler-facing calls on it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventstore.catalog import (
    ChildOutcome,
    CommandAsk,
    CommandAskData,
    Content,
    ErrorInfo,
    GroupDispatched,
    ReplyTo,
    RunResumed,
    RunResumedData,
    RunWaiting,
    RunWaitingData,
    StepKind,
)
from eventstore.errors import ConcurrencyError
from runners.faults import fault_point
from runners.journal import Journal, wait_marker_id
from runners.timers import arm_step_timer, disarm

if TYPE_CHECKING:
    from runners.context import AgentContext


class RunSuspended(BaseException):
    """Raised out of a handler by a step whose answer is not there yet.

    A ``BaseException`` so that a handler's ``except Exception`` cannot swallow it.
    """


class OrchestrationError(Exception):
    """An orchestration call was used wrongly (unknown group id, bad strategy...)."""


TIMED_OUT = ErrorInfo(type="TimedOut", message="no result before the step's timeout")
"""The error of a child or group member a step stopped waiting for."""


class StepsBase:
    """The orchestration state of one execution of a run's handler."""

    def __init__(self, context: AgentContext, journal: Journal, driver_id: str) -> None:
        self._ctx = context
        self._journal = journal
        self._driver_id = driver_id
        """The command whose execution this is; recorded in ``run.resumed`` so that its
        redelivery after a crash continues the run and any other wake-up is stale."""
        self._next_step = 0
        self._groups: dict[str, GroupDispatched] = {
            group.group_id or "": group for group in journal.groups.values()
        }

    def _step(self) -> int:
        step, self._next_step = self._next_step, self._next_step + 1
        return step

    def _reply_to(self, step: int) -> ReplyTo:
        ctx = self._ctx
        return ReplyTo(
            run_id=ctx.run_id, session_id=ctx.session_id, agent_type=ctx.agent_type, step=step
        )

    async def _publish_child(
        self,
        child: str,
        agent_type: str,
        content: Content,
        *,
        metadata: dict[str, Any] | None,
        reply_to: ReplyTo | None,
        timeout: float | None,
        group_id: str | None = None,
    ) -> None:
        ctx = self._ctx
        envelope = ctx.envelope()
        await ctx.store.append(
            CommandAsk(
                id=f"ask-{child}",
                session_id=ctx.session_id,
                run_id=child,
                parent_run_id=ctx.run_id,
                root_run_id=envelope["root_run_id"],
                group_id=group_id,
                agent_type=agent_type,
                trace_id=ctx.trace_id,
                user_code=envelope["user_code"],
                causation_id=ctx.run_id,
                data=CommandAskData(
                    content=content,
                    wait_for_reply=reply_to is not None,
                    metadata=metadata or {},
                    reply_to=reply_to,
                    timeout_s=timeout,
                ),
            )
        )

    # -- waiting -----------------------------------------------------------------------

    async def _wait(
        self,
        step: int,
        kind: StepKind,
        waiting: RunWaitingData,
        answered: Callable[[], Any],
        timer_at: datetime | None = None,
        *,
        group_id: str | None = None,
    ) -> list[ChildOutcome]:
        ctx = self._ctx
        parked_before = step in self._journal.waits
        if not parked_before:
            fault_point("after_dispatch")
            await ctx.flush()
            await ctx._emit(
                RunWaiting(
                    id=f"{ctx.run_id}:waiting:{step}",
                    **{**ctx.envelope(), "causation_id": wait_marker_id(ctx.run_id, step)},
                    data=waiting,
                ),
                journaled=False,
            )
            fault_point("after_waiting")
        outcomes: list[ChildOutcome] | None = await answered()
        if outcomes is None:
            if timer_at is not None:
                # Armed on every pass that parks (idempotent): a crash before this line
                # leaves the command unacked, and its redelivery arms the timer.
                await arm_step_timer(ctx.store, ctx.envelope(), step, timer_at, group_id=group_id)
            raise RunSuspended
        # The answer is already there (a fast child): record it here, unless a resume
        # command records it first; then that resume continues the run, not this one.
        try:
            await ctx._emit(
                RunResumed(
                    id=f"{ctx.run_id}:resumed:{step}:{self._driver_id}",
                    **ctx.envelope(),
                    data=RunResumedData(
                        step=step, kind=kind, resume_event_id=self._driver_id, outcomes=outcomes
                    ),
                ),
                journaled=False,
                expect_last=True,
            )
        except ConcurrencyError:
            raise RunSuspended from None
        if timer_at is not None and parked_before:  # an earlier pass parked and armed it
            await disarm(ctx.store, ctx.session_id, ctx.run_id, f"w{step}")
        # The same boundary as a resume command's: the step's answer is recorded, the
        # command that carries the run is not yet acked.
        fault_point("after_resumed")
        return outcomes


__all__ = ["TIMED_OUT", "OrchestrationError", "RunSuspended", "StepsBase"]
