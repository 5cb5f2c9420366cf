"""Orchestration demo workers (and the subjects of the G5 crash tests).

* ``planner`` (metadata ``mode``):
  - ``call``: streams "before|", calls ``shard`` with its input and waits, streams
    "after|", returns the child's content;
  - ``group``: fans out ``members`` (default 10) ``shard`` runs with ``strategy``
    (default ``all``), each member ``i`` getting ``"<input>#<i>"``; members whose index
    is in ``fail`` fail, those in ``slow`` sleep ``slow_s`` seconds; returns
    ``{"ok": [...contents or null], "errors": n}``;
  - ``ask``: asks the user ``"Proceed with <input>?"`` and returns ``"answer: <answer>"``;
  - ``tree``: calls ``middle`` (which fans out to 5 slow ``shard`` runs) and waits.
* ``shard``: echoes its input (``slow_s`` seconds of sleep first, failure on demand).
* ``middle``: dispatches 5 slow shards (``all``) and collects them.
"""

from __future__ import annotations

from typing import Any

from runners.context import AgentContext
from runners.orchestration import GroupTask
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
            reply = await context.call_agent("shard", command.text, metadata=command.metadata)
            await context.emit_chunk("after|")
            return {"status": reply.status, "content": reply.content}
        if mode == "group":
            return await self._group(command, context)
        if mode == "ask":
            await context.emit_chunk("asking|")
            answer = await context.ask_user(f"Proceed with {command.text}?")
            await context.emit_chunk("answered|")
            return f"answer: {answer}"
        if mode == "tree":
            reply = await context.call_agent("middle", command.text, metadata=command.metadata)
            return {"status": reply.status}
        raise ValueError(f"unknown mode {mode!r}")

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
            max_concurrent=command.metadata.get("max_concurrent"),
            input_mapper=lambda raw, index: f"{raw}#{index}",
            raw_input=command.text,
        )
        results = await context.collect_group_results(group_id)
        await context.emit_chunk("gathered|")
        return {
            "ok": [r.result.content if r.is_success and r.result else None for r in results],
            "statuses": [r.result.status if r.result else "none" for r in results],
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
