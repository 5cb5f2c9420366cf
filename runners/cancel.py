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
from runners.journal import Journal, load_journal, terminal_of
from runners.wakeup import command_at, notify_parent

log = logging.getLogger(__name__)

MAX_TREE_SIZE = 100_000
"""A bound on one walk, so a corrupt journal cannot make it loop forever."""


@dataclass(slots=True)
class CancelReport:
    """What a cancel did: runs it ended now and runs that had already ended."""

    cancelled: list[str] = field(default_factory=list)
    already_ended: list[str] = field(default_factory=list)


def children_of(journal: Journal) -> list[str]:
    """Every child run a run dispatched, in dispatch order."""
    children = [called.data.child_run_id for _step, called in sorted(journal.called.items())]
    for _step, group in sorted(journal.groups.items()):
        children.extend(member.run_id for member in group.data.members)
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
    queue = [run_id]
    seen: set[str] = set()
    while queue and len(seen) < MAX_TREE_SIZE:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        journal = await load_journal(store, session_id, current)
        ended_now = await _cancel_one(
            store,
            session_id,
            current,
            journal,
            mode=mode,
            reason=reason,
            requested_by=requested_by,
            causation_id=causation_id,
        )
        if ended_now:
            report.cancelled.append(current)
        else:
            report.already_ended.append(current)
        queue.extend(children_of(journal))
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
    journal = await load_journal(store, session_id, run_id)
    first = journal.first_start
    ask = None if first is None else await command_at(store, first.data.command_seq or 0)
    terminal = await terminal_of(store, session_id, run_id)
    if ask is not None and ask.data.reply_to is not None and terminal is not None:
        await notify_parent(store, ask.data.reply_to, run_id, terminal)


async def _cancel_one(
    store: EventStore,
    session_id: str,
    run_id: str,
    journal: Journal,
    *,
    mode: CancelMode,
    reason: str | None,
    requested_by: str | None,
    causation_id: str | None,
) -> bool:
    start = journal.first_start
    terminal = RunCancelled(
        id=f"{run_id}:cancelled",
        session_id=session_id,
        run_id=run_id,
        agent_type=start.agent_type if start else None,
        parent_run_id=start.parent_run_id if start else None,
        root_run_id=start.root_run_id if start else None,
        group_id=start.group_id if start else None,
        user_code=start.user_code if start else None,
        trace_id=start.trace_id if start else None,
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


__all__ = ["CancelReport", "cancel_run", "cancel_tree", "children_of"]
