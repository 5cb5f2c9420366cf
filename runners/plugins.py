"""Plugins: lifecycle hooks and agent configs (by-framework's ``Plugin`` names).

A :class:`PluginHost` calls one named hook on every plugin, in order, each under a
timeout (``WorkerSettings.hook_timeout``). As in dramatiq's middleware, a hook that
raises or runs too long is logged with its context and counted in ``host.stats``; it never
breaks the worker and never changes a run's outcome.

>>> class Audit(Plugin):
...     manifest = PluginManifest(name="audit", version="1.0.0")
...     async def on_task_complete(self, command, context, result):
...         print("done", command.run_id)

Plugins reach a worker three ways (``run_worker(plugin_list=..., plugin_configurator=...,
plugin_dir=...)``, see :mod:`runners.plugin_loading`); :func:`reload_plugins` asks every
live worker to load them again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from eventstore.catalog import CommandReloadPlugins, CommandReloadPluginsData
from eventstore.store import EventStore
from runners.registry import get_active_workers

if TYPE_CHECKING:
    from runners.context import AgentContext
    from runners.worker import Command

log = logging.getLogger(__name__)

ACTIVE_CONFIG_KEY = "plugins.active"
"""KV key (in the registry bucket) of the plugin config the workers last loaded."""

HookName = Literal[
    "on_worker_startup",
    "on_worker_shutdown",
    "on_task_start",
    "on_task_complete",
    "on_task_error",
    "on_task_cancel",
    "on_call_agent_start",
    "on_call_agent_complete",
]


class PluginManifest(BaseModel):
    """Who a plugin is; part of the config version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    version: str = Field(min_length=1, max_length=64)
    description: str = ""


class AgentConfig(BaseModel):
    """What a plugin contributes to one agent type: JSON only (it is stored in KV, G7),
    so tools are named, not passed as callables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_type: str = Field(min_length=1)
    prompts: dict[str, str] = Field(default_factory=dict)
    tools: list[str] = Field(default_factory=list)
    options: dict[str, JsonValue] = Field(default_factory=dict)


class Plugin:
    """Subclass and override the hooks you need; every hook is optional.

    Set ``manifest`` as a class attribute or pass it to ``__init__``."""

    manifest: PluginManifest

    def __init__(self, manifest: PluginManifest | None = None) -> None:
        if manifest is not None:
            self.manifest = manifest
        if not isinstance(getattr(self, "manifest", None), PluginManifest):
            raise TypeError(f"{type(self).__name__} needs a PluginManifest")

    def agent_configs(self) -> list[AgentConfig]:
        """Agent configs this plugin provides (called at load and at every reload)."""
        return []

    async def on_worker_startup(self, worker_id: str) -> None:
        """After the worker claimed its id, before it fetches work."""

    async def on_worker_shutdown(self, worker_id: str) -> None:
        """After the drain, before the worker releases its id."""

    async def on_task_start(self, command: Command, context: AgentContext) -> None:
        """After ``run.started``, before the handler."""

    async def on_task_complete(self, command: Command, context: AgentContext, result: Any) -> None:
        """After the handler returned, before the terminal event is stored."""

    async def on_task_error(
        self, command: Command, context: AgentContext, error: Exception
    ) -> None:
        """After the handler raised (also when the run will be retried)."""

    async def on_task_cancel(self, command: Command, context: AgentContext, reason: str) -> None:
        """The run was cancelled: called on the worker whose handler is running it (when
        the ``run.cancelled`` reaches it; ``context.cancelled`` is already true) and on the
        worker that takes the ``command.cancel`` that ended it; at most once per run in a
        process. A run cancelled before it ever started has no command: no call."""

    async def on_call_agent_start(
        self, command: Command, context: AgentContext, target_agent_type: str, content: Any
    ) -> None:
        """Before ``call_agent`` dispatches a child for the first time (not when a
        re-invoked handler replays a recorded call; a crash right after the hook can
        repeat it: at least once)."""

    async def on_call_agent_complete(
        self, command: Command, context: AgentContext, target_agent_type: str, result: Any
    ) -> None:
        """When ``call_agent`` hands its result to the handler for the first time: the
        :class:`~runners.outcomes.AgentReply` (or the ``CalledAgent`` ids without
        ``wait_for_reply``); replays of an answer reported earlier do not call it."""


def config_document(plugins: Sequence[Plugin]) -> dict[str, Any]:
    """The JSON form of a plugin set: manifests and agent configs, in order."""
    return {
        "plugins": [plugin.manifest.model_dump(mode="json") for plugin in plugins],
        "agent_configs": [
            config.model_dump(mode="json")
            for plugin in plugins
            for config in plugin.agent_configs()
        ],
    }


def config_version(document: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a :func:`config_document`."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class PluginHost:
    """The plugins of one worker, in order, and the counts of their hook calls."""

    def __init__(self, plugins: Sequence[Plugin] = (), *, timeout: float = 5.0) -> None:
        self.plugins: list[Plugin] = list(plugins)
        self.timeout = timeout
        self.stats: dict[tuple[str, str], dict[str, int]] = {}

    def add(self, plugin: Plugin) -> None:
        """Append ``plugin`` (what a ``plugin_configurator`` calls)."""
        if not isinstance(plugin, Plugin):
            raise TypeError(f"{plugin!r} is not a Plugin")
        self.plugins.append(plugin)

    @property
    def names(self) -> list[str]:
        return [plugin.manifest.name for plugin in self.plugins]

    async def call(self, hook: HookName, *args: Any, run_id: str | None = None) -> None:
        """Call ``hook`` on every plugin that overrides it; never raises (but a
        cancellation of the caller still propagates)."""
        for plugin in self.plugins:
            if getattr(type(plugin), hook) is getattr(Plugin, hook):
                continue
            await self._call_one(plugin, hook, args, run_id)

    async def _call_one(
        self, plugin: Plugin, hook: HookName, args: tuple[Any, ...], run_id: str | None
    ) -> None:
        name = plugin.manifest.name
        counts = self.stats.setdefault((name, hook), {"calls": 0, "failures": 0, "timeouts": 0})
        counts["calls"] += 1
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await getattr(plugin, hook)(*args)
        except TimeoutError:
            if not deadline.expired():
                counts["failures"] += 1
                log.exception("plugin %s: %s raised (run %s)", name, hook, run_id or "-")
                return
            counts["timeouts"] += 1
            log.warning(
                "plugin %s: %s timed out after %.1fs (run %s)",
                name,
                hook,
                self.timeout,
                run_id or "-",
            )
        except Exception:
            # The boundary of the worker: a plugin bug is logged and counted, never raised.
            counts["failures"] += 1
            log.exception("plugin %s: %s raised (run %s)", name, hook, run_id or "-")


@dataclass(frozen=True, slots=True)
class ReloadRequest:
    """What :func:`reload_plugins` sent: one command per worker id."""

    reload_id: str
    worker_ids: tuple[str, ...]


async def reload_plugins(
    store: EventStore,
    reason: str | None = None,
    *,
    registry_bucket: str = "jl_workers",
    agent_type: str | None = None,
) -> ReloadRequest:
    """Ask every live worker (of ``agent_type``, or all) to reload its plugins.

    One ``command.reload_plugins`` per live lease, on that worker's own subject; each
    worker answers with one ``plugins.reloaded`` carrying the same ``reload_id``. A worker
    that starts after this call is not asked: it reads the active version from KV."""
    reload_id = f"reload-{uuid.uuid4().hex[:12]}"
    workers = await get_active_workers(store.blobs, registry_bucket, agent_type)
    for worker in workers:
        await store.append(
            CommandReloadPlugins(
                id=f"{reload_id}:{worker.worker_id}",
                data=CommandReloadPluginsData(
                    reload_id=reload_id, reason=reason, target_worker_id=worker.worker_id
                ),
            )
        )
    return ReloadRequest(reload_id, tuple(worker.worker_id for worker in workers))


__all__ = [
    "ACTIVE_CONFIG_KEY",
    "AgentConfig",
    "HookName",
    "Plugin",
    "PluginHost",
    "PluginManifest",
    "ReloadRequest",
    "config_document",
    "config_version",
    "reload_plugins",
]
