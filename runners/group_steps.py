"""Groups (Gecko's Team ALL / RACE / QUORUM, issue 4): ``dispatch_group`` and
``collect_group_results`` as durable steps (see :mod:`runners.orchestration`).

``group.dispatched`` is written before any member command is published; members are
published again (idempotently) on every pass, at most ``max_concurrent`` live at once.
When the group reaches its outcome, members still live (race and quorum losers) are
cancelled; when its timeout fires, members that ended keep their result and the rest are
cancelled and reported ``timed_out``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from eventstore.catalog import (
    ChildOutcome,
    Content,
    GroupDispatched,
    GroupDispatchedData,
    GroupMember,
    RunWaitingData,
    parse_strategy,
)
from runners.cancel import cancel_tree
from runners.faults import fault_point
from runners.journal import group_id_of, member_run_id
from runners.outcomes import (
    MemberResult,
    child_outcome,
    dispatch_limit,
    final_outcomes,
    group_state,
    member_results,
)
from runners.step_core import TIMED_OUT, OrchestrationError, StepsBase

PUBLISH_WINDOW = 64
"""Child commands of a group in flight at once."""


@dataclass(frozen=True, slots=True)
class GroupTask:
    """One member of a group: which agent type, with what input."""

    agent_type: str
    content: Content = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class GroupSteps(StepsBase):
    """The group calls of :class:`runners.orchestration.Steps`."""

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


__all__ = ["PUBLISH_WINDOW", "GroupSteps", "GroupTask"]
