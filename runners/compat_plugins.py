"""by-framework's plugin, configurator, ``run_worker`` and client-interceptor call shapes
(see :mod:`runners.compat`).

The differences they bridge: hooks take ``(context, ...)`` there and ``(command, context,
...)`` here; ``register_agent_configs(ctx)`` is async there and ``agent_configs()`` sync
here; a configurator gets a registry (``register_bundle``) there and a host (``add``)
here; agent configs hold tool callables there and tool names here (JSON only, G7: the
callables stay in the worker process, in ``plugin.tools``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from eventstore.catalog import CommandAsk
from eventstore.envelope import Event
from runners.app import run_worker as native_run_worker
from runners.compat_worker import AgentContext, CompatError, raw_result
from runners.plugins import AgentConfig as NativeAgentConfig
from runners.plugins import Plugin as NativePlugin
from runners.plugins import PluginHost
from runners.plugins import PluginManifest as NativeManifest
from runners.worker import GatewayWorker as NativeWorker

log = logging.getLogger(__name__)

_TASK_HOOKS = (
    "on_task_start",
    "on_task_complete",
    "on_task_error",
    "on_task_cancel",
    "on_call_agent_start",
    "on_call_agent_complete",
)
_WORKER_HOOKS = ("on_worker_startup", "on_worker_shutdown")
_JSON: TypeAdapter[Any] = TypeAdapter(Any)
T = TypeVar("T")


def _run_now(awaitable: Coroutine[Any, Any, T], what: str) -> T:
    """The value of a coroutine that never suspends (no event loop needed): jetledger asks
    for agent configs synchronously, and by-framework plugins compute them without I/O."""
    try:
        awaitable.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    awaitable.close()
    raise CompatError(
        f"{what} awaited real I/O; jetledger reads plugin configs synchronously: load what "
        "it needs in on_worker_startup or __init__ and return the configs directly"
    )


def _json_only(value: dict[str, Any]) -> dict[str, Any]:
    """The JSON-representable entries of ``value`` (callables stay out of the log)."""
    kept: dict[str, Any] = {}
    for key, item in value.items():
        try:
            _JSON.dump_json(item)
        except (ValidationError, TypeError, ValueError):
            continue
        kept[key] = item
    return kept


@dataclass
class PluginManifest:
    plugin_id: str
    version: str = "1.0.0"
    priority: int = 0
    enabled: bool = True


@dataclass
class AgentConfig:
    """by-framework's agent config: ``tools`` maps names to callables."""

    agent_id: str
    name: str = ""
    description: str = ""
    prompts: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    skills: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    knowledge_bases: dict[str, Any] = field(default_factory=dict)
    sub_agents: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    on_conflict: str = "error"

    def to_native(self) -> NativeAgentConfig:
        options: dict[str, Any] = {"name": self.name, "description": self.description}
        options |= {"skills": sorted(self.skills), "sub_agents": list(self.sub_agents)}
        options |= {"extra": _json_only(self.extra)}
        return NativeAgentConfig(
            agent_type=self.agent_id,
            prompts={key: str(getattr(p, "content", p)) for key, p in self.prompts.items()},
            tools=list(self.tools),
            options=options,
        )


@dataclass
class PluginBuildContext:
    agent_configs: list[AgentConfig] = field(default_factory=list)

    def set_agent_configs(self, configs: list[AgentConfig]) -> None:
        self.agent_configs = list(configs)

    def list_agent_configs(self) -> list[AgentConfig]:
        return list(self.agent_configs)


@dataclass(frozen=True)
class WorkerRef:
    """What by-framework's worker hooks get instead of the worker object."""

    worker_id: str


def _task_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    async def native(self: Any, _command: Any, context: Any, *rest: Any) -> Any:
        if hook.__name__ == "on_task_complete" and rest:
            rest = (raw_result(context, rest[0]), *rest[1:])
        return await hook(self, AgentContext(context), *rest)

    return native


def _worker_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    async def native(self: Any, worker_id: str) -> Any:
        return await hook(self, WorkerRef(worker_id))

    return native


class Plugin(NativePlugin):
    """A plugin with by-framework's constructor, ``register_agent_configs`` and hooks."""

    def __init__(self, manifest: PluginManifest, hook_timeout_seconds: float | None = None) -> None:
        super().__init__(NativeManifest(name=manifest.plugin_id, version=manifest.version))
        self.plugin_id = self.name = manifest.plugin_id
        self.version = manifest.version
        self.priority = manifest.priority
        self.tools: dict[str, Any] = {}
        """Tool callables of the configs, by name (the log only has their names)."""
        if hook_timeout_seconds is not None:
            log.info("plugin %s: set JETLEDGER_WORKER_HOOK_TIMEOUT for hook timeouts", self.name)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _TASK_HOOKS + _WORKER_HOOKS:
            if name in cls.__dict__:
                wrap = _task_hook if name in _TASK_HOOKS else _worker_hook
                setattr(cls, name, wrap(cls.__dict__[name]))

    async def register_agent_configs(self, ctx: PluginBuildContext) -> list[AgentConfig] | None:
        """Override: return the configs, or set them on ``ctx``."""
        return None

    def agent_configs(self) -> list[NativeAgentConfig]:
        ctx = PluginBuildContext()
        what = f"{type(self).__name__}.register_agent_configs"
        configs = _run_now(self.register_agent_configs(ctx), what)
        configs = ctx.agent_configs if configs is None else configs
        self.tools = {name: tool for config in configs for name, tool in config.tools.items()}
        return [config.to_native() for config in configs]


class PluginRegistry:
    """What a by-framework ``plugin_configurator`` gets: registration onto our host."""

    def __init__(self, host: PluginHost) -> None:
        self._host = host

    def register_bundle(self, plugin: NativePlugin) -> None:
        self._host.add(plugin)

    def register_bundles(self, plugins: Sequence[NativePlugin]) -> None:
        for plugin in plugins:
            self._host.add(plugin)

    def get_active_plugins(self) -> list[NativePlugin]:
        return list(self._host.plugins)

    def get_plugin(self, plugin_id: str) -> NativePlugin | None:
        return next((p for p in self._host.plugins if p.manifest.name == plugin_id), None)


def configurator(setup: Callable[[PluginRegistry], Any]) -> Callable[[PluginHost], None]:
    """A by-framework ``setup(registry)`` (sync, or async without I/O) as our configurator."""

    def configure(host: PluginHost) -> None:
        outcome = setup(PluginRegistry(host))
        if isinstance(outcome, Coroutine):
            _run_now(outcome, getattr(setup, "__name__", "plugin_configurator"))

    return configure


_BY_FRAMEWORK_ONLY = (
    "redis_host",
    "redis_port",
    "redis_db",
    "redis_password",
    "redis_username",
    "redis_max_connections",
    "workspace_dir",
    "consumer_group",
    "plugin_hook_timeout_seconds",
    "plugin_log_hook_stats_on_shutdown",
)


def run_worker(
    worker_class: type[NativeWorker],
    worker_id: str = "worker-1",
    *,
    nats_url: str = "",
    max_concurrency: int | None = None,
    fetch_count: int | None = None,
    plugin_list: Sequence[NativePlugin] | None = None,
    plugin_configurator: Callable[[PluginRegistry], Any] | None = None,
    plugin_dir: str | None = None,
    **by_framework_options: Any,
) -> None:
    """by-framework's ``run_worker``: Redis and workspace options are accepted and ignored
    (NATS comes from ``nats_url`` or ``$JETLEDGER_NATS_URL``); anything else is an error."""
    unknown = set(by_framework_options) - set(_BY_FRAMEWORK_ONLY)
    if unknown:
        raise TypeError(f"run_worker() got unexpected options: {', '.join(sorted(unknown))}")
    if by_framework_options:
        log.info("ignoring by-framework options %s", ", ".join(sorted(by_framework_options)))
    native_run_worker(
        worker_class,
        worker_id=worker_id,
        nats_url=nats_url,
        max_concurrency=max_concurrency,
        fetch_batch=fetch_count,
        plugin_list=tuple(plugin_list or ()),
        plugin_configurator=configurator(plugin_configurator) if plugin_configurator else None,
        plugin_dir=plugin_dir,
    )


def interceptor(by_framework_interceptor: Any) -> Callable[[Event], Event]:
    """An object with by-framework's ``before_send(params) -> params`` as a
    :class:`gateway.GatewayClient` interceptor (``client.add_interceptor(interceptor(x))``).

    ``params`` holds ``target_agent_type``, ``session_id``, ``content``, ``user_code`` and
    ``metadata``; what it returns changes the ``command.ask`` before it is appended. Other
    commands pass unchanged. Async ``before_send`` is refused: our interceptors are sync."""

    def before_send(command: Event) -> Event:
        if not isinstance(command, CommandAsk):
            return command
        params = {
            "target_agent_type": command.agent_type,
            "session_id": command.session_id,
            "content": command.data.content,
            "user_code": command.user_code,
            "metadata": dict(command.data.metadata),
        }
        changed = by_framework_interceptor.before_send(params)
        if isinstance(changed, Coroutine):
            changed.close()
            raise CompatError("before_send must be synchronous (as in by-framework's client)")
        body = command.model_dump(mode="json", by_alias=True)
        body |= {"agent_type": changed["target_agent_type"], "session_id": changed["session_id"]}
        body["user_code"] = changed.get("user_code")
        body["data"] |= {"content": changed["content"], "metadata": changed.get("metadata", {})}
        return CommandAsk.model_validate(body)

    return before_send


__all__ = [
    "AgentConfig",
    "Plugin",
    "PluginBuildContext",
    "PluginManifest",
    "PluginRegistry",
    "WorkerRef",
    "configurator",
    "interceptor",
    "run_worker",
]
