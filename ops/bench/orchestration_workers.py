"""The jetledger workers of ``orchestration.py`` (a fan-out benchmark, not a demo).

* ``bench_fanout`` (:class:`FanOutWorker`): dispatches ``members`` (metadata, default 100)
  ``bench_leaf`` runs as one group with ``strategy="all"``, member ``i`` getting
  ``"<input>#<i>"``, collects them and returns how many results it received, how many
  succeeded and how many distinct member contents came back.
* ``bench_leaf`` (:class:`LeafWorker`): returns its input (no chunks), at once or after
  sleeping ``delay`` seconds (metadata, passed down by the parent), so the benchmark
  measures orchestration, not work.

by-framework's side (``byframework_group_side.py``) runs the same two handlers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runners.context import AgentContext
from runners.orchestration import GroupTask
from runners.worker import Command, GatewayWorker, Reply

FANOUT_AGENT = "bench_fanout"
LEAF_AGENT = "bench_leaf"
DEFAULT_MEMBERS = 100


class FanOutWorker(GatewayWorker):
    def get_agent_types(self) -> list[str]:
        return [FANOUT_AGENT]

    async def process_command(self, command: Command, context: AgentContext) -> Any:
        members = int(command.metadata.get("members", DEFAULT_MEMBERS))
        delay = float(command.metadata.get("delay", 0.0))
        group_id = await context.dispatch_group(
            [GroupTask(LEAF_AGENT, metadata={"delay": delay}) for _ in range(members)],
            strategy="all",
            input_mapper=lambda raw, index: f"{raw}#{index}",
            raw_input=command.text,
        )
        results = await context.collect_group_results(group_id)
        contents = {r.result.content for r in results if r.is_success and r.result is not None}
        summary = {
            "received": len(results),
            "successes": sum(1 for r in results if r.is_success),
            "distinct": len(contents),
        }
        return Reply(content=f"gathered {summary['distinct']}", data=summary)


class LeafWorker(GatewayWorker):
    def get_agent_types(self) -> list[str]:
        return [LEAF_AGENT]

    async def process_command(self, command: Command, context: AgentContext) -> Any:
        delay = float(command.metadata.get("delay", 0.0))
        if delay:
            await asyncio.sleep(delay)
        return command.text


__all__ = ["DEFAULT_MEMBERS", "FANOUT_AGENT", "LEAF_AGENT", "FanOutWorker", "LeafWorker"]
