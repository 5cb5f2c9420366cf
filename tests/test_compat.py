"""A worker written in by-framework's style (its README's shapes) runs on jetledger after
changing only its imports to ``runners.compat``: against a real nats-server, as its own
process, with a plugin, a configurator and a client interceptor."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from projectkit import store_env
from storekit import isolated_settings, open_store
from workerkit import run_history, stop

from eventstore.catalog import ArtifactCreated, MessageDelta, RunCompleted, RunFailed, RunState
from eventstore.settings import StoreSettings
from gateway.client import GatewayClient
from runners.compat import interceptor
from runners.plugins import ACTIVE_CONFIG_KEY

WITHIN = 30.0

PORTED_WORKER = """
import json, os, sys
from runners.compat import (  # was: from by_framework import (...)
    AgentConfig, AgentContext, AgentTaskResult, ArtifactEvent, GatewayWorker, Plugin,
    PluginBuildContext, PluginManifest, StateChangeEvent, run_worker,
)

HOOK_LOG = os.environ["HOOK_LOG"]


def note(*fields):
    with open(HOOK_LOG, "a") as log:
        log.write(json.dumps(fields) + "\\n")


class WeatherPlugin(Plugin):
    def __init__(self):
        super().__init__(PluginManifest(plugin_id="weather", version="1.0.0"))

    async def register_agent_configs(self, ctx: PluginBuildContext) -> list[AgentConfig]:
        return [
            AgentConfig(
                agent_id="weather_agent",
                tools={"get_weather": self._get_weather},
                prompts={"system": "You are a weather assistant."},
            )
        ]

    async def _get_weather(self, city: str) -> dict:
        return {"city": city, "temp": 22}

    async def on_worker_startup(self, worker):
        note("startup", worker.worker_id)

    async def on_task_start(self, context: AgentContext):
        note("start", context.session_id, context.current_agent_id)

    async def on_task_complete(self, context: AgentContext, result):
        note("complete", context.message_id, type(result).__name__)

    async def on_task_error(self, context: AgentContext, error: Exception):
        note("error", context.message_id, str(error))


class MyAgent(GatewayWorker):
    def get_agent_types(self):
        return ["my_agent"]

    async def process_command(self, command, context: AgentContext):
        await context.emit_chunk("Hello from your agent!")
        await context.emit_state(StateChangeEvent(state="analyzing"))
        await context.emit_state("summarizing")
        await context.emit_artifact(ArtifactEvent(url="https://example.com/output.json"))
        if command.content == "fail":
            return {"status": "failed", "content": "cannot do that"}
        if command.content == "structured":
            return AgentTaskResult(content="done", reply_data={"n": 1})
        header = command.header
        return {
            "status": "completed",
            "content": "Hello from your agent!",
            "echo": {"session": header.session_id, "metadata": header.metadata},
        }


def setup(registry):
    registry.register_bundle(WeatherPlugin())


if __name__ == "__main__":
    run_worker(MyAgent, worker_id="worker-01", redis_host="localhost", plugin_configurator=setup)
"""


class AuthInterceptor:
    """by-framework's client interceptor shape: ``before_send(params) -> params``."""

    def before_send(self, params: dict[str, Any]) -> dict[str, Any]:
        params["metadata"]["auth_token"] = "t0ken"
        return params


def spawn(settings: StoreSettings, nats_url: str, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "my_agent.py"
    script.write_text(PORTED_WORKER)
    env = store_env(settings) | {
        "JETLEDGER_NATS_URL": nats_url,
        "JETLEDGER_WORKER_REGISTRY_BUCKET": settings.kv_buckets[0],
        "HOOK_LOG": str(tmp_path / "hooks.jsonl"),
    }
    return subprocess.Popen(
        [sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True
    )


async def until_served(client: GatewayClient, worker: subprocess.Popen[str]) -> None:
    deadline = asyncio.get_running_loop().time() + WITHIN
    while not await client.has_live_worker("my_agent"):
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        assert asyncio.get_running_loop().time() < deadline, "the ported worker never polled"
        await asyncio.sleep(0.1)


async def test_a_by_framework_style_worker_runs_after_changing_its_imports(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    worker = spawn(settings, nats_url, tmp_path)
    try:
        async with (
            GatewayClient(nats_url, settings) as client,
            open_store(nats_url, settings) as store,
        ):
            await until_served(client, worker)
            client.add_interceptor(interceptor(AuthInterceptor()))
            plain = await client.send_message("my_agent", "s1", "hi")
            structured = await client.send_message("my_agent", "s1", "structured")
            failing = await client.send_message("my_agent", "s1", "fail")
            ends = [
                await client.wait(sent.run_id, "s1", WITHIN)
                for sent in (plain, structured, failing)
            ]
            history = await run_history(store, plain.run_id)
            kv = await store.js.key_value(settings.kv_buckets[0])
            active = json.loads((await kv.get(ACTIVE_CONFIG_KEY)).value)
    finally:
        code = stop(worker)
    assert code == 0

    done, structured_done, failed = ends
    assert isinstance(done, RunCompleted) and done.data.content == "Hello from your agent!"
    assert done.data.result == {"echo": {"session": "s1", "metadata": {"auth_token": "t0ken"}}}
    assert isinstance(structured_done, RunCompleted)
    assert structured_done.data.content == "done"
    assert structured_done.data.result == {"reply_data": {"n": 1}, "metadata": {}}
    assert isinstance(failed, RunFailed) and "cannot do that" in failed.data.error.message

    deltas = [e.data.text for e in history if isinstance(e, MessageDelta)]
    states = [e.data.state for e in history if isinstance(e, RunState)]
    artifacts = [e.data for e in history if isinstance(e, ArtifactCreated)]
    assert "".join(deltas) == "Hello from your agent!"
    assert states == ["analyzing", "summarizing"]
    assert [(a.artifact_type, a.name) for a in artifacts] == [
        ("url", "https://example.com/output.json")
    ]

    configs = active["document"]["agent_configs"] if "document" in active else active
    assert "weather_agent" in json.dumps(configs) and "get_weather" in json.dumps(configs)

    hooks = [json.loads(line) for line in (tmp_path / "hooks.jsonl").read_text().splitlines()]
    assert ["startup", "worker-01"] in hooks
    assert hooks.count(["start", "s1", "my_agent"]) == 3
    assert ["complete", plain.message_id, "dict"] in hooks
    assert ["complete", structured.message_id, "AgentTaskResult"] in hooks
    assert any(h[0] == "error" and h[1] == failing.message_id for h in hooks)
