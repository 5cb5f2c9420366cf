"""Groups (scatter-gather, DESIGN §5 State: groups).

Rules:

* ``group.dispatched`` creates the group ``running``: its members in member order with
  status ``queued``, ``total``, ``strategy``, ``timeout_s``, and ``parent_run_id`` = the
  envelope's ``run_id``. A second dispatch of the same group id only moves ``last_seq``.
  Member runs already known and not in a group are linked to it (``group_id``); members
  that already ended (a fast member can finish before the dispatch is logged) count at
  once, as of the dispatch event.
* A member's first terminal event counts when its envelope names the group (``group_id``)
  and the run is one of the group's members: the member's status becomes the run's
  terminal status; ``completed`` counts in ``succeeded``, every other end in ``failed``.
  (Only the envelope is used to find the group: a lookup through the run row would make
  the result depend on where batches were cut.)
* Outcome: ``all`` completes when every member ended (even if some failed; the counts
  tell the outcome); ``race`` completes at the first success and fails when all failed;
  ``quorum:n`` completes at n successes and fails once n can no longer be reached.
* ``command.resume`` with reason ``timeout`` from the group's parent, naming the group in
  its envelope, marks a still running group ``timed_out``.
* Once a group ended its status and ``ended_at`` never change; members that end later
  are still recorded in ``members`` and the counts.
"""

from __future__ import annotations

from typing import cast

from eventstore.catalog import GroupDispatched, parse_strategy
from eventstore.envelope import Event
from projections.fold_state import FoldState
from projections.rows import TERMINAL_STATUSES, GroupRow, GroupStatus


def on_group_dispatched(state: FoldState, seq: int, event: Event) -> None:
    group_id = event.group_id
    if group_id is None:  # the catalog requires it; kept for type narrowing
        return
    existing = state.edit_group(group_id)
    if existing is not None:
        existing.last_seq = seq
        return
    data = cast(GroupDispatched, event).data
    group = GroupRow(
        group_id=group_id,
        session_id=event.session_id or "",
        strategy=data.strategy,
        total=len(data.members),
        parent_run_id=event.run_id,
        members=[
            {
                "index": member.index,
                "run_id": member.run_id,
                "agent_type": member.agent_type,
                "status": "queued",
            }
            for member in data.members
        ],
        timeout_s=data.timeout_s,
        created_at=event.time,
        first_seq=seq,
        last_seq=seq,
    )
    state.changes.groups[group_id] = group
    for index, member in enumerate(data.members):
        run = state.peek_run(member.run_id)
        if run is None:
            continue
        if run.group_id is None:
            linked = state.edit_run(member.run_id)
            if linked is not None:
                linked.group_id = group_id
        if run.status in TERMINAL_STATUSES:
            _member_ended(group, index, run.status, seq, event)


def on_member_ended(state: FoldState, seq: int, event: Event, run_id: str, status: str) -> None:
    """A run's first terminal event: count it in the group its envelope names."""
    if event.group_id is None:
        return
    group = state.peek_group(event.group_id)
    if group is None:
        return
    for index, member in enumerate(group.members):
        if member["run_id"] == run_id:
            if member["status"] in TERMINAL_STATUSES:
                return
            edited = state.edit_group(event.group_id)
            if edited is not None:
                _member_ended(edited, index, status, seq, event)
            return


def on_group_timeout(state: FoldState, seq: int, event: Event) -> None:
    if event.group_id is None:
        return
    group = state.peek_group(event.group_id)
    if group is None or group.status != "running" or group.parent_run_id != event.run_id:
        return
    edited = state.edit_group(event.group_id)
    if edited is not None:
        edited.status = "timed_out"
        edited.ended_at = event.time
        edited.last_seq = seq


def _member_ended(group: GroupRow, index: int, status: str, seq: int, event: Event) -> None:
    members = list(group.members)
    members[index] = {**members[index], "status": status}
    group.members = members
    if status == "completed":
        group.succeeded += 1
    else:
        group.failed += 1
    group.last_seq = seq
    if group.status == "running":
        outcome = _outcome(group)
        if outcome is not None:
            group.status = outcome
            group.ended_at = event.time


def _outcome(group: GroupRow) -> GroupStatus | None:
    kind, quorum = parse_strategy(group.strategy)
    ended = group.succeeded + group.failed
    if kind == "all":
        return "completed" if ended >= group.total else None
    required = 1 if quorum is None else quorum
    if group.succeeded >= required:
        return "completed"
    if group.succeeded + (group.total - ended) < required:
        return "failed"
    return None


__all__ = ["on_group_dispatched", "on_group_timeout", "on_member_ended"]
