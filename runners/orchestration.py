"""Durable orchestration steps (G5): ``call_agent``, groups and ``ask_user``.

Each call is a numbered step. Its first execution records the step (write-ahead:
``run.called`` / ``group.dispatched`` before any child command is published), records
the wait (``run.waiting`` / ``run.asked_user``), checks once whether the answer is already
there, and otherwise raises :class:`RunSuspended`: the runtime acks the command and frees
the slot, and nothing of the run stays in memory. A ``command.resume`` later records the
answer as ``run.resumed`` and re-invokes the handler from the top; each earlier step then
returns its recorded answer without dispatching again.

Rule for handler authors (as with Temporal or Restate): make orchestration calls in the
same order on every invocation (derive them from the command and earlier results, not
from clocks, random numbers or outside state), and make side effects outside the context
idempotent; everything done through the context is replayed exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from eventstore.catalog import (
    ChildOutcome,
    CommandAsk,
    CommandAskData,
    Content,
    ErrorInfo,
    GroupDispatched,
    GroupDispatchedData,
    GroupMember,
    ReplyTo,
    RunAskedUser,
    RunAskedUserData,
    RunCalled,
    RunCalledData,
    RunResumed,
    RunResumedData,
    RunWaiting,
    RunWaitingData,
    StepKind,
    parse_strategy,
)
from eventstore.errors import ConcurrencyError
from runners.cancel import cancel_tree
from runners.faults import fault_point
from runners.journal import (
    Journal,
    child_run_id,
    group_id_of,
    member_run_id,
    question_id_of,
    wait_marker_id,
)
from runners.outcomes import (
    AgentReply,
    MemberResult,
    child_outcome,
    dispatch_limit,
    final_outcomes,
    group_state,
    member_results,
    reply_of,
)
from runners.timers import arm_step_timer, disarm

if TYPE_CHECKING:
    from runners.context import AgentContext


PUBLISH_WINDOW = 64
"""Child commands of a group in flight at once."""


class RunSuspended(BaseException):
    """Raised out of a handler by a step whose answer is not there yet.

    A ``BaseException`` so that a handler's ``except Exception`` cannot swallow it.
    """


class OrchestrationError(Exception):
    """An orchestration call was used wrongly (unknown group id, bad strategy...)."""


class AskTimeout(TimeoutError):
    """Raised by ``ask_user(..., timeout=s)`` when no answer came within ``s`` seconds
    (measured from the question's ``run.asked_user``). A reply sent later is refused.
    Like every step's answer it is journaled: a re-invoked handler gets it again."""

    def __init__(self, question_id: str, timeout: float | None) -> None:
        super().__init__(f"question {question_id} got no answer within {timeout}s")
        self.question_id = question_id
        self.timeout = timeout


TIMED_OUT = ErrorInfo(type="TimedOut", message="no result before the step's timeout")
"""The error of a child or group member a step stopped waiting for."""


@dataclass(frozen=True, slots=True)
class CalledAgent:
    """What ``call_agent(..., wait_for_reply=False)`` returns: the child's ids."""

    run_id: str
    session_id: str
    agent_type: str


@dataclass(frozen=True, slots=True)
class GroupTask:
    """One member of a group: which agent type, with what input."""

    agent_type: str
    content: Content = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class Steps:
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

    # -- call_agent --------------------------------------------------------------------

    async def call_agent(
        self,
        target_agent_type: str,
        content: Content,
        *,
        wait_for_reply: bool = True,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentReply | CalledAgent:
        step = self._step()
        ctx = self._ctx
        child = child_run_id(ctx.run_id, step)
        if step in self._journal.resumed:
            answer = self._journal.resumed[step][1].data
            reply = reply_of(answer.outcomes[0])
            if answer.resume_event_id == self._driver_id:
                # The answer this execution was woken with: new to the handler (earlier
                # answers were reported by the executions that received them).
                await ctx._call_hook("on_call_agent_complete", target_agent_type, reply)
            return reply
        called = self._journal.called.get(step)
        first_time = called is None
        if called is None:
            fault_point("before_dispatch")
            # Only for a call not in the journal yet: a replay never repeats the hook (a
            # crash between it and run.called can, as for every hook: at least once).
            await ctx._call_hook("on_call_agent_start", target_agent_type, content)
            called = RunCalled(
                id=f"{ctx.run_id}:called:{step}",
                **ctx.envelope(),
                data=RunCalledData(
                    step=step,
                    child_run_id=child,
                    target_agent_type=target_agent_type,
                    wait_for_reply=wait_for_reply,
                    timeout_s=timeout,
                ),
            )
            await ctx._emit(called, journaled=False)
        reply_to = self._reply_to(step) if wait_for_reply else None
        await self._publish_child(
            child,
            target_agent_type,
            content,
            metadata=metadata,
            reply_to=reply_to,
            timeout=timeout,
        )
        if not wait_for_reply:
            handle = CalledAgent(
                run_id=child, session_id=ctx.session_id, agent_type=target_agent_type
            )
            if first_time:
                await ctx._call_hook("on_call_agent_complete", target_agent_type, handle)
            return handle
        waiting = RunWaitingData(on="child", child_run_ids=[child], timeout_s=timeout)

        async def answered() -> list[ChildOutcome] | None:
            outcome = await child_outcome(ctx.store, ctx.session_id, child)
            return None if outcome is None else [outcome]

        timeout_s = called.data.timeout_s
        at = None if timeout_s is None else called.time + timedelta(seconds=timeout_s)
        outcomes = await self._wait(step, "call", waiting, answered, at)
        reply = reply_of(outcomes[0])
        await ctx._call_hook("on_call_agent_complete", target_agent_type, reply)
        return reply

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

    # -- groups ------------------------------------------------------------------------

    async def dispatch_group(
        self,
        tasks: Sequence[GroupTask],
        strategy: str = "all",
        *,
        timeout: float | None = None,
        max_concurrent: int | None = None,
        input_mapper: Callable[[Any, int], Content] | None = None,
        raw_input: Any = None,
    ) -> str:
        """Fan out to ``tasks`` (members in this order) and return the group id at once;
        :meth:`collect_group_results` waits for the outcome. ``input_mapper(raw_input,
        index)`` gives member ``index`` its input (sharding one input over the members)."""
        if not tasks:
            raise OrchestrationError("dispatch_group needs at least one task")
        try:
            parse_strategy(strategy)
        except ValueError as exc:
            raise OrchestrationError(str(exc)) from exc
        step = self._step()
        ctx = self._ctx
        group_id = group_id_of(ctx.run_id, step)
        group = self._journal.groups.get(step)
        if group is None:
            fault_point("before_dispatch")
            group = self._new_group(
                group_id,
                step,
                tasks,
                strategy=strategy,
                timeout=timeout,
                max_concurrent=max_concurrent,
                input_mapper=input_mapper,
                raw_input=raw_input,
            )
            await ctx._emit(group, journaled=False)
        self._groups[group_id] = group
        await self._top_up(group, step, [None] * len(group.data.members))
        return group_id

    def _new_group(
        self,
        group_id: str,
        step: int,
        tasks: Sequence[GroupTask],
        *,
        strategy: str,
        timeout: float | None,
        max_concurrent: int | None,
        input_mapper: Callable[[Any, int], Content] | None,
        raw_input: Any,
    ) -> GroupDispatched:
        ctx = self._ctx
        members = [
            GroupMember(
                index=index,
                run_id=member_run_id(group_id, index),
                agent_type=task.agent_type,
                content=input_mapper(raw_input, index) if input_mapper else task.content,
                metadata=task.metadata,
            )
            for index, task in enumerate(tasks)
        ]
        try:
            data = GroupDispatchedData(
                strategy=strategy, members=members, timeout_s=timeout, max_concurrent=max_concurrent
            )
        except ValueError as exc:  # pydantic: e.g. a quorum larger than the group
            raise OrchestrationError(str(exc)) from exc
        return GroupDispatched(
            id=f"{ctx.run_id}:group:{step}", **{**ctx.envelope(), "group_id": group_id}, data=data
        )

    async def _top_up(
        self, group: GroupDispatched, step: int, outcomes: list[ChildOutcome | None]
    ) -> None:
        """Publish the members ``max_concurrent`` allows now (publishing is idempotent:
        a member's command id is derived from its run id)."""
        limit = dispatch_limit(group, outcomes)
        reply_to = self._reply_to(step)
        gate = asyncio.Semaphore(PUBLISH_WINDOW)

        async def publish(member: GroupMember) -> None:
            async with gate:
                await self._publish_child(
                    member.run_id,
                    member.agent_type,
                    member.content,
                    metadata=member.metadata,
                    reply_to=reply_to,
                    timeout=None,
                    group_id=group.group_id,
                )

        await asyncio.gather(
            *(
                publish(member)
                for member, outcome in zip(group.data.members[:limit], outcomes, strict=False)
                if outcome is None
            )
        )

    async def collect_group_results(self, group_id: str) -> list[MemberResult]:
        """Every member's result in member order, once the group reached its outcome;
        members still live then (race / quorum losers) are cancelled."""
        step = self._step()
        group = self._groups.get(group_id)
        if group is None:
            raise OrchestrationError(f"no group {group_id!r} was dispatched by this run")
        if step in self._journal.resumed:
            return member_results(self._journal.resumed[step][1].data.outcomes)
        waiting = RunWaitingData(on="group", group_id=group_id, timeout_s=group.data.timeout_s)
        group_step = int(group_id.rsplit("-g", 1)[1])

        async def answered() -> list[ChildOutcome] | None:
            return await self.group_answer(group, group_step)

        timeout_s = group.data.timeout_s
        # Measured from the dispatch, not from this call: work done in between counts.
        at = None if timeout_s is None else group.time + timedelta(seconds=timeout_s)
        outcomes = await self._wait(step, "group", waiting, answered, at, group_id=group_id)
        return member_results(outcomes)

    async def group_answer(self, group: GroupDispatched, step: int) -> list[ChildOutcome] | None:
        """The group's final outcomes if it is decided (cancelling its live members),
        else ``None`` after publishing the members ``max_concurrent`` now allows."""
        ctx = self._ctx
        state = await group_state(ctx.store, ctx.session_id, group)
        if not state.complete:
            if group.data.max_concurrent is not None:
                # Without a bound every member was published at dispatch (and a replay of
                # dispatch_group publishes again), so only a bounded group has more to send.
                await self._top_up(group, step, state.outcomes)
            return None
        members = group.data.members
        for member, outcome in zip(members, state.outcomes, strict=True):
            if outcome is None:
                await cancel_tree(
                    ctx.store,
                    ctx.session_id,
                    member.run_id,
                    reason=f"group {group.group_id} reached its outcome",
                    requested_by=ctx.run_id,
                )
        return final_outcomes(state.outcomes, [m.run_id for m in members])

    async def group_timed_out(self, group: GroupDispatched) -> list[ChildOutcome]:
        """The group's outcomes when its timeout fired: members that ended keep their
        result, the rest are cancelled and reported ``timed_out``."""
        ctx = self._ctx
        state = await group_state(ctx.store, ctx.session_id, group)
        if state.complete:
            decided = await self.group_answer(group, 0)
            if decided is not None:
                return decided
        final: list[ChildOutcome] = []
        for member, outcome in zip(group.data.members, state.outcomes, strict=True):
            # group_state stops reading an "all" group at its first live member, so a
            # member it reports as live may have ended: stop_child reads it back then.
            final.append(outcome or await self.stop_child(member.run_id, member.index))
        return final

    async def stop_child(self, run_id: str, index: int = 0) -> ChildOutcome:
        """Cancel a child this run no longer waits for; its outcome as the run sees it
        (``timed_out``, unless it ended on its own in the meantime)."""
        ctx = self._ctx
        report = await cancel_tree(
            ctx.store,
            ctx.session_id,
            run_id,
            reason=f"run {ctx.run_id} stopped waiting (timeout)",
            requested_by=ctx.run_id,
        )
        if run_id not in report.cancelled:
            ended = await child_outcome(ctx.store, ctx.session_id, run_id, index)
            if ended is not None:
                return ended
        return ChildOutcome(run_id=run_id, index=index, status="timed_out", error=TIMED_OUT)

    # -- ask_user ----------------------------------------------------------------------

    async def ask_user(
        self, prompt: str, schema: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Ask a human; returns the answer (structured ``answer``, else the text)."""
        step = self._step()
        ctx = self._ctx
        if step in self._journal.resumed:
            data = self._journal.resumed[step][1].data
            if data.kind == "timeout":
                raise AskTimeout(data.question_id or question_id_of(ctx.run_id, step), timeout)
            return data.answer if data.answer is not None else data.content
        recorded = self._journal.waits.get(step)
        asked = recorded[1] if recorded is not None else None
        if not isinstance(asked, RunAskedUser):
            await ctx.flush()
            asked = RunAskedUser(
                id=f"{ctx.run_id}:asked:{step}",
                **ctx.envelope(),
                data=RunAskedUserData(
                    question_id=question_id_of(ctx.run_id, step),
                    prompt=prompt,
                    answer_schema=schema,
                    timeout_s=timeout,
                ),
            )
            await ctx._emit(asked, journaled=False)
        timeout_s = asked.data.timeout_s
        if timeout_s is not None:
            at = asked.time + timedelta(seconds=timeout_s)
            await arm_step_timer(ctx.store, ctx.envelope(), step, at)
        raise RunSuspended

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


__all__ = [
    "TIMED_OUT",
    "AskTimeout",
    "CalledAgent",
    "GroupTask",
    "OrchestrationError",
    "RunSuspended",
    "Steps",
]
