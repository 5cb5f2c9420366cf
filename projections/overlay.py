"""Folding a batch while the previous one is still being committed.

The projector folds batch N+1 while the database writes batch N (the write runs in a
driver thread or in the database server, so the two overlap). Batch N+1's rows are
loaded while N's transaction may or may not have committed yet; either way the
database holds at least everything up to batch N-1 (the projector awaits N-1's commit
before it starts N's). :func:`overlay` then lays batch N's rows over what was loaded:
every row N wrote is taken from N's changes, every other row is the same in both
database states. So the fold sees exactly what a load after N's commit would have
returned, and the read model does not depend on the overlap.
"""

from __future__ import annotations

from typing import Any

from projections.contract import BatchKeys, Changes, Snapshot


def _lay_over(loaded: dict[str, Any], wanted: set[str], written: dict[str, Any]) -> None:
    # Walk the smaller side: batches often touch a few hundred keys of each table.
    if len(written) <= len(wanted):
        for key, row in written.items():
            if key in wanted:
                loaded[key] = row
    else:
        for key in wanted:
            row = written.get(key)
            if row is not None:
                loaded[key] = row


def overlay(snapshot: Snapshot, keys: BatchKeys, pending: Changes) -> Snapshot:
    """``snapshot`` (loaded for ``keys``) updated in place with the rows ``pending`` writes.

    The rows of ``pending`` are shared, not copied: the fold never mutates snapshot rows
    (it copies a row before its first edit), and ``pending`` is final once folded.
    """
    _lay_over(snapshot.runs, keys.run_ids, pending.runs)
    _lay_over(snapshot.sessions, keys.session_ids, pending.sessions)
    _lay_over(snapshot.groups, keys.group_ids, pending.groups)
    _lay_over(snapshot.turns, keys.turn_ids, pending.turns)
    _lay_over(snapshot.workers, keys.worker_ids, pending.workers)
    if keys.event_ids and pending.events:
        snapshot.known_event_ids.update(
            row.id for row in pending.events if row.id in keys.event_ids
        )
    return snapshot


__all__ = ["overlay"]
