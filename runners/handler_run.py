"""Running the user's handler for one delivery while its run is live: in-progress acks
so the command is not redelivered, the run's deadline, and a watch on the run's ``.end``
subject so a cancel written on any worker reaches the handler; plugin task hooks around
it. ``HandlerRun.handle`` returns the run's terminal event, ``SUSPENDED`` (the handler
parked the run, G5), ``CANCELLED`` (a forced cancel stopped it) or ``None`` (a retryable
failure, nak'ed for a later attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from eventstore.catalog import (
    ErrorInfo,
    RunCancelled,
    RunCompleted,
    RunCompletedData,
    RunDeadLettered,
    RunDeadLetteredData,
    RunFailed,
    RunFailedData,
)
from eventstore.codec import Undecodable, decode
from eventstore.envelope import Event
from eventstore.store import EventStore
from eventstore.subjects import run_end_subject
from runners.context import AgentContext
from runners.orchestration import RunSuspended
from runners.plugins import PluginHost
from runners.settings import WorkerSettings
from runners.worker import Command, GatewayWorker, Reply

log = logging.getLogger(__name__)

SUSPENDED = object()
"""What ``handle`` returns when the handler parked the run (``RunSuspended``)."""
CANCELLED = object()
"""What ``handle`` returns when a forced cancel stopped the handler."""


def completion(result: Any) -> RunCompletedData:
    if isinstance(result, Reply):
        return RunCompletedData(content=result.content, result=result.data)
    if result is None or isinstance(result, str):
        return RunCompletedData(content=result)
    return RunCompletedData(result=result)


class HandlerRun:
    """One call of ``worker.process_command`` for one delivery of a command."""

    def __init__(
        self,
        store: EventStore,
        worker: GatewayWorker,
        msg: Msg,
        *,
        attempt: int,
        settings: WorkerSettings,
        plugins: PluginHost,
    ) -> None:
        self.store = store
        self.worker = worker
        self.msg = msg
        self.attempt = attempt
        self.settings = settings
        self.plugins = plugins

    async def handle(
        self, command: Command, context: AgentContext, deadline: float | None
    ) -> Event | object | None:
        handler = asyncio.create_task(self._call_handler(command, context))
        heartbeat = _Heartbeat(self.msg, self.settings.in_progress_interval)
        watch = _EndWatch(self, command, context, handler)
        watch.start_later(self.settings.cancel_watch_delay)
        try:
            timeout = None if deadline is None else max(deadline, 0.0)
            done, _pending = await asyncio.wait({handler}, timeout=timeout)
            if not done:
                return await self._timed_out(context, handler)
            return handler.result()
        except asyncio.CancelledError:
            if context.cancelled:  # force-cancelled: the run's terminal event is in the log
                return CANCELLED
            raise
        finally:
            if not handler.done():  # the worker is draining or stopping
                handler.cancel()
            heartbeat.stop()
            await watch.stop()
            await context.steering_reader.stop()

    async def _call_handler(self, command: Command, context: AgentContext) -> Event | object | None:
        run_id = command.run_id
        try:
            await self.plugins.call("on_task_start", command, context, run_id=run_id)
            try:
                result = await self.worker.process_command(command, context)
            except RunSuspended:
                return SUSPENDED
            except Exception as exc:  # noqa: BLE001 - any handler failure becomes an event
                await self.plugins.call("on_task_error", command, context, exc, run_id=run_id)
                return await self._failure(context, exc)
            await self.plugins.call("on_task_complete", command, context, result, run_id=run_id)
        except RunSuspended:
            return SUSPENDED
        return RunCompleted(**context.envelope(), data=completion(result))

    async def _timed_out(self, context: AgentContext, handler: asyncio.Task[Any]) -> Event:
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await handler
        return RunFailed(
            **context.envelope(),
            data=RunFailedData(
                error=ErrorInfo(type="Timeout", message="the run passed its deadline"),
                code="timeout",
                retryable=False,
            ),
        )

    async def on_end_event(
        self,
        event: Event | Undecodable,
        command: Command,
        context: AgentContext,
        handler: asyncio.Task[Any],
    ) -> None:
        """A ``run.cancelled`` written by a cancel (on any worker) sets ``ctx.cancelled``,
        and a forced one cancels the handler at its next await."""
        if not isinstance(event, RunCancelled):
            return
        first = not context.cancelled
        context.mark_cancelled()
        if event.data.mode == "force":
            handler.cancel()
        if first:
            reason = event.data.reason or f"cancelled ({event.data.mode})"
            await self.cancel_hook(command, context, reason)

    async def cancel_hook(self, command: Command, context: AgentContext, reason: str) -> None:
        """``on_task_cancel``, at most once per run in this process (the worker running
        the handler may also be the one that takes the ``command.cancel``)."""
        if not _first_cancel_notice(command.run_id):
            return
        # A task of its own: a slow hook must not hold up the subscription's callbacks.
        task = asyncio.create_task(
            self.plugins.call("on_task_cancel", command, context, reason, run_id=command.run_id)
        )
        _HOOK_TASKS.add(task)
        task.add_done_callback(_HOOK_TASKS.discard)

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


class _Heartbeat:
    """In-progress acks every ``interval`` while the handler runs (a timer chain, not a
    task per run: most runs end before the first beat)."""

    def __init__(self, msg: Msg, interval: float) -> None:
        self._msg = msg
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._beat: asyncio.Task[None] | None = None
        self._timer = self._loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        if self._beat is None or self._beat.done():
            self._beat = self._loop.create_task(self._send())
        self._timer = self._loop.call_later(self._interval, self._tick)

    async def _send(self) -> None:
        try:
            await self._msg.in_progress()
        except NatsError as exc:  # the next beat tries again; the ack wait is 3 beats
            log.debug("in-progress ack not sent: %s", exc)

    def stop(self) -> None:
        self._timer.cancel()
        # A beat in flight may land after the ack: the server ignores it then.


class _EndWatch:
    """Follows the run's ``.end`` subject once the handler has run ``cancel_watch_delay``
    seconds; on subscribing it also reads the subject's last event, so a cancel written
    before the subscription is not missed."""

    def __init__(
        self,
        run: HandlerRun,
        command: Command,
        context: AgentContext,
        handler: asyncio.Task[Any],
    ) -> None:
        self._run = run
        self._command = command
        self._context = context
        self._handler = handler
        self._timer: asyncio.TimerHandle | None = None
        self._starting: asyncio.Task[None] | None = None
        self._subscription: Any = None

    def start_later(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._start)

    def _start(self) -> None:
        self._starting = asyncio.get_running_loop().create_task(self._subscribe())

    async def _on_message(self, msg: Msg) -> None:
        await self._apply(decode(msg.data, seq=0, subject=msg.subject))

    async def _apply(self, event: Event | Undecodable) -> None:
        await self._run.on_end_event(event, self._command, self._context, self._handler)

    async def _subscribe(self) -> None:
        store = self._run.store
        context = self._context
        subject = run_end_subject(context.session_id, context.run_id, store.settings.root)
        self._subscription = await store.nc.subscribe(subject, cb=self._on_message)
        record = await store.last_on_subject(subject)
        if record is not None:
            await self._apply(record[1])

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, NatsError):
                await self._starting
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()


_CANCEL_NOTICES: dict[str, None] = {}
"""Runs whose ``on_task_cancel`` this process has called (insertion-ordered, bounded)."""
_CANCEL_NOTICES_LIMIT = 10_000
_HOOK_TASKS: set[asyncio.Task[None]] = set()
"""Hook calls in flight (a reference keeps a task from being collected mid-call)."""


def _first_cancel_notice(run_id: str) -> bool:
    if run_id in _CANCEL_NOTICES:
        return False
    if len(_CANCEL_NOTICES) >= _CANCEL_NOTICES_LIMIT:
        del _CANCEL_NOTICES[next(iter(_CANCEL_NOTICES))]
    _CANCEL_NOTICES[run_id] = None
    return True


__all__ = ["CANCELLED", "SUSPENDED", "HandlerRun", "completion"]
