"""Orchestration demo workers (and the subjects of the G5 crash tests).

* ``planner`` (metadata ``mode``):
  - ``call``: streams "before|", calls ``call_target`` (default ``shard``) with its input
    and waits (at most ``call_timeout_s``), streams "after|", returns the child's status
    and content;
  - ``group``: fans out ``members`` (default 10) ``shard`` runs with ``strategy``
    (default ``all``), each member ``i`` getting ``"<input>#<i>"``; members whose index
    is in ``fail`` fail, those in ``slow`` sleep ``slow_s`` seconds; ``group_timeout_s``
    bounds the group; returns ``{"ok": [...contents or null], "statuses": [...],
    "error_types": [...], "errors": n}``;
  - ``ask``: asks the user ``"Proceed with <input>?"`` ``questions`` times (default 1;
    ``ask_timeout_s``, one number or one per question, bounds each wait) and returns
    ``"answer: <answers joined by ','>"``, ``-`` standing for a question that timed out;
  - ``tree``: calls ``middle`` (which fans out to 5 slow ``shard`` runs) and waits.
* ``shard``: echoes its input (``slow_s`` seconds of sleep first, failure on demand).
* ``middle``: dispatches 5 slow shards (``all``) and collects them.
"""

from __future__ import annotations

from typing import Any

from runners.context import AgentContext
from runners.orchestration import AskTimeout, GroupTask
from runners.worker import Command, GatewayWorker


class PlannerWorker(GatewayWorker):
    def get_agent_types(self) -> list[str]:
        return ["planner", "middle"]

    async def process_command(self, command: Command, context: AgentContext) -> Any:
        if command.agent_type == "middle":
            return await self._middle(command, context)
        mode = command.metadata.get("mode", "call")
        if mode == "call":
            await context.emit_chunk("before|")
            reply = await context.call_agent(
                str(command.metadata.get("call_target", "shard")),
                command.text,
                timeout=command.metadata.get("call_timeout_s"),
                metadata=command.metadata,
            )
            await context.emit_chunk("after|")
            return {"status": reply.status, "content": reply.content}
        if mode == "group":
            return await self._group(command, context)
        if mode == "ask":
            return await self._ask(command, context)
        if mode == "tree":
            reply = await context.call_agent("middle", command.text, metadata=command.metadata)
            return {"status": reply.status}
        raise ValueError(f"unknown mode {mode!r}")

    async def _ask(self, command: Command, context: AgentContext) -> Any:
        questions = int(command.metadata.get("questions", 1))
        timeouts = command.metadata.get("ask_timeout_s")
        if not isinstance(timeouts, list):
            timeouts = [timeouts] * questions
        answers = []
        for timeout in timeouts[:questions]:
            await context.emit_chunk("asking|")
            try:
                answer = await context.ask_user(f"Proceed with {command.text}?", timeout=timeout)
            except AskTimeout:
                await context.emit_chunk("timed out|")
                answers.append("-")
                continue
            await context.emit_chunk("answered|")
            answers.append(str(answer))
        return f"answer: {','.join(answers)}"

    async def _group(self, command: Command, context: AgentContext) -> Any:
        members = int(command.metadata.get("members", 10))
        fail = list(command.metadata.get("fail", []))
        slow = list(command.metadata.get("slow", []))
        slow_s = float(command.metadata.get("slow_s", 0.0))
        tasks = [
            GroupTask(
                "shard",
                metadata={"fail": index in fail, "slow_s": slow_s if index in slow else 0.0},
            )
            for index in range(members)
        ]
        await context.emit_chunk("fan-out|")
        group_id = await context.dispatch_group(
            tasks,
            strategy=str(command.metadata.get("strategy", "all")),
            timeout=command.metadata.get("group_timeout_s"),
            max_concurrent=command.metadata.get("max_concurrent"),
            input_mapper=lambda raw, index: f"{raw}#{index}",
            raw_input=command.text,
        )
        results = await context.collect_group_results(group_id)
        await context.emit_chunk("gathered|")
        return {
            "ok": [r.result.content if r.is_success and r.result else None for r in results],
            "statuses": [r.result.status if r.result else "none" for r in results],
            "error_types": [r.error.type if r.error else None for r in results],
            "errors": sum(1 for r in results if not r.is_success),
        }

    async def _middle(self, command: Command, context: AgentContext) -> Any:
        slow_s = float(command.metadata.get("slow_s", 30.0))
        tasks = [GroupTask("shard", f"{command.text}/{i}", {"slow_s": slow_s}) for i in range(5)]
        group_id = await context.dispatch_group(tasks, strategy="all")
        results = await context.collect_group_results(group_id)
        return [r.is_success for r in results]


class ShardWorker(GatewayWorker):
    def get_agent_types(self) -> list[str]:
        return ["shard"]

    async def process_command(self, command: Command, context: AgentContext) -> Any:
        slow_s = float(command.metadata.get("slow_s", 0.0))
        if slow_s:
            await context.wait_cancelled(slow_s)  # a graceful cancel ends the sleep
        if command.metadata.get("fail"):
            raise RuntimeError(f"shard {command.text} failed on purpose")
        await context.emit_chunk(command.text)
        return command.text
