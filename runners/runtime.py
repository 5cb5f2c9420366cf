"""The worker runtime: durable pull consumers per agent type, shared by every worker of
that type (competing consumers), with a worker fetching only as many commands as it has
free slots, so no command waits in one worker's buffer while another worker is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.client import JetStreamContext

from eventstore.catalog import WorkerStarted, WorkerStartedData, WorkerStopped, WorkerStoppedData
from eventstore.store import EventStore
from eventstore.subjects import agent_type_subject, encode_token
from runners.execution import Execution
from runners.settings import WorkerSettings
from runners.worker import GatewayWorker

log = logging.getLogger(__name__)


def consumer_name(agent_type: str) -> str:
    """The durable consumer every worker of ``agent_type`` shares."""
    return "jl-agent-" + encode_token(agent_type).replace("~", "_7e_")


class Slots:
    """Free execution slots; a fetch reserves slots before it asks for messages."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._changed = asyncio.Condition()

    async def reserve(self, most: int) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self.free > 0)
            taken = min(most, self.free)
            self.free -= taken
            return taken

    async def release(self, count: int = 1) -> None:
        async with self._changed:
            self.free += count
            self._changed.notify_all()


class WorkerRuntime:
    def __init__(
        self, store: EventStore, worker: GatewayWorker, *, worker_id: str, settings: WorkerSettings
    ) -> None:
        self.store = store
        self.worker = worker
        self.worker_id = worker_id
        self.settings = settings
        self.slots = Slots(settings.max_concurrency)
        self.stopping = asyncio.Event()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.agent_types = list(worker.get_agent_types())
        if not self.agent_types:
            raise ValueError(f"{type(worker).__name__}.get_agent_types() returned no agent type")

    async def ensure_consumer(self, js: JetStreamContext, agent_type: str) -> None:
        config = api.ConsumerConfig(
            durable_name=consumer_name(agent_type),
            filter_subject=agent_type_subject(agent_type, self.store.settings.root),
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
        js = self.store.js
        subscriptions = []
        for agent_type in self.agent_types:
            await self.ensure_consumer(js, agent_type)
            subscriptions.append(
                await js.pull_subscribe_bind(
                    durable=consumer_name(agent_type), stream=self.store.settings.stream
                )
            )
        await self._announce_start()
        try:
            await asyncio.gather(*(self._fetch_loop(sub) for sub in subscriptions))
        finally:
            for subscription in subscriptions:
                with contextlib.suppress(NatsError):  # the connection may be gone already
                    await subscription.unsubscribe()
            await self._drain()

    async def _fetch_loop(self, subscription: Any) -> None:
        while not self.stopping.is_set():
            reserved = await self.slots.reserve(self.settings.fetch_batch)
            if self.stopping.is_set():
                await self.slots.release(reserved)
                return
            try:
                messages = await subscription.fetch(reserved, timeout=self.settings.fetch_wait)
            except (NatsTimeoutError, TimeoutError):
                messages = []
            await self.slots.release(reserved - len(messages))
            for msg in messages:
                task = asyncio.create_task(self._execute(msg))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)

    async def _execute(self, msg: Any) -> None:
        try:
            await Execution(
                self.store, self.worker, msg, worker_id=self.worker_id, settings=self.settings
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
            _done, pending = await asyncio.wait(
                set(self.in_flight), timeout=self.settings.drain_timeout
            )
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


__all__ = ["Slots", "WorkerRuntime", "consumer_name"]
