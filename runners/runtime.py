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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg
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
from runners.pull import PullFeed
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
    """Free execution slots. A pull request reserves slots before it asks for messages
    (``runners.pull``); a run gives its slot back when it ends."""

    def __init__(self, total: int) -> None:
        self.free = total
        self.closed = False
        self._changed = asyncio.Condition()

    async def reserve(
        self, most: int | Callable[[], int], least: Callable[[], int] | None = None
    ) -> int:
        """Wait until ``least()`` slots (default 1) are free and take up to ``most`` (or
        ``most()`` at that moment); 0 once the slots are closed. ``least`` is asked again
        on every change."""

        def ready() -> bool:
            return self.closed or self.free >= max(1, least() if least else 1)

        async with self._changed:
            await self._changed.wait_for(ready)
            if self.closed:
                return 0
            taken = min(most() if callable(most) else most, self.free)
            self.free -= taken
            return taken

    async def release(self, count: int = 1) -> None:
        if count == 0:
            return
        async with self._changed:
            self.free += count
            self._changed.notify_all()

    def take(self) -> None:
        """Take a slot without waiting, even the last one (a message nobody asked for)."""
        self.free -= 1

    async def poke(self) -> None:
        """Make waiting reservations ask ``least()`` again."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_free(self) -> bool:
        """Wait for a free slot and take it (a command that arrived without one); False,
        and nothing taken, once the slots are closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.free > 0 or self.closed)
            if self.closed:
                return False
            self.free -= 1
            return True

    async def close(self) -> None:
        """Wake every waiting request loop so it can notice the stop."""
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
        self.direct_slots = Slots(1)
        """One pull request at a time on the worker's direct subject."""
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
            self._closing = asyncio.get_running_loop().create_task(self._close_slots())

    async def _close_slots(self) -> None:
        await self.slots.close()
        await self.direct_slots.close()

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
        js = self.store.js
        feeds: list[PullFeed] = []
        for agent_type in self.agent_types:
            durable = consumer_name(agent_type)
            await self.ensure_consumer(js, durable, agent_type_subject(agent_type, root))
            feeds.append(self._feed(durable, self.slots, self._deliver_agent_work, self.accepting))
        durable = worker_consumer_name(self.worker_id)
        await self.ensure_consumer(js, durable, worker_subject(self.worker_id, root))
        # The direct subject has its own one-request pool: its commands are this worker's
        # alone (nothing waits here that another worker could run), and admin commands
        # must get through while every slot is busy. Its runs wait for a slot themselves.
        feeds.append(self._feed(durable, self.direct_slots, self._deliver_direct, None))
        try:
            await self._announce_start()
            await asyncio.gather(*(feed.run() for feed in feeds))
        finally:
            await self._drain()

    def _feed(
        self,
        durable: str,
        slots: Slots,
        deliver: Callable[[Msg], Awaitable[None]],
        accepting: asyncio.Event | None,
    ) -> PullFeed:
        return PullFeed(
            self.store.nc,
            stream=self.store.settings.stream,
            durable=durable,
            slots=slots,
            batch=min(self.settings.fetch_batch, self.settings.max_concurrency),
            expires=self.settings.fetch_wait,
            deliver=deliver,
            accepting=accepting,
            stopping=self.stopping,
        )

    async def _deliver_agent_work(self, msg: Msg) -> None:
        self._spawn(self._execute(msg, admin=None, slot_held=True))

    async def _deliver_direct(self, msg: Msg) -> None:
        self._spawn(self._execute(msg, admin=self._admin, slot_held=False))
        await self.direct_slots.release()  # ask for the next direct command at once

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
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
        self,
        msg: Msg,
        admin: Callable[[AdminCommand], Awaitable[None]] | None,
        *,
        slot_held: bool,
    ) -> None:
        held = slot_held

        async def take_slot() -> bool:
            nonlocal held
            held = await self._wait_for_slot(msg)
            return held

        try:
            await Execution(
                self.store,
                self.worker,
                msg,
                worker_id=self.worker_id,
                settings=self.settings,
                admin=admin,
                plugins=self.plugins.host,
                take_slot=None if slot_held else take_slot,
            ).run()
        except Exception:
            # The command stays unacked and is redelivered after ack_wait (G1).
            log.exception(
                "run on message %s failed in the runtime; it will be redelivered",
                msg.metadata.sequence.stream,
            )
        finally:
            if held:
                await self.slots.release()

    async def _wait_for_slot(self, msg: Msg) -> bool:
        """A direct run waits for a free slot; in-progress acks keep its command from
        being redelivered meanwhile. False when the worker stops first (the command
        stays unacked and is redelivered)."""
        waiting = asyncio.create_task(self.slots.wait_free())
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=self.settings.in_progress_interval)
            if done:
                return waiting.result()
            await msg.in_progress()

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
