"""Workers of our own, written from by-framework's README API; run in by-framework's venv.

Started exactly as the README says::

    python -m by_framework --worker-class echo_worker.EchoWorker --worker-id echo-1 \
        --redis-host 127.0.0.1 --redis-port <port>

``EchoWorker`` streams its input back; ``ScenarioWorker`` serves the scenario agent types
(``caller`` -> ``callee`` -> ``caller`` resume, ``asker`` for ask_user, ``sleeper`` to be
cancelled). Nothing here is copied from by-framework; only its public API is used.
"""

from __future__ import annotations

import asyncio
from typing import Any

from by_framework import AgentContext, AgentState, AskUserEvent, GatewayWorker, ResumeCommand

ECHO = "echo"
CALLER = "caller"
CALLEE = "callee"
ASKER = "asker"
SLEEPER = "sleeper"
SLEEP_STEPS = 600
SLEEP_STEP_SECONDS = 0.05


def completed(content: str) -> dict[str, str]:
    # Upper case: 0.2.1 treats only "COMPLETED" as terminal (the README's lower case
    # "completed" never produces the end-of-stream marker).
    return {"status": AgentState.COMPLETED.value, "content": content}


class EchoWorker(GatewayWorker):
    """Streams its input back in two chunks, then returns it."""

    def get_agent_types(self) -> list[str]:
        return [ECHO]

    async def process_command(self, command: Any, context: AgentContext) -> dict[str, str]:
        text = str(command.content)
        half = len(text) // 2
        await context.emit_chunk(text[:half])
        await context.emit_chunk(text[half:])
        return completed(text)


class ScenarioWorker(GatewayWorker):
    """One process for every scenario agent type, so each scenario needs one worker."""

    def get_agent_types(self) -> list[str]:
        return [CALLER, CALLEE, ASKER, SLEEPER]

    async def process_command(self, command: Any, context: AgentContext) -> dict[str, Any]:
        agent_type = command.header.target_agent_type
        if agent_type == CALLER:
            return await self._caller(command, context)
        if agent_type == CALLEE:
            await context.emit_chunk(f"callee saw {command.content}")
            return completed(f"callee:{command.content}")
        if agent_type == ASKER:
            if isinstance(command, ResumeCommand):
                await context.emit_chunk(f"user said {command.content}")
                return completed(f"answer:{command.content}")
            return await context.ask_user(AskUserEvent(prompt="Which environment?"))
        if agent_type == SLEEPER:
            for step in range(SLEEP_STEPS):
                await context.check_cancelled()
                await context.emit_chunk(f"tick {step}")
                await asyncio.sleep(SLEEP_STEP_SECONDS)
            return completed("slept")
        return {"status": AgentState.FAILED.value, "content": f"unknown {agent_type}"}

    async def _caller(self, command: Any, context: AgentContext) -> dict[str, Any]:
        if isinstance(command, ResumeCommand):
            await context.emit_chunk(f"caller resumed with {command.content}")
            return completed(f"caller got {command.content}")
        await context.emit_chunk("caller asks callee")
        return await context.call_agent(CALLEE, f"from caller: {command.content}")
