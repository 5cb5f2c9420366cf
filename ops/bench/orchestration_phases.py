"""Where a jetledger fan-out's time went, read back from the log after it ended.

Every event carries the wall-clock ``time`` its producer stamped (client, parent worker
or child worker; one machine, so one clock). For one fan-out (a parent run and the
members it dispatched) the phases are: the parent's command to its last child command
(``dispatch``), to the last child's terminal event (``children``), to the parent's own
terminal event (``gather``); plus how many ``command.resume`` wake-ups the children
published for the parent and how many times the parent's handler was resumed.

Two more figures explain the ``gather`` phase: how many of those wake-ups arrived after the
parent had recorded ``run.waiting`` (each of them, until the group is complete, reads every
member's terminal event in ``runners.outcomes.group_state`` and re-publishes the command of
every member not yet ended), and what one such read of the finished group costs here
(``group_read``: one ``group_state`` call from the benchmark's own process, median of 3).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from datetime import datetime

from eventstore.catalog import GroupDispatched
from eventstore.envelope import Event
from eventstore.routing import TERMINAL_TYPES
from eventstore.store import EventStore
from runners.outcomes import group_state


@dataclass(frozen=True, slots=True)
class Phases:
    dispatch: float
    children: float
    gather: float
    resume_commands: int
    resumed: int
    resumes_after_wait: int
    group_read: float

    def __str__(self) -> str:
        return (
            f"dispatch {self.dispatch:.3f}s, children {self.children:.3f}s, "
            f"gather {self.gather:.3f}s, {self.resume_commands} command.resume, "
            f"{self.resumed} run.resumed, {self.resumes_after_wait} after run.waiting, "
            f"group_state read {self.group_read * 1000:.1f} ms"
        )

    @staticmethod
    def summary(phases: list[Phases]) -> str:
        def median(values: list[float]) -> str:
            return f"{statistics.median(values):.3f}"

        dispatch = median([p.dispatch for p in phases])
        resumes = statistics.median([p.resume_commands for p in phases])
        late = statistics.median([p.resumes_after_wait for p in phases])
        group_read = statistics.median([p.group_read for p in phases])
        return (
            f"dispatch (parent command -> last child command) {dispatch}"
            f", children (-> last child end) {median([p.children for p in phases])}"
            f", gather (-> parent end) {median([p.gather for p in phases])}"
            f"; command.resume per fan-out {resumes:.0f}"
            f", run.resumed {statistics.median([p.resumed for p in phases]):.0f}"
            f", wake-ups after run.waiting {late:.0f}"
            f"; one group_state read of the whole group {group_read * 1000:.1f} ms"
        )


async def phases_of(store: EventStore, first_seq: int, session_id: str, run_id: str) -> Phases:
    """The phases of the fan-out ``run_id``, from its events at ``first_seq`` and later."""
    events: list[Event] = []
    records = store.records(first_seq, until_seq=await store.last_seq())
    async with contextlib.aclosing(records):
        async for record in records:
            if isinstance(record.item, Event) and record.item.session_id == session_id:
                events.append(record.item)

    def times(predicate: object) -> list[datetime]:
        return [e.time for e in events if callable(predicate) and predicate(e)]

    def is_child(event: Event) -> bool:
        return event.parent_run_id == run_id or (
            event.run_id != run_id and event.root_run_id == run_id
        )

    started = times(lambda e: e.type == "command.ask" and e.run_id == run_id)
    child_asks = times(lambda e: e.type == "command.ask" and e.parent_run_id == run_id)
    child_ends = times(lambda e: e.type in TERMINAL_TYPES and is_child(e))
    ended = times(lambda e: e.type in TERMINAL_TYPES and e.run_id == run_id)
    if not (started and child_asks and child_ends and ended):
        raise ValueError(f"fan-out {run_id}: its events are not all in the log")
    resume_commands = len(times(lambda e: e.type == "command.resume" and e.run_id == run_id))
    resumed = len(times(lambda e: e.type == "run.resumed" and e.run_id == run_id))
    waiting = times(lambda e: e.type == "run.waiting" and e.run_id == run_id)
    resumes = times(lambda e: e.type == "command.resume" and e.run_id == run_id)
    late = sum(1 for moment in resumes if waiting and moment > waiting[0])
    group = next((e for e in events if isinstance(e, GroupDispatched) and e.run_id == run_id), None)
    if group is None:
        raise ValueError(f"fan-out {run_id}: no group.dispatched in the log")
    reads = []
    for _ in range(3):
        started_read = time.perf_counter()
        await group_state(store, session_id, group)
        reads.append(time.perf_counter() - started_read)
    return Phases(
        dispatch=(max(child_asks) - started[0]).total_seconds(),
        children=(max(child_ends) - max(child_asks)).total_seconds(),
        gather=(ended[0] - max(child_ends)).total_seconds(),
        resume_commands=resume_commands,
        resumed=resumed,
        resumes_after_wait=late,
        group_read=statistics.median(reads),
    )


__all__ = ["Phases", "phases_of"]
