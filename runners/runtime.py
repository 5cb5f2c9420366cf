"""The worker runtime: durable pull consumers per agent type, shared by every worker of
that type (competing consumers), plus one per worker id for direct routing and admin
(suspend / resume / evict). A worker fetches only as many commands as it has free slots,
so no command waits in one worker's buffer while another worker is idle. The worker id is
claimed by a lease (``runners.registry``) held from before the first fetch until after
the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.client import JetStreamContext

from eventstore.catalog import (
    CommandReloadPlugins,
    WorkerStarted,
    WorkerStartedData,
    WorkerStopped,
    WorkerStoppedData,
)
from eventstore.store import EventStore
from eventstore.subjects import agent_type_subject, encode_token, worker_subject
from runners.execution import AdminCommand, Execution
from runners.plugin_loading import PluginManager, PluginSource
from runners.registry import Lease, LeaseLostError, ensure_registry
from runners.settings import WorkerSettings
from runners.worker import GatewayWorker

log = logging.getLogger(__name__)


def _durable_token(value: str) -> str:
    # Consumer names may not contain '~'; '_7e_' cannot come out of encode_token.
    return encode_token(value).replace("~", "_7e_")


def consumer_name(agent_type: str) -> str:
    """The durable consumer every worker of ``agent_type`` shares."""
    return "jl-agent-" + _durable_token(agent_type)


def worker_consumer_name(worker_id: str) -> str:
    """The durable consumer of one worker's direct subject (routing and admin)."""
    return "jl-worker-" + _durable_token(worker_id)


class Slots:
    """Free execution slots; a fetch reserves slots before it asks for messages."""

    def __init__(self, total: int) -> None:
        self.free = total
        self.closed = False
        self._changed = asyncio.Condition()

    async def reserve(self, most: int) -> int:
        """Wait for a free slot and take up to ``most``; 0 once the slots are closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.free > 0 or self.closed)
            if self.closed:
                return 0
            taken = min(most, self.free)
            self.free -= taken
            return taken

    async def release(self, count: int = 1) -> None:
        async with self._changed:
            self.free += count
            self._changed.notify_all()

    async def close(self) -> None:
        """Wake every waiting fetch loop so it can notice the stop."""
        async with self._changed:
            self.closed = True
            self._changed.notify_all()


class WorkerRuntime:
    def __init__(
        self,
        store: EventStore,
        worker: GatewayWorker,
        *,
        worker_id: str,
        settings: WorkerSettings,
        plugins: PluginSource | None = None,
    ) -> None:
        self.store = store
        self.worker = worker
        self.worker_id = worker_id
        self.settings = settings
        self.slots = Slots(settings.max_concurrency)
        self.stopping = asyncio.Event()
        self.accepting = asyncio.Event()
        """Set while agent-type work is fetched: cleared by ``suspend``, set by ``resume``."""
        self.accepting.set()
        self.force_stop = False
        self.in_flight: set[asyncio.Task[None]] = set()
        self.agent_types = list(worker.get_agent_types())
        if not self.agent_types:
            raise ValueError(f"{type(worker).__name__}.get_agent_types() returned no agent type")
        self.lease = Lease(
            store.blobs,
            settings.registry_bucket,
            worker_id,
            self.agent_types,
            ttl=settings.lease_ttl,
        )
        self.lease_lost: LeaseLostError | None = None
        self.plugins = PluginManager(
            store,
            plugins or PluginSource(plugin_dir=settings.plugin_dir or None),
            worker_id=worker_id,
            registry_bucket=settings.registry_bucket,
            hook_timeout=settings.hook_timeout,
        )
        self._closing: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Stop fetching and drain (SIGTERM, SIGINT, evict, a lost lease)."""
        self.stopping.set()
        self.accepting.set()  # wakes suspended fetch loops, which then see the stop
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.slots.close())

    async def ensure_consumer(self, js: JetStreamContext, durable: str, subject: str) -> None:
        config = api.ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait,
            # one delivery more than attempts: the extra one only records the dead letter
            max_deliver=self.settings.max_deliver + 1,
            backoff=list(self.settings.backoff) or None,
            max_ack_pending=-1,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        await js.add_consumer(self.store.settings.stream, config)

    async def _subscribe(self, durable: str, subject: str) -> Any:
        js = self.store.js
        await self.ensure_consumer(js, durable, subject)
        return await js.pull_subscribe_bind(durable=durable, stream=self.store.settings.stream)

    async def run(self) -> None:
        """Claim the worker id, serve until stopped, drain, then release the lease.

        Raises :class:`DuplicateWorkerError` when another live process holds the id and
        :class:`LeaseLostError` (after draining) when another process took it over, and
        :class:`PluginLoadError` before claiming the id when the plugins do not load."""
        self.plugins.load()
        await ensure_registry(
            self.store.js, self.settings.registry_bucket, self.store.settings.replicas
        )
        await self.lease.claim()
        heartbeat = asyncio.create_task(self.lease.keep(self._on_lease_lost))
        try:
            await self.plugins.start()
            await self._serve()
        finally:
            await self.plugins.stop()
            # The heartbeat ran through the drain; only now is the id free again.
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.lease.release()
        if self.lease_lost is not None:
            raise self.lease_lost

    async def _serve(self) -> None:
        root = self.store.settings.root
        subscriptions: list[tuple[Any, bool]] = []
        try:
            for agent_type in self.agent_types:
                subscription = await self._subscribe(
                    consumer_name(agent_type), agent_type_subject(agent_type, root)
                )
                subscriptions.append((subscription, True))
            direct = await self._subscribe(
                worker_consumer_name(self.worker_id), worker_subject(self.worker_id, root)
            )
            subscriptions.append((direct, False))
            await self._announce_start()
            await asyncio.gather(
                *(self._fetch_loop(sub, agent_work=agent_work) for sub, agent_work in subscriptions)
            )
        finally:
            for subscription, _agent_work in subscriptions:
                with contextlib.suppress(NatsError):  # the connection may be gone already
                    await subscription.unsubscribe()
            await self._drain()

    async def _fetch_loop(self, subscription: Any, *, agent_work: bool) -> None:
        while not self.stopping.is_set():
            if agent_work and not self.accepting.is_set():
                await self.accepting.wait()  # suspended: the direct subject is still served
                continue
            # The direct subject is quiet: one slot is enough, the rest stay for agent work.
            reserved = await self.slots.reserve(self.settings.fetch_batch if agent_work else 1)
            if self.stopping.is_set():
                await self.slots.release(reserved)
                return
            try:
                messages = await subscription.fetch(reserved, timeout=self.settings.fetch_wait)
            except (NatsTimeoutError, TimeoutError):
                messages = []
            await self.slots.release(reserved - len(messages))
            # Let a loop woken by this release reserve before this one asks again
            # (otherwise one loop can starve the others of slots).
            await asyncio.sleep(0)
            for msg in messages:
                task = asyncio.create_task(
                    self._execute(msg, admin=None if agent_work else self._admin)
                )
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)

    async def _admin(self, command: AdminCommand) -> None:
        if command.data.target_worker_id != self.worker_id:
            log.warning(
                "ignoring %s for worker %r on %r's subject",
                command.type,
                command.data.target_worker_id,
                self.worker_id,
            )
            return
        if isinstance(command, CommandReloadPlugins):
            await self.plugins.reload(command)
            return
        data = command.data
        log.info("admin: %s (%s)", data.action, data.reason or "no reason given")
        if data.action == "evict":
            self.force_stop = data.force
            self.stop()
            return
        self.accepting.clear() if data.action == "suspend" else self.accepting.set()
        try:
            await self.lease.set_suspended(data.action == "suspend")
        except LeaseLostError as exc:
            self._on_lease_lost(exc)

    def _on_lease_lost(self, exc: LeaseLostError) -> None:
        self.lease_lost = exc
        self.stop()

    async def _execute(
        self, msg: Any, admin: Callable[[AdminCommand], Awaitable[None]] | None
    ) -> None:
        try:
            await Execution(
                self.store,
                self.worker,
                msg,
                worker_id=self.worker_id,
                settings=self.settings,
                admin=admin,
                plugins=self.plugins.host,
            ).run()
        except Exception:
            # The command stays unacked and is redelivered after ack_wait (G1).
            log.exception(
                "run on message %s failed in the runtime; it will be redelivered",
                msg.metadata.sequence.stream,
            )
        finally:
            await self.slots.release()

    async def _drain(self) -> None:
        if self.in_flight:
            log.info(
                "draining %d in-flight runs (up to %.1fs)",
                len(self.in_flight),
                self.settings.drain_timeout,
            )
            timeout = 0 if self.force_stop else self.settings.drain_timeout
            _done, pending = await asyncio.wait(set(self.in_flight), timeout=timeout)
            if pending:
                log.warning(
                    "%d runs still running at the drain deadline: left unacknowledged, "
                    "another worker takes them after the ack wait",
                    len(pending),
                )
                for task in pending:
                    task.cancel()
        await self._announce_stop()

    async def _announce_start(self) -> None:
        await self.store.append(
            WorkerStarted(
                worker_id=self.worker_id,
                data=WorkerStartedData(
                    agent_types=self.agent_types,
                    max_concurrency=self.settings.max_concurrency,
                    hostname=socket.gethostname()[:255],
                    pid=os.getpid(),
                ),
            )
        )

    async def _announce_stop(self) -> None:
        await self.store.append(
            WorkerStopped(worker_id=self.worker_id, data=WorkerStoppedData(reason="shutdown"))
        )


__all__ = ["Slots", "WorkerRuntime", "consumer_name", "worker_consumer_name"]
