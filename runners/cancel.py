"""Cascade cancel (issue 4 §6): end a run and its whole subtree with ``run.cancelled``.

The walk needs no live worker of any agent type: it reads each run's journal for its
children (``run.called``, ``group.dispatched`` are written before a child is published,
so no child is ever missed) and appends ``run.cancelled`` to each run's ``.end`` subject
with ``Nats-Expected-Last-Subject-Sequence: 0`` (G2): a run that already ended keeps its
terminal event. Handlers still running on some worker see the terminal event on their
``.end`` subject (see :mod:`runners.execution`) and observe ``ctx.cancelled``; waiting and
queued runs simply never run again (their next delivery finds the run ended).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from eventstore.catalog import CancelMode, RunCancelled, RunCancelledData
from eventstore.errors import ConcurrencyError
from eventstore.store import EventStore
from runners.journal import Journal, load_journal, load_run, terminal_of
from runners.run_sweep import sweep_parked_run
from runners.wakeup import notify_parent, started_by

log = logging.getLogger(__name__)

MAX_TREE_SIZE = 100_000
"""A bound on one walk, so a corrupt journal cannot make it loop forever."""


@dataclass(slots=True)
class CancelReport:
    """What a cancel did: runs it ended now and runs that had already ended."""

    cancelled: list[str] = field(default_factory=list)
    already_ended: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Lineage:
    """Envelope fields of a child as its parent's journal knows them: what a child that
    never started (so has no ``run.started`` to copy from) carries in its ``run.cancelled``,
    so that readers (the tree of a root, a group's members) still find it."""

    agent_type: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    group_id: str | None = None
    user_code: str | None = None
    trace_id: str | None = None


def children_of(journal: Journal) -> list[str]:
    """Every child run a run dispatched, in dispatch order."""
    return list(lineage_of_children(journal))


def lineage_of_children(journal: Journal) -> dict[str, Lineage]:
    """Every child run a run dispatched (in dispatch order) with its lineage."""
    start = journal.first_start
    root = (start.root_run_id if start else None) or journal.run_id
    common = {
        "parent_run_id": journal.run_id,
        "root_run_id": root,
        "user_code": start.user_code if start else None,
        "trace_id": start.trace_id if start else None,
    }
    children: dict[str, Lineage] = {}
    for _step, called in sorted(journal.called.items()):
        children[called.data.child_run_id] = Lineage(
            agent_type=called.data.target_agent_type, **common
        )
    for _step, group in sorted(journal.groups.items()):
        for member in group.data.members:
            children[member.run_id] = Lineage(
                agent_type=member.agent_type, group_id=group.group_id, **common
            )
    return children


async def cancel_tree(
    store: EventStore,
    session_id: str,
    run_id: str,
    *,
    mode: CancelMode = "graceful",
    reason: str | None = None,
    requested_by: str | None = None,
    causation_id: str | None = None,
) -> CancelReport:
    """Cancel ``run_id`` and every descendant (children share their parent's session)."""
    report = CancelReport()
    queue: list[tuple[str, Lineage]] = [(run_id, Lineage())]
    seen: set[str] = set()
    while queue and len(seen) < MAX_TREE_SIZE:
        current, lineage = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        journal = await load_journal(store, session_id, current)
        ended_now = await _cancel_one(
            store,
            session_id,
            current,
            journal,
            lineage,
            mode=mode,
            reason=reason,
            requested_by=requested_by,
            causation_id=causation_id,
        )
        if ended_now:
            report.cancelled.append(current)
            # Parked, it has no handler to disarm its timers and drop its unread steers.
            await sweep_parked_run(store, session_id, current, journal)
        else:
            report.already_ended.append(current)
        queue.extend(lineage_of_children(journal).items())
    return report


async def cancel_run(
    store: EventStore,
    session_id: str,
    run_id: str,
    *,
    mode: CancelMode = "graceful",
    reason: str | None = None,
    requested_by: str | None = None,
    causation_id: str | None = None,
) -> CancelReport:
    """Cancel ``run_id``'s subtree and, if ``run_id`` itself was cancelled now and its
    parent waits for it, wake the parent with the cancelled result."""
    report = await cancel_tree(
        store,
        session_id,
        run_id,
        mode=mode,
        reason=reason,
        requested_by=requested_by,
        causation_id=causation_id,
    )
    if run_id in report.cancelled:
        await _wake_parent(store, session_id, run_id)
    return report


async def _wake_parent(store: EventStore, session_id: str, run_id: str) -> None:
    terminal, journal = await load_run(store, session_id, run_id)
    ask = await started_by(store, journal)
    if ask is not None and ask.data.reply_to is not None and terminal is not None:
        await notify_parent(store, ask.data.reply_to, run_id, terminal)


async def _cancel_one(
    store: EventStore,
    session_id: str,
    run_id: str,
    journal: Journal,
    lineage: Lineage,
    *,
    mode: CancelMode,
    reason: str | None,
    requested_by: str | None,
    causation_id: str | None,
) -> bool:
    start = journal.first_start
    known = start or lineage  # a child that never started: what its parent recorded
    terminal = RunCancelled(
        id=f"{run_id}:cancelled",
        session_id=session_id,
        run_id=run_id,
        agent_type=known.agent_type,
        parent_run_id=known.parent_run_id,
        root_run_id=known.root_run_id,
        group_id=known.group_id,
        user_code=known.user_code,
        trace_id=known.trace_id,
        causation_id=causation_id,
        data=RunCancelledData(reason=reason, requested_by=requested_by, mode=mode),
    )
    try:
        result = await store.append(terminal, expected_last_subject_seq=0)
    except ConcurrencyError:
        # Ended already; by this same cancel if a concurrent walk (the client's and a
        # worker's take the same command) got there first.
        existing = await terminal_of(store, session_id, run_id)
        return (
            isinstance(existing, RunCancelled)
            and causation_id is not None
            and existing.causation_id == causation_id
        )
    if not result.duplicate:  # a duplicate is this cancellation, stored by a concurrent walk
        log.info("cancelled run %s (%s)", run_id, reason or mode)
    return True


__all__ = [
    "CancelReport",
    "Lineage",
    "cancel_run",
    "cancel_tree",
    "children_of",
    "lineage_of_children",
]
