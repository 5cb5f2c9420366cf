"""Executing one delivered command: the run lifecycle (G1, G2, G6).

``run.started`` (attempt = delivery count), the handler with in-progress acks while it
works, then exactly one terminal event on the run's ``.end`` subject, published with
``Nats-Expected-Last-Subject-Sequence: 0``: a second writer (redelivery, zombie) is
refused by the server and stops quietly. The command is acked only after its terminal
event is stored, so a worker killed at any point leaves the command to be redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from eventstore.catalog import (
    CommandAsk,
    CommandReloadPlugins,
    CommandWorker,
    ErrorInfo,
    IngestRejected,
    IngestRejectedData,
    RunCompleted,
    RunCompletedData,
    RunDeadLettered,
    RunDeadLetteredData,
    RunFailed,
    RunFailedData,
    RunStarted,
    RunStartedData,
)
from eventstore.codec import Undecodable, decode
from eventstore.envelope import Event
from eventstore.errors import ConcurrencyError
from eventstore.store import EventStore
from eventstore.subjects import run_end_subject
from runners.context import AgentContext
from runners.plugins import PluginHost
from runners.settings import WorkerSettings
from runners.worker import Command, GatewayWorker, Reply

log = logging.getLogger(__name__)

AdminCommand = CommandWorker | CommandReloadPlugins


def command_of(event: CommandAsk) -> Command:
    # A foreign publisher may omit run_id: derive it from the command's (deterministic) id.
    run_id = event.run_id or f"run-{event.id}"
    parts = event.data.content
    content: Any = (
        parts
        if isinstance(parts, str)
        else [part.model_dump(mode="json", exclude_none=True) for part in parts]
    )
    return Command(
        run_id=run_id,
        session_id=event.session_id or "",
        agent_type=event.agent_type or "",
        content=content,
        metadata=dict(event.data.metadata),
        user_code=event.user_code,
        trace_id=event.trace_id,
        parent_run_id=event.parent_run_id,
        root_run_id=event.root_run_id,
        message_id=event.id,
    )


def completion(result: Any) -> RunCompletedData:
    if isinstance(result, Reply):
        return RunCompletedData(content=result.content, result=result.data)
    if result is None or isinstance(result, str):
        return RunCompletedData(content=result)
    return RunCompletedData(result=result)


class Execution:
    """One delivery of one command on one worker."""

    def __init__(
        self,
        store: EventStore,
        worker: GatewayWorker,
        msg: Msg,
        *,
        worker_id: str,
        settings: WorkerSettings,
        admin: Callable[[AdminCommand], Awaitable[None]] | None = None,
        plugins: PluginHost | None = None,
    ) -> None:
        self.store = store
        self.admin = admin
        """Handles ``command.worker`` / ``command.reload_plugins`` (only on the worker's
        own subject)."""
        self.plugins = plugins or PluginHost()
        """Task hooks; a failing or slow hook never changes the run's outcome."""
        self.worker = worker
        self.msg = msg
        self.worker_id = worker_id
        self.settings = settings
        meta = msg.metadata
        self.seq = meta.sequence.stream
        self.attempt = meta.num_delivered

    async def run(self) -> None:
        item = decode(
            self.msg.data,
            seq=self.seq,
            subject=self.msg.subject,
            max_size=self.store.settings.max_msg_size,
        )
        if isinstance(item, CommandWorker | CommandReloadPlugins) and self.admin is not None:
            # Acked first: an admin command is not replayed into a restarted worker.
            await self.msg.ack()
            await self.admin(item)
            return
        if not isinstance(item, CommandAsk):
            await self._reject(item)
            return
        command = command_of(item)
        end = run_end_subject(command.session_id, command.run_id, self.store.settings.root)
        if await self.store.last_on_subject(end) is not None:
            log.info("run %s already ended; acking its redelivered command", command.run_id)
            await self.msg.ack()
            return
        context = AgentContext(
            self.store,
            command,
            worker_id=self.worker_id,
            attempt=self.attempt,
            settings=self.settings,
        )
        if self.attempt > self.settings.max_deliver:
            # Every allowed attempt died with its worker: end the run here instead.
            await self._finish(
                context,
                RunDeadLettered(
                    **context.envelope(),
                    data=RunDeadLetteredData(
                        attempts=self.settings.max_deliver,
                        last_error=ErrorInfo(
                            type="WorkerLost", message="the worker stopped during every attempt"
                        ),
                    ),
                ),
            )
            return
        await self.store.append(
            RunStarted(
                id=f"{command.run_id}:started:{self.attempt}",
                **context.envelope(),
                data=RunStartedData(attempt=self.attempt, command_seq=self.seq),
            )
        )
        terminal = await self._handle(command, context)
        if terminal is not None:
            await self._finish(context, terminal)

    async def _handle(self, command: Command, context: AgentContext) -> Event | None:
        heartbeat = asyncio.create_task(self._keep_alive())
        run_id = command.run_id
        try:
            await self.plugins.call("on_task_start", command, context, run_id=run_id)
            try:
                result = await self.worker.process_command(command, context)
            except Exception as exc:  # noqa: BLE001 - any handler failure becomes an event
                await self.plugins.call("on_task_error", command, context, exc, run_id=run_id)
                return await self._failure(context, exc)
            await self.plugins.call("on_task_complete", command, context, result, run_id=run_id)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return RunCompleted(**context.envelope(), data=completion(result))

    async def _failure(self, context: AgentContext, exc: Exception) -> Event | None:
        error = ErrorInfo(type=type(exc).__name__, message=str(exc)[:2000] or type(exc).__name__)
        retryable = bool(getattr(exc, "retryable", False))
        log.warning(
            "run %s attempt %d failed: %s: %s",
            context.run_id,
            self.attempt,
            error.type,
            error.message,
        )
        if retryable and self.attempt < self.settings.max_deliver:
            await context.flush()
            await self.msg.nak(delay=self.settings.retry_delay)
            return None
        if retryable:
            return RunDeadLettered(
                **context.envelope(),
                data=RunDeadLetteredData(attempts=self.attempt, last_error=error),
            )
        return RunFailed(
            **context.envelope(),
            data=RunFailedData(error=error, code="runner.exception", retryable=False),
        )

    async def _finish(self, context: AgentContext, terminal: Event) -> None:
        await context.flush()
        try:
            await self.store.append(terminal, expected_last_subject_seq=0)
        except ConcurrencyError:
            # Another delivery (a redelivery or a zombie) ended the run first: stop quietly.
            log.info("run %s was ended by another worker; dropping this attempt", context.run_id)
        await self.msg.ack()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.settings.in_progress_interval)
            await self.msg.in_progress()

    async def _reject(self, item: Event | Undecodable) -> None:
        if isinstance(item, Undecodable):
            reason = item.reason
        elif item.type.startswith("command."):
            # cancel / steer / resume belong to the orchestration layer, not built yet
            reason = f"{item.type} is not handled by workers yet"
        else:
            reason = f"{item.type} is not a command a worker runs"
        body = self.msg.data[:512].decode("utf-8", errors="replace")
        await self.store.append(
            IngestRejected(
                id=f"rejected-{self.store.settings.stream}-{self.seq}",
                worker_id=self.worker_id,
                data=IngestRejectedData(
                    subject=self.msg.subject, seq=self.seq, reason=reason, body_excerpt=body
                ),
            )
        )
        log.warning("rejected message %d on %s: %s", self.seq, self.msg.subject, reason)
        await self.msg.ack()


__all__ = ["Execution", "command_of", "completion"]
