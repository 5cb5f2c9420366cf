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

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from eventstore.catalog import (
    ChildOutcome,
    Content,
    RunAskedUser,
    RunAskedUserData,
    RunCalled,
    RunCalledData,
    RunWaitingData,
)
from runners.faults import fault_point
from runners.group_steps import GroupSteps, GroupTask
from runners.journal import child_run_id, question_id_of
from runners.outcomes import AgentReply, child_outcome, reply_of
from runners.step_core import TIMED_OUT, OrchestrationError, RunSuspended
from runners.timers import arm_step_timer


class AskTimeout(TimeoutError):
    """Raised by ``ask_user(..., timeout=s)`` when no answer came within ``s`` seconds
    (measured from the question's ``run.asked_user``). A reply sent later is refused.
    Like every step's answer it is journaled: a re-invoked handler gets it again."""

    def __init__(self, question_id: str, timeout: float | None) -> None:
        super().__init__(f"question {question_id} got no answer within {timeout}s")
        self.question_id = question_id
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class CalledAgent:
    """What ``call_agent(..., wait_for_reply=False)`` returns: the child's ids."""

    run_id: str
    session_id: str
    agent_type: str


class Steps(GroupSteps):
    """The orchestration calls of one execution of a run's handler."""

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


__all__ = [
    "TIMED_OUT",
    "AskTimeout",
    "CalledAgent",
    "GroupTask",
    "OrchestrationError",
    "RunSuspended",
    "Steps",
]
