"""Plugins for tests/test_plugins.py: one raises, one hangs past the hook timeout, one
records the hooks it sees in ``hooks.log`` next to this file (tests copy this directory
to a temporary one, so the log and edits of ``VERSION`` stay there)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from runners.plugins import AgentConfig, Plugin, PluginManifest

VERSION = "1.0.0"
LOG = Path(__file__).with_name("hooks.log")


class Raising(Plugin):
    manifest = PluginManifest(name="raising", version=VERSION)

    async def on_task_start(self, command: Any, context: Any) -> None:
        raise RuntimeError("raising plugin: on_task_start fails on purpose")

    async def on_task_complete(self, command: Any, context: Any, result: Any) -> None:
        raise RuntimeError("raising plugin: on_task_complete fails on purpose")


class Slow(Plugin):
    manifest = PluginManifest(name="slow", version=VERSION)

    async def on_task_start(self, command: Any, context: Any) -> None:
        await asyncio.sleep(60)


class Recorder(Plugin):
    manifest = PluginManifest(name="recorder", version=VERSION, description="logs hooks")

    def agent_configs(self) -> list[AgentConfig]:
        return [
            AgentConfig(
                agent_type="echo",
                prompts={"system": f"You echo (prompt pack {VERSION})."},
                tools=["lookup"],
                options={"temperature": 0},
            )
        ]

    def _record(self, line: str) -> None:
        with LOG.open("a") as log:
            log.write(line + "\n")

    async def on_worker_startup(self, worker_id: str) -> None:
        self._record(f"on_worker_startup {worker_id}")

    async def on_task_start(self, command: Any, context: Any) -> None:
        self._record(f"on_task_start {command.run_id}")

    async def on_task_complete(self, command: Any, context: Any, result: Any) -> None:
        self._record(f"on_task_complete {command.run_id} {result}")

    async def on_worker_shutdown(self, worker_id: str) -> None:
        self._record(f"on_worker_shutdown {worker_id}")


PLUGINS = [Raising(), Slow(), Recorder()]
