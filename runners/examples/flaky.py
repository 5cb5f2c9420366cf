"""``flaky``: misbehaves on demand, for tests and demos. Metadata:
``sleep`` (seconds to work, sending in-progress acks), ``fail`` ("retryable" or "fatal"),
``crash`` (true: kill this worker process with SIGKILL mid-run)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from runners.context import AgentContext
from runners.worker import Command, GatewayWorker, RetryableError


class FatalError(Exception):
    retryable = False


class FlakyWorker(GatewayWorker):
    def get_agent_types(self) -> list[str]:
        return ["flaky"]

    async def process_command(self, command: Command, context: AgentContext) -> Any:
        options = command.metadata
        await context.emit_state(
            "working", detail=f"attempt {context.attempt} on {context.worker_id}"
        )
        await asyncio.sleep(float(options.get("sleep", 0.0)))
        if options.get("crash") and context.attempt <= int(options.get("crash_attempts", 1)):
            os.kill(os.getpid(), signal.SIGKILL)
        if options.get("fail") == "retryable":
            raise RetryableError(f"flaky failure on attempt {context.attempt}")
        if options.get("fail") == "fatal":
            raise FatalError("flaky fatal failure")
        return f"done by {context.worker_id} on attempt {context.attempt}"
