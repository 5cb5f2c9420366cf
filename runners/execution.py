"""Executing one delivered command: the run lifecycle (G1, G2, G6).

``run.started`` (attempt = delivery count), the handler (``runners.handler_run``: with
in-progress acks while it works), then exactly one terminal event on the run's ``.end``
subject, published with ``Nats-Expected-Last-Subject-Sequence: 0``: a second writer
(redelivery, zombie) is refused by the server and stops quietly. The command is acked
only after its terminal event is stored, so a worker killed at any point leaves the
command to be redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from eventstore.catalog import (
    CommandAsk,
    CommandCancel,
    CommandReloadPlugins,
    CommandResume,
    CommandSteer,
    CommandWorker,
    ErrorInfo,
    IngestRejected,
    IngestRejectedData,
    RunDeadLettered,
    RunDeadLetteredData,
    RunStarted,
    RunStartedData,
)
from eventstore.codec import Undecodable, decode
from eventstore.envelope import Event
from eventstore.errors import ConcurrencyError
from eventstore.store import EventStore
from runners.cancel import cancel_run, cancel_tree
from runners.context import AgentContext
from runners.faults import fault_point
from runners.handler_run import CANCELLED, SUSPENDED, HandlerRun, completion
from runners.journal import Journal, load_journal, load_run
from runners.plugins import PluginHost
from runners.resumption import answer_for, driver_of, record_answer
from runners.settings import WorkerSettings
from runners.steering import ask_from_steer, route_steer
from runners.timers import arm_deadline, deadline_at, disarm, expire, has_timers, is_deadline
from runners.wakeup import notify_parent, started_by
from runners.worker import Command, GatewayWorker

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
        group_id=event.group_id,
    )


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
        take_slot: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.take_slot = take_slot
        """For a command that arrived without a reserved slot (the direct subject): waits
        for one; False when the worker stops first."""
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
        if self.take_slot is not None and not await self.take_slot():
            return  # stopping: left unacked, redelivered after the ack wait
        if isinstance(item, CommandAsk):
            await self._run_ask(item)
        elif isinstance(item, CommandResume):
            await self._run_resume(item)
        elif isinstance(item, CommandCancel):
            await self._run_cancel(item)
        elif isinstance(item, CommandSteer):
            await self._run_steer(item)
        else:
            await self._reject(item)

    # -- command.ask -------------------------------------------------------------------

    async def _run_ask(self, item: CommandAsk) -> None:
        command = command_of(item)
        ended, journal = await load_run(self.store, command.session_id, command.run_id)
        if ended is not None:
            log.info("run %s already ended; acking its redelivered command", command.run_id)
            if item.data.reply_to is not None:
                # The worker that ended it may have died before waking the parent.
                await notify_parent(self.store, item.data.reply_to, command.run_id, ended)
            await self.msg.ack()
            return
        if driver_of(journal, item.id) != item.id:
            log.info("run %s has moved past its command; acking a late copy", command.run_id)
            await self.msg.ack()
            return
        await self._execute(item, command, journal)

    # -- command.resume ----------------------------------------------------------------

    async def _run_resume(self, item: CommandResume) -> None:
        session_id, run_id = item.session_id or "", item.run_id or ""
        if is_deadline(item):
            await self._run_deadline(item)
            return
        ended, journal = await load_run(self.store, session_id, run_id)
        if not run_id or ended is not None:
            log.info("resume %s for run %s: the run has ended; ignored", item.id, run_id)
            await self.msg.ack()
            return
        ask = await started_by(self.store, journal)
        if ask is None:
            log.warning("resume %s: run %s has no recorded start; ignored", item.id, run_id)
            await self.msg.ack()
            return
        command = command_of(ask)
        if driver_of(journal, ask.id) != item.id:
            probe = self._context(command, journal, item.id)
            answer = await answer_for(probe, journal, item)
            if answer is None and item.data.reason == "user_reply":
                # A person's reply that answers nothing: say so in the log (G6).
                await self._reject(item, f"run {run_id} is not waiting for this reply")
                return
            if answer is None or not await record_answer(probe, journal, answer):
                await self.msg.ack()
                return
            fault_point("after_resumed")
        await self._execute(ask, command, journal, driver_id=item.id)

    async def _run_deadline(self, item: CommandResume) -> None:
        """A run's deadline timer fired (runners.timers): fail it unless it has ended.
        If it is running again somewhere, its worker's own deadline falls at this same
        moment; whichever terminal event is first stands (G2)."""
        session_id, run_id = item.session_id or "", item.run_id or ""
        journal = await load_journal(self.store, session_id, run_id)
        ask = await started_by(self.store, journal)
        if ask is not None:
            context = self._context(command_of(ask), journal, item.id)
            await expire(self.store, context.envelope(), ask, journal)
        await self.msg.ack()

    # -- command.cancel ----------------------------------------------------------------

    async def _run_cancel(self, item: CommandCancel) -> None:
        data = item.data
        report = await cancel_run(
            self.store,
            item.session_id or "",
            data.target_run_id,
            mode=data.mode,
            reason=data.reason,
            requested_by=data.requested_by or item.user_code,
            causation_id=item.id,
        )
        log.info(
            "cancel %s: %d runs cancelled, %d had ended",
            data.target_run_id,
            len(report.cancelled),
            len(report.already_ended),
        )
        if data.target_run_id in report.cancelled and self.plugins.plugins:
            await self._notify_cancel(item)
        await self.msg.ack()

    async def _notify_cancel(self, item: CommandCancel) -> None:
        """``on_task_cancel`` for the run a ``command.cancel`` ended (a run that never
        started has no command to pass and gets no hook)."""
        session_id, run_id = item.session_id or "", item.data.target_run_id
        journal = await load_journal(self.store, session_id, run_id)
        ask = await started_by(self.store, journal)
        if ask is None:
            return
        command = command_of(ask)
        context = self._context(command, journal, item.id)
        context.mark_cancelled()
        reason = item.data.reason or f"cancelled ({item.data.mode})"
        await self._handler_run().cancel_hook(command, context, reason)

    # -- command.steer -----------------------------------------------------------------

    async def _run_steer(self, item: CommandSteer) -> None:
        # Joins a live run's inbox (runners.steering), else starts a run like an ask.
        if await route_steer(self.store, item, self.seq, enabled=self.worker.steering):
            await self.msg.ack()
            return
        await self._run_ask(ask_from_steer(item))

    # -- executing the handler ---------------------------------------------------------

    def _handler_run(self) -> HandlerRun:
        return HandlerRun(
            self.store,
            self.worker,
            self.msg,
            attempt=self.attempt,
            settings=self.settings,
            plugins=self.plugins,
        )

    def _context(self, command: Command, journal: Journal, driver_id: str) -> AgentContext:
        return AgentContext(
            self.store,
            command,
            worker_id=self.worker_id,
            attempt=self.attempt,
            settings=self.settings,
            journal=journal,
            driver_id=driver_id,
            plugins=self.plugins,
        )

    async def _execute(
        self, ask: CommandAsk, command: Command, journal: Journal, driver_id: str | None = None
    ) -> None:
        driver = driver_id or ask.id
        context = self._context(command, journal, driver)
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
                ask,
                journal,
            )
            return
        started = RunStarted(
            id=f"{command.run_id}:started:{driver}:{self.attempt}",
            **context.envelope(),
            data=RunStartedData(attempt=self.attempt, command_seq=ask_seq(journal, self.seq)),
        )
        # The handler starts while run.started waits for its acknowledgement (one round
        # trip less before the first chunk). Its PUB is queued on the connection before
        # the handler can publish anything, so the log keeps the order; a refused
        # run.started still fails this execution, before any terminal event is written.
        started_ack = asyncio.ensure_future(self.store.append(started))
        await asyncio.sleep(0)  # let it queue its PUB before the handler task exists
        try:
            terminal = await self._handler_run().handle(
                command, context, self._deadline(ask, journal)
            )
        finally:
            await started_ack
        if terminal is SUSPENDED:
            await context.flush()
            limit = ask.data.timeout_s or self.settings.run_timeout or None
            deadline = deadline_at(limit, journal, started.time)
            if deadline is not None:  # nothing measures a parked run's deadline but a timer
                await arm_deadline(self.store, context.envelope(), deadline)
            await self.msg.ack()  # the wait is in the journal; a resume continues the run
        elif terminal is CANCELLED:
            if self.worker.steering:
                await context.steering_reader.close()
            await self.msg.ack()
        elif isinstance(terminal, Event):
            await self._finish(context, terminal, ask, journal)

    def _deadline(self, ask: CommandAsk, journal: Journal) -> float | None:
        """Seconds left before the run's deadline (measured from its first start)."""
        limit = ask.data.timeout_s or self.settings.run_timeout or None
        if limit is None:
            return None
        first = journal.first_start
        if first is None:
            return limit
        return limit - (datetime.now(UTC) - first.time).total_seconds()

    async def _finish(
        self, context: AgentContext, terminal: Event, ask: CommandAsk, journal: Journal
    ) -> None:
        await context.flush()
        fault_point("before_terminal")
        if self.worker.steering:  # unread inbox items are recorded before the end
            await context.steering_reader.close()
        try:
            await self.store.append(terminal, expected_last_subject_seq=0)
        except ConcurrencyError:
            # Another delivery (a redelivery, a zombie, a cancel) ended the run first.
            log.info("run %s was ended by another writer; dropping this attempt", context.run_id)
        else:
            limit = ask.data.timeout_s or self.settings.run_timeout or None
            if has_timers(journal, limit):
                await disarm(self.store, context.session_id, context.run_id)
            if terminal.type != "run.completed":
                # A failed or timed-out run takes its live children with it.
                await cancel_tree(
                    self.store,
                    context.session_id,
                    context.run_id,
                    reason=f"parent run ended {terminal.type.removeprefix('run.')}",
                    requested_by=context.run_id,
                )
            if ask.data.reply_to is not None:
                await notify_parent(self.store, ask.data.reply_to, context.run_id, terminal)
        if self.worker.steering:
            await context.steering_reader.inbox.forget()
        await self.msg.ack()

    async def _reject(self, item: Event | Undecodable, why: str | None = None) -> None:
        if why is not None:
            reason = why
        elif isinstance(item, Undecodable):
            reason = item.reason
        elif item.type.startswith("command."):
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


def ask_seq(journal: Journal, delivered_seq: int) -> int:
    """The stream sequence of the run's ``command.ask`` (a resume's own seq is not it)."""
    first = journal.first_start
    if first is not None and first.data.command_seq:
        return first.data.command_seq
    return delivered_seq


__all__ = ["Execution", "command_of", "completion"]
