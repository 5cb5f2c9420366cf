"""Where a worker's plugins come from, and reloading them on ``command.reload_plugins``.

Three sources, used together and in this order:

* ``plugin_list``: plugin instances given to ``run_worker``; the same instances are kept
  across reloads;
* ``plugin_configurator``: ``callable(host)`` that calls ``host.add(plugin)``; run again
  on every reload;
* ``plugin_dir`` (``--plugin-dir`` or ``JETLEDGER_WORKER_PLUGIN_DIR``): every ``*.py`` file
  there (not starting with ``_``), in name order, is imported, and each module's
  ``PLUGINS`` (a list of :class:`Plugin` instances) is added. A reload executes the files
  afresh, so edited files and new files are picked up. Files without ``PLUGINS`` are
  skipped.

The active config (manifests and agent configs, with its sha256 version) is stored as
JSON in the registry bucket under ``plugins.active`` (G7: never pickled). A worker that
starts later logs whether its own plugins match it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from eventstore.catalog import CommandReloadPlugins, PluginsReloaded, PluginsReloadedData
from eventstore.errors import ConcurrencyError
from eventstore.store import EventStore
from runners.plugins import (
    ACTIVE_CONFIG_KEY,
    Plugin,
    PluginHost,
    config_document,
    config_version,
)

log = logging.getLogger(__name__)

PluginConfigurator = Callable[[PluginHost], None]


class PluginLoadError(RuntimeError):
    """The plugins could not be loaded (an import error, a bad ``PLUGINS`` list...)."""


@dataclass(frozen=True, slots=True)
class PluginSource:
    plugin_list: Sequence[Plugin] = ()
    configurator: PluginConfigurator | None = None
    plugin_dir: str | None = None


def _import_file(path: Path) -> ModuleType:
    # A fresh module object on every call: this is the "re-import" of a reload.
    name = f"jetledger_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_plugin_dir(directory: str | Path) -> list[Plugin]:
    """The ``PLUGINS`` of every ``*.py`` file in ``directory`` (see the module docstring)."""
    root = Path(directory)
    if not root.is_dir():
        raise PluginLoadError(f"plugin dir {root} is not a directory")
    plugins: list[Plugin] = []
    for path in sorted(root.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            module = _import_file(path)
        except PluginLoadError:
            raise
        except Exception as exc:
            raise PluginLoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
        found = getattr(module, "PLUGINS", None)
        if found is None:
            log.debug("plugin file %s defines no PLUGINS; skipped", path)
            continue
        if not isinstance(found, list) or not all(isinstance(p, Plugin) for p in found):
            raise PluginLoadError(f"{path}: PLUGINS must be a list of Plugin instances")
        plugins.extend(found)
    return plugins


def load_plugins(source: PluginSource, timeout: float) -> PluginHost:
    """A new host with every plugin of ``source``; :class:`PluginLoadError` on failure."""
    host = PluginHost(source.plugin_list, timeout=timeout)
    if source.configurator is not None:
        try:
            source.configurator(host)
        except Exception as exc:
            raise PluginLoadError(
                f"plugin_configurator failed: {type(exc).__name__}: {exc}"
            ) from exc
    if source.plugin_dir:
        for plugin in load_plugin_dir(source.plugin_dir):
            host.add(plugin)
    return host


def describe(host: PluginHost) -> tuple[dict[str, Any], str]:
    """The host's config document and version; :class:`PluginLoadError` if a plugin's
    ``agent_configs()`` fails."""
    try:
        document = config_document(host.plugins)
    except Exception as exc:
        raise PluginLoadError(f"agent_configs() failed: {type(exc).__name__}: {exc}") from exc
    return document, config_version(document)


class PluginManager:
    """One worker's plugins: loaded at start, swapped on reload, hooks through ``host``."""

    def __init__(
        self,
        store: EventStore,
        source: PluginSource,
        *,
        worker_id: str,
        registry_bucket: str,
        hook_timeout: float,
    ) -> None:
        self.store = store
        self.source = source
        self.worker_id = worker_id
        self.bucket = registry_bucket
        self.hook_timeout = hook_timeout
        self.host = PluginHost(timeout=hook_timeout)
        self.document: dict[str, Any] = config_document([])
        self.version = config_version(self.document)

    def load(self) -> None:
        """Load every plugin at start; :class:`PluginLoadError` stops the worker."""
        host = load_plugins(self.source, self.hook_timeout)
        self.document, self.version = describe(host)
        self.host = host
        log.info("plugins %s loaded (config version %s)", host.names, self.version[:12])

    def _record(self) -> dict[str, Any]:
        return {
            **self.document,
            "version": self.version,
            "worker_id": self.worker_id,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    async def start(self) -> None:
        """Compare with the active config in KV (write it if there is none), then call
        ``on_worker_startup``."""
        active = await self.store.blobs.kv_get(self.bucket, ACTIVE_CONFIG_KEY)
        if active is None:
            # Another worker may write it first; both describe what they loaded.
            with contextlib.suppress(ConcurrencyError):
                await self.store.blobs.kv_create(self.bucket, ACTIVE_CONFIG_KEY, self._record())
        elif active.value.get("version") == self.version:
            log.info("plugins match the active config version %s", self.version[:12])
        else:
            log.warning(
                "plugins (version %s) differ from the active config version %s written by %s; "
                "send command.reload_plugins to align the workers",
                self.version[:12],
                str(active.value.get("version", "?"))[:12],
                active.value.get("worker_id", "?"),
            )
        await self.host.call("on_worker_startup", self.worker_id)

    async def stop(self) -> None:
        await self.host.call("on_worker_shutdown", self.worker_id)

    async def reload(self, command: CommandReloadPlugins) -> None:
        """Load the plugins again, store the active config, answer ``plugins.reloaded``.

        A failed load keeps the old plugins running and answers ``ok=false``."""
        before = self.version
        error: str | None = None
        try:
            host = load_plugins(self.source, self.hook_timeout)
            document, version = describe(host)
        except PluginLoadError as exc:
            error = str(exc)[:4000]
            log.error("plugin reload %s failed: %s", command.data.reload_id, error)  # noqa: TRY400
        else:
            # Old plugins keep their stats under the old host; new hooks count afresh.
            self.host, self.document, self.version = host, document, version
            await self.store.blobs.kv_put(self.bucket, ACTIVE_CONFIG_KEY, self._record())
            log.info(
                "plugins reloaded (%s): version %s -> %s",
                command.data.reason or "no reason given",
                before[:12],
                version[:12],
            )
        await self.store.append(
            PluginsReloaded(
                id=f"{command.data.reload_id}:{self.worker_id}:reloaded",
                worker_id=self.worker_id,
                data=PluginsReloadedData(
                    reload_id=command.data.reload_id,
                    plugins=self.host.names,
                    ok=error is None,
                    error=error,
                    version_before=before,
                    version_after=self.version,
                ),
            )
        )


__all__ = [
    "PluginConfigurator",
    "PluginLoadError",
    "PluginManager",
    "PluginSource",
    "describe",
    "load_plugin_dir",
    "load_plugins",
]
