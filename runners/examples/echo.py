"""``echo``: streams its input back in ``chunks`` pieces (metadata ``chunks``, default 3),
with an optional ``delay`` (seconds) between pieces."""

from __future__ import annotations

import asyncio
from typing import Any

from runners.context import AgentContext
from runners.worker import Command, GatewayWorker


class EchoWorker(GatewayWorker):
    def get_agent_types(self) -> list[str]:
        return ["echo"]

    async def process_command(self, command: Command, context: AgentContext) -> Any:
        text = command.text
        chunks = max(1, int(command.metadata.get("chunks", 3)))
        delay = float(command.metadata.get("delay", 0.0))
        size = max(1, -(-len(text) // chunks))
        for start in range(0, len(text), size):
            await context.emit_chunk(text[start : start + size])
            if delay:
                await asyncio.sleep(delay)
        return text
