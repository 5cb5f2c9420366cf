"""``run_worker``: start a worker process (by-framework's entry point), with SIGTERM /
SIGINT draining in-flight runs before exit."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import uuid
from collections.abc import Sequence

from eventstore.connection import ConnectOptions
from eventstore.settings import StoreSettings, nats_url_from_env
from eventstore.store import EventStore
from runners.plugin_loading import PluginConfigurator, PluginSource
from runners.plugins import Plugin
from runners.runtime import WorkerRuntime
from runners.settings import WorkerSettings
from runners.worker import GatewayWorker

log = logging.getLogger(__name__)


def load_worker_class(spec: str) -> type[GatewayWorker]:
    """``package.module:ClassName`` -> the class (a clear error when it is not one)."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"--worker-class must look like package.module:ClassName, got {spec!r}")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, GatewayWorker):
        raise TypeError(f"{spec} is not a GatewayWorker subclass")
    return cls


async def serve(
    worker: GatewayWorker,
    *,
    worker_id: str,
    nats_url: str = "",
    settings: WorkerSettings | None = None,
    store_settings: StoreSettings | None = None,
    plugins: PluginSource | None = None,
) -> None:
    settings = settings or WorkerSettings.from_env()
    store = await EventStore.open(
        ConnectOptions(url=nats_url or nats_url_from_env(), name=f"jetledger-worker-{worker_id}"),
        store_settings or StoreSettings.from_env(),
    )
    runtime = WorkerRuntime(store, worker, worker_id=worker_id, settings=settings, plugins=plugins)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runtime.stop)
    log.info("worker %s serving %s", worker_id, ", ".join(runtime.agent_types))
    try:
        await runtime.run()
    finally:
        await store.close()
    log.info("worker %s stopped", worker_id)


def run_worker(
    worker_class: type[GatewayWorker],
    *,
    worker_id: str | None = None,
    nats_url: str = "",
    max_concurrency: int | None = None,
    fetch_batch: int | None = None,
    ack_wait: float | None = None,
    max_deliver: int | None = None,
    drain_timeout: float | None = None,
    plugin_list: Sequence[Plugin] = (),
    plugin_configurator: PluginConfigurator | None = None,
    plugin_dir: str | None = None,
) -> None:
    """Run ``worker_class`` until SIGTERM / SIGINT. Arguments left out come from
    ``JETLEDGER_WORKER_*`` variables, then the defaults of :class:`WorkerSettings`.

    Plugins come from ``plugin_list``, then ``plugin_configurator(host)``, then the
    ``PLUGINS`` of every file in ``plugin_dir`` (see :mod:`runners.plugin_loading`)."""
    settings = WorkerSettings.from_env(
        max_concurrency=max_concurrency,
        fetch_batch=fetch_batch,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        drain_timeout=drain_timeout,
        plugin_dir=plugin_dir,
    )
    plugins = PluginSource(
        plugin_list=tuple(plugin_list),
        configurator=plugin_configurator,
        plugin_dir=settings.plugin_dir or None,
    )
    asyncio.run(
        serve(
            worker_class(),
            worker_id=worker_id or f"worker-{uuid.uuid4().hex[:8]}",
            nats_url=nats_url,
            settings=settings,
            plugins=plugins,
        )
    )


__all__ = ["load_worker_class", "run_worker", "serve"]
