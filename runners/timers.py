"""Durable timers of parked runs (G5): JetStream message schedules (ADR-51).

A parked run holds no coroutine, so nothing in a worker can measure its timeouts. When a
run parks on a step with a timeout (``dispatch_group(timeout=)``, ``ask_user(timeout=)``,
``call_agent(timeout=)``) or with a run deadline, the worker stores a *schedule*: a
message on ``<root>_timers.<session>.<run>.<name>`` with ``Nats-Schedule: @at <time>``
whose body is a ``command.resume`` (reason ``timeout``) and whose
``Nats-Schedule-Target`` is the run's agent-type subject. At that time the server
publishes the body there, removes the schedule, and any worker of the agent type takes
the resume like any other: the timer outlives every worker.

A step timer is disarmed (its schedule purged from the stream) when the step's real
answer is recorded, and all of a run's timers when the worker running it writes its
terminal event, or when a cancel or the deadline ends it while it is parked
(:mod:`runners.run_sweep`), so an audit of a finished run shows no timeout that did
nothing. Disarming is best effort: a timer that still fires (the purge failed, or the run
was ended in the moment it was resumed) finds nothing to time out and is acknowledged
without effect, by the same compare-and-set that makes every wake-up exactly-once
(``run.resumed`` appended with an expected last sequence). Arming is idempotent
(``Nats-Msg-Id``), so a replay or a redelivered command arms the same timer again at no
cost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from eventstore.catalog import (
    CommandAsk,
    CommandResume,
    CommandResumeData,
    ErrorInfo,
    RunFailed,
    RunFailedData,
)
from eventstore.codec import encode
from eventstore.errors import AppendError, ConcurrencyError
from eventstore.publish import MSG_ID, Outgoing, parse_pub_ack
from eventstore.routing import subject_for
from eventstore.store import EventStore
from runners.cancel import cancel_tree
from runners.journal import Journal, terminal_of
from runners.run_sweep import sweep_parked_run
from runners.timer_purge import disarm, timer_subject
from runners.wakeup import notify_parent

log = logging.getLogger(__name__)

SCHEDULE: Final = "Nats-Schedule"
SCHEDULE_TARGET: Final = "Nats-Schedule-Target"
DEADLINE: Final = "deadline"
"""Name of a run's deadline timer (a step timer is named ``w<step>``)."""


def step_timer_id(run_id: str, step: int) -> str:
    """Id of the ``command.resume`` the timer of step ``step`` fires."""
    return f"timeout-{run_id}-w{step}"


def deadline_timer_id(run_id: str) -> str:
    return f"deadline-{run_id}"


def _at(moment: datetime) -> str:
    """RFC 3339 in UTC, as ``@at`` wants it (the server fires a past time at once)."""
    return "@at " + moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def arm(store: EventStore, name: str, at: datetime, resume: CommandResume) -> None:
    """Store a schedule that publishes ``resume`` to its routing subject at ``at``."""
    session_id, run_id = resume.session_id or "", resume.run_id or ""
    outgoing = Outgoing(
        f"timer-{resume.id}", timer_subject(store, session_id, run_id, name), encode(resume)
    )
    headers = {
        MSG_ID: outgoing.event_id,
        SCHEDULE: _at(at),
        SCHEDULE_TARGET: subject_for(resume, store.settings.root),
    }
    settings = store.settings
    delay = settings.append_retry_backoff
    for attempt in range(settings.append_retries + 1):
        try:
            reply = await store.nc.request(
                outgoing.subject,
                outgoing.body,
                timeout=settings.request_timeout,
                headers=headers,
            )
        except (TimeoutError, NatsTimeoutError, NoRespondersError):
            log.debug("arming %s: attempt %d unanswered", outgoing.event_id, attempt + 1)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.request_timeout)
            continue
        parse_pub_ack(outgoing, reply.data, None)
        log.debug("armed %s for %s", outgoing.event_id, headers[SCHEDULE])
        return
    # Not armed, and the caller must not ack its command: a redelivery arms it again.
    raise AppendError(outgoing.event_id, "no acknowledgement while arming a timer")


def has_timers(journal: Journal, limit: float | None) -> bool:
    """Whether the run may have armed a timer: a wait with a timeout, or any wait while
    it has a deadline (a deadline is armed when the run first parks)."""
    if limit and journal.waits:
        return True
    return any(event.data.timeout_s for _seq, event in journal.waits.values())


async def arm_step_timer(
    store: EventStore,
    envelope: dict[str, Any],
    step: int,
    at: datetime,
    *,
    group_id: str | None = None,
) -> None:
    """Arm the timeout of step ``step`` of the run ``envelope`` describes."""
    run_id = envelope["run_id"]
    resume = CommandResume(
        id=step_timer_id(run_id, step),
        session_id=envelope["session_id"],
        run_id=run_id,
        agent_type=envelope["agent_type"],
        # The projections mark a group timed out from a timeout resume naming it.
        group_id=group_id,
        trace_id=envelope.get("trace_id"),
        user_code=envelope.get("user_code"),
        causation_id=f"{run_id}:waiting:{step}",
        data=CommandResumeData(reason="timeout", result={"step": step}),
    )
    await arm(store, f"w{step}", at, resume)


async def arm_deadline(store: EventStore, envelope: dict[str, Any], at: datetime) -> None:
    """Arm the deadline of a run that is parking (it fails the run if it is not over)."""
    run_id = envelope["run_id"]
    resume = CommandResume(
        id=deadline_timer_id(run_id),
        session_id=envelope["session_id"],
        run_id=run_id,
        agent_type=envelope["agent_type"],
        trace_id=envelope.get("trace_id"),
        user_code=envelope.get("user_code"),
        causation_id=run_id,
        data=CommandResumeData(reason="timeout", result={DEADLINE: True}),
    )
    await arm(store, DEADLINE, at, resume)


def deadline_at(limit: float | None, journal: Journal, started: datetime) -> datetime | None:
    """When the run's deadline passes: ``limit`` seconds after its first start."""
    if not limit:
        return None
    first = journal.first_start
    return (first.time if first is not None else started) + timedelta(seconds=limit)


def is_deadline(resume: CommandResume) -> bool:
    result = resume.data.result
    if resume.data.reason != "timeout" or not isinstance(result, dict):
        return False
    return result.get(DEADLINE) is True


def timer_step(resume: CommandResume) -> int | None:
    """The step a timeout resume times out, if it is a step timer."""
    result = resume.data.result
    if resume.data.reason != "timeout" or not isinstance(result, dict):
        return None
    step = result.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


async def expire(
    store: EventStore, envelope: dict[str, Any], ask: CommandAsk, journal: Journal
) -> bool:
    """End a run whose deadline passed while it was parked: ``run.failed`` (code
    ``timeout``), its subtree cancelled, its waiting parent woken. False if it had ended."""
    terminal = RunFailed(
        id=f"{envelope['run_id']}:deadline",
        **envelope,
        data=RunFailedData(
            error=ErrorInfo(type="Timeout", message="the run passed its deadline while waiting"),
            code="timeout",
            retryable=False,
        ),
    )
    session_id, run_id = envelope["session_id"], envelope["run_id"]
    try:
        await store.append(terminal, expected_last_subject_seq=0)
    except ConcurrencyError:
        existing = await terminal_of(store, session_id, run_id)
        if existing is None or existing.id != terminal.id:
            return False
        # Ours, from a delivery that died before it finished: finish what it started.
    await sweep_parked_run(store, session_id, run_id, journal)  # timers, unread steers
    await cancel_tree(
        store,
        session_id,
        run_id,
        reason="parent run ended failed (deadline)",
        requested_by=run_id,
    )
    if ask.data.reply_to is not None:
        await notify_parent(store, ask.data.reply_to, run_id, terminal)
    log.info("run %s passed its deadline while parked; failed", run_id)
    return True


__all__ = [
    "arm",
    "arm_deadline",
    "arm_step_timer",
    "deadline_at",
    "deadline_timer_id",
    "disarm",
    "expire",
    "has_timers",
    "is_deadline",
    "step_timer_id",
    "timer_step",
]
