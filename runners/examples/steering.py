"""Steering demo worker (and the subject of ``tests/test_steering.py``).

``chat`` declares ``steering = True``, so a ``command.steer`` for a session with a live
``chat`` run joins that run's inbox. Metadata of the run's ask:

* ``delay_s``: seconds to sleep before reading (messages wait in the inbox meanwhile);
* ``read``: how many steering messages to read (default 0);
* ``wait_s``: seconds to wait for each one (default 5); the run stops reading early
  when none arrives in time.

It returns ``{"input": <its input>, "read": [<texts read, in order>]}``. A run started by
a steer whose text starts with ``ask:`` asks the user first and returns the answer as
its input instead (so such a run parks and is resumed from the stored steer).
"""

from __future__ import annotations

import asyncio
from typing import Any

from runners.context import AgentContext
from runners.worker import Command, GatewayWorker


class SteeringWorker(GatewayWorker):
    steering = True

    def get_agent_types(self) -> list[str]:
        return ["chat"]

    async def process_command(self, command: Command, context: AgentContext) -> Any:
        text = command.text
        if text.startswith("ask:"):
            text = str(await context.ask_user(text.removeprefix("ask:")))
        await asyncio.sleep(float(command.metadata.get("delay_s", 0.0)))
        await context.emit_state("listening")
        wanted = int(command.metadata.get("read", 0))
        wait_s = float(command.metadata.get("wait_s", 5.0))
        read: list[str] = []
        while len(read) < wanted:
            message = await context.next_steering(wait_s)
            if message is None:
                break
            read.append(message.text)
        return {"input": text, "read": read}
