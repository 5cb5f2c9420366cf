"""The end-of-run chores for a run that ended while parked (cancelled, or failed by its
deadline), which no handler will ever run again to do them.

A run that ends on its worker (``Execution._finish``) records its unread steering
messages as ``steering.dropped`` and disarms its timers itself. A parked run holds no
coroutine: when a cancel or its deadline ends it, nobody would, so its timers would fire
(harmlessly, but visibly in an audit) and its unread steers would stay in the inbox with
no record of what became of them. The path that ended it calls :func:`sweep_parked_run`.

Each unread steer is recorded as dropped with a compare-and-set on the run's ``.out``
subject, chained from the journal the caller read. If a worker resumes the run meanwhile
(its ``run.resumed`` moved the subject on), the sweep stops: that worker's handler sees
the run ended and its own end records the rest. Items this sweep already claimed
(``dropping``) are never handed to that handler, and the worker's end records them under
the same deterministic ids, so each steer still ends exactly one way.
"""

from __future__ import annotations

import logging
from typing import Any

from eventstore.catalog import SteeringDropped, SteeringDroppedData
from eventstore.errors import ConcurrencyError
from eventstore.store import EventStore
from runners.journal import Journal
from runners.steering import Inbox
from runners.timer_purge import disarm

log = logging.getLogger(__name__)

DROP_REASON = "run_ended"
"""The reason a run's own end gives (:mod:`runners.steering_reader`), so readers see
one reason for 'the run ended before reading it' whichever path ended it."""


class _Resumed(Exception):
    """The run's ``.out`` subject moved on: a worker resumed it while the sweep ran."""


async def sweep_parked_run(
    store: EventStore, session_id: str, run_id: str, journal: Journal
) -> None:
    """Disarm the timers and drop the unread steers of a run that ended while parked.

    ``journal`` is the run's journal as read before it was ended. Timers exist only for
    a run that parked at some point; steers are dropped only for a run parked now: a run
    that is running has a worker that does this at its end.
    """
    if not journal.waits:
        return
    await disarm(store, session_id, run_id)
    if journal.open_wait() is None:
        return
    inbox = Inbox(store, session_id, run_id)
    if not await inbox.exists():
        return
    injected = {event.data.steer_event_id for event in journal.steering}
    recorder = _DropRecorder(store, journal)
    try:
        dropped = await inbox.close(injected, recorder.drop)
    except _Resumed:
        log.info("run %s was resumed while its end was swept; its worker finishes", run_id)
        return
    await inbox.forget()
    if dropped:
        log.info("run %s ended while parked with %d unread steering messages", run_id, dropped)


class _DropRecorder:
    """Appends ``steering.dropped`` events, each expecting the previous one's sequence."""

    def __init__(self, store: EventStore, journal: Journal) -> None:
        self.store = store
        self.run_id = journal.run_id
        self.last_seq = journal.last_seq
        start = journal.first_start
        self.envelope: dict[str, Any] = {
            "session_id": start.session_id if start else None,
            "run_id": journal.run_id,
            "agent_type": start.agent_type if start else None,
            "parent_run_id": start.parent_run_id if start else None,
            "root_run_id": (start.root_run_id if start else None) or journal.run_id,
            "group_id": start.group_id if start else None,
            "trace_id": start.trace_id if start else None,
            "user_code": start.user_code if start else None,
        }

    async def drop(self, value: dict[str, Any]) -> None:
        steer_id = str(value["steer_event_id"])
        event = SteeringDropped(
            **self.envelope,
            causation_id=steer_id,
            # The id a worker's own end would give it: either records it once (G3).
            id=f"{self.run_id}:steer-dropped:{steer_id}",
            data=SteeringDroppedData(
                steer_event_id=steer_id, reason=DROP_REASON, content=value.get("content")
            ),
        )
        try:
            result = await self.store.append(event, expected_last_subject_seq=self.last_seq)
        except ConcurrencyError as exc:
            raise _Resumed from exc
        if result.seq is not None and not result.duplicate:
            self.last_seq = result.seq


__all__ = ["DROP_REASON", "sweep_parked_run"]
