"""Plugins: the host's hooks never raise (unit), and with workers as real subprocesses a
run completes although one hook raises and another times out; ``reload_plugins`` gets
exactly one ``plugins.reloaded`` per live worker; the active config is JSON in KV."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from storekit import isolated_settings, open_store
from workerkit import ask, spawn_worker, stop, wait_terminal

from eventstore.catalog import PluginsReloaded
from eventstore.codec import Undecodable
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from eventstore.subjects import sys_subject
from runners.plugin_loading import (
    PluginLoadError,
    PluginSource,
    describe,
    load_plugin_dir,
    load_plugins,
)
from runners.plugins import (
    ACTIVE_CONFIG_KEY,
    AgentConfig,
    Plugin,
    PluginHost,
    PluginManifest,
    config_document,
    config_version,
    reload_plugins,
)
from runners.registry import get_active_workers

FIXTURES = Path(__file__).with_name("plugin_fixtures")
ECHO = "runners.examples.echo:EchoWorker"


class Recording(Plugin):
    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__(PluginManifest(name=name, version="1"))
        self.calls = calls

    async def on_task_start(self, command: Any, context: Any) -> None:
        self.calls.append(self.manifest.name)


class Raising(Plugin):
    manifest = PluginManifest(name="raising", version="1")

    async def on_task_start(self, command: Any, context: Any) -> None:
        raise RuntimeError("boom")


class Slow(Plugin):
    manifest = PluginManifest(name="slow", version="1")

    async def on_task_start(self, command: Any, context: Any) -> None:
        await asyncio.sleep(30)


class OwnTimeout(Plugin):
    manifest = PluginManifest(name="own-timeout", version="1")

    async def on_task_start(self, command: Any, context: Any) -> None:
        raise TimeoutError("the plugin's own call timed out")


async def test_failing_and_slow_hooks_are_counted_and_never_raise() -> None:
    calls: list[str] = []
    host = PluginHost(
        [Recording("first", calls), Raising(), Slow(), OwnTimeout(), Recording("last", calls)],
        timeout=0.2,
    )
    started = asyncio.get_running_loop().time()
    await host.call("on_task_start", None, None, run_id="run-1")
    assert asyncio.get_running_loop().time() - started < 2
    assert calls == ["first", "last"]
    assert host.stats[("raising", "on_task_start")] == {"calls": 1, "failures": 1, "timeouts": 0}
    assert host.stats[("slow", "on_task_start")] == {"calls": 1, "failures": 0, "timeouts": 1}
    # A TimeoutError the hook raises itself is a failure, not the host's timeout.
    assert host.stats[("own-timeout", "on_task_start")]["failures"] == 1
    assert host.stats[("first", "on_task_start")] == {"calls": 1, "failures": 0, "timeouts": 0}


async def test_hooks_a_plugin_does_not_override_are_not_called() -> None:
    host = PluginHost([Raising()], timeout=1)
    await host.call("on_task_complete", None, None, "result")
    await host.call("on_worker_startup", "w1")
    assert host.stats == {}


def test_config_version_follows_manifests_and_agent_configs() -> None:
    class WithConfig(Plugin):
        manifest = PluginManifest(name="cfg", version="1")

        def agent_configs(self) -> list[AgentConfig]:
            return [AgentConfig(agent_type="echo", prompts={"system": "hi"}, tools=["t"])]

    same = config_version(config_document([WithConfig(), Raising()]))
    assert same == config_version(config_document([WithConfig(), Raising()]))
    assert same != config_version(config_document([Raising(), WithConfig()]))
    assert same != config_version(config_document([WithConfig()]))
    document = config_document([WithConfig()])
    assert json.loads(json.dumps(document)) == document
    assert document["agent_configs"][0]["tools"] == ["t"]


def test_configurator_and_plugin_dir_add_after_the_list(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugins"
    shutil.copytree(FIXTURES, plugin_dir)
    source = PluginSource(
        plugin_list=[Raising()],
        configurator=lambda host: host.add(Slow()),
        plugin_dir=str(plugin_dir),
    )
    host = load_plugins(source, timeout=1)
    assert host.names == ["raising", "slow", "raising", "slow", "recorder"]


def test_a_bad_plugin_dir_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("PLUGINS = ['not a plugin']\n")
    with pytest.raises(PluginLoadError, match="list of Plugin instances"):
        load_plugin_dir(tmp_path)
    (tmp_path / "bad.py").write_text("raise ImportError('missing dependency')\n")
    with pytest.raises(PluginLoadError, match="missing dependency"):
        load_plugin_dir(tmp_path)
    with pytest.raises(PluginLoadError, match="not a directory"):
        load_plugin_dir(tmp_path / "nowhere")


# --- workers as real subprocesses -------------------------------------------------------


def copy_fixtures(tmp_path: Path) -> Path:
    plugin_dir = tmp_path / "plugins"
    shutil.copytree(FIXTURES, plugin_dir, ignore=shutil.ignore_patterns("__pycache__"))
    return plugin_dir


def spawn(
    settings: StoreSettings, nats_url: str, worker_id: str, plugin_dir: Path
) -> subprocess.Popen[str]:
    return spawn_worker(
        settings,
        nats_url,
        ECHO,
        worker_id,
        registry_bucket=settings.kv_buckets[0],
        plugin_dir=str(plugin_dir),
        hook_timeout="0.5",
        lease_ttl="3",
        fetch_wait="0.5",
    )


def version_of(plugin_dir: Path) -> str:
    host = PluginHost(load_plugin_dir(plugin_dir))
    return describe(host)[1]


async def wait_live(store: EventStore, worker_ids: set[str], timeout: float = 15) -> None:
    for _ in range(int(timeout / 0.1)):
        live = await get_active_workers(store.blobs, store.settings.kv_buckets[0])
        if worker_ids <= {worker.worker_id for worker in live}:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"workers {worker_ids} did not start")


async def reloaded_events(store: EventStore, reload_id: str) -> list[PluginsReloaded]:
    found = []
    subject = sys_subject("plugins", store.settings.root)
    async for _seq, item in store.read(1, subject_filter=subject):
        if isinstance(item, Undecodable):
            continue
        if isinstance(item, PluginsReloaded) and item.data.reload_id == reload_id:
            found.append(item)
    return found


async def active_config(store: EventStore) -> dict[str, Any]:
    """The raw KV value: JSON bytes (never a pickle)."""
    kv = await store.js.key_value(store.settings.kv_buckets[0])
    entry = await kv.get(ACTIVE_CONFIG_KEY)
    value: dict[str, Any] = json.loads(entry.value)
    return value


async def test_a_run_completes_although_one_hook_raises_and_one_times_out(
    nats_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings()
    plugin_dir = copy_fixtures(tmp_path)
    async with open_store(nats_url, settings) as store:
        worker = spawn(settings, nats_url, "hooked", plugin_dir)
        try:
            command = ask("echo", "hello plugins", chunks=2)
            await store.append(command)
            terminal = await wait_terminal(store, command, timeout=20)
            assert terminal.type == "run.completed"
            assert terminal.data.content == "hello plugins"  # type: ignore[attr-defined]
        finally:
            assert stop(worker) == 0
        stderr = worker.stderr.read() if worker.stderr else ""
    log = (plugin_dir / "hooks.log").read_text().splitlines()
    assert log[0] == "on_worker_startup hooked"
    assert f"on_task_start {command.run_id}" in log
    assert f"on_task_complete {command.run_id} hello plugins" in log
    assert log[-1] == "on_worker_shutdown hooked"
    assert f"plugin raising: on_task_start raised (run {command.run_id})" in stderr
    assert f"plugin slow: on_task_start timed out after 0.5s (run {command.run_id})" in stderr


async def test_reload_publishes_one_ack_per_live_worker(nats_url: str, tmp_path: Path) -> None:
    settings = isolated_settings()
    plugin_dir = copy_fixtures(tmp_path)
    before = version_of(plugin_dir)
    async with open_store(nats_url, settings) as store:
        workers = [spawn(settings, nats_url, f"w{i}", plugin_dir) for i in (1, 2)]
        late: subprocess.Popen[str] | None = None
        try:
            await wait_live(store, {"w1", "w2"})
            assert (await active_config(store))["version"] == before

            source = plugin_dir / "hook_plugins.py"
            source.write_text(source.read_text().replace('VERSION = "1.0.0"', 'VERSION = "2.0.0"'))
            after = version_of(plugin_dir)
            assert after != before

            request = await reload_plugins(
                store, "new prompt pack", registry_bucket=settings.kv_buckets[0]
            )
            assert sorted(request.worker_ids) == ["w1", "w2"]
            for _ in range(200):
                if len(await reloaded_events(store, request.reload_id)) >= 2:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # room for a wrong extra answer to show up
            answers = await reloaded_events(store, request.reload_id)
            assert sorted(answer.worker_id or "" for answer in answers) == ["w1", "w2"]
            for answer in answers:
                assert answer.data.ok, answer.data.error
                assert answer.data.version_before == before
                assert answer.data.version_after == after
                assert answer.data.plugins == ["raising", "slow", "recorder"]

            active = await active_config(store)
            assert active["version"] == after
            assert [p["version"] for p in active["plugins"]] == ["2.0.0"] * 3
            assert active["agent_configs"][0]["prompts"]["system"].endswith("2.0.0).")

            # A worker started now loads the same files and sees it runs the active version.
            late = spawn(settings, nats_url, "w3", plugin_dir)
            await wait_live(store, {"w3"})
        finally:
            for process in [*workers, *([late] if late else [])]:
                assert stop(process) == 0
        assert late is not None and late.stderr is not None
        assert f"plugins match the active config version {after[:12]}" in late.stderr.read()
