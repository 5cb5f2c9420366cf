"""``verify``: rebuild the read model from the log into a scratch database and compare it
with the live one, row by row (G4: kill the projector anywhere; after a restart the live
model equals a fresh rebuild)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventstore.store import EventStore
from projections.contract import TABLES, ReadModelBackend
from projections.projector import BatchApplied, Projector

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "events": ("seq",),
    "rejected": ("seq",),
    "sessions": ("session_id",),
    "runs": ("run_id",),
    "transcript": ("turn_id",),
    "groups": ("group_id",),
    "workers": ("worker_id",),
    "state": ("scope", "scope_id", "key"),
}
MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Difference:
    table: str
    key: tuple[Any, ...]
    live: dict[str, Any] | None
    rebuilt: dict[str, Any] | None


@dataclass(slots=True)
class VerifyReport:
    checkpoint: int
    rows: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differences


def compare_dumps(
    live: dict[str, list[dict[str, Any]]], rebuilt: dict[str, list[dict[str, Any]]], limit: int = 50
) -> list[Difference]:
    """Rows that differ, by table and primary key (at most ``limit``)."""
    differences: list[Difference] = []
    for table in TABLES:
        columns = PRIMARY_KEYS[table]
        left = {tuple(row[c] for c in columns): row for row in live.get(table, [])}
        right = {tuple(row[c] for c in columns): row for row in rebuilt.get(table, [])}
        for key in sorted(left.keys() | right.keys(), key=repr):
            if left.get(key) != right.get(key):
                differences.append(Difference(table, key, left.get(key), right.get(key)))
                if len(differences) >= limit:
                    return differences
    return differences


async def verify(
    store: EventStore,
    live: ReadModelBackend,
    scratch: ReadModelBackend,
    *,
    on_batch: Callable[[BatchApplied], None] | None = None,
) -> VerifyReport:
    """Rebuild into ``scratch`` (empty, started) up to the live checkpoint and compare.

    A projector may be writing to ``live`` meanwhile: the comparison is retried until
    both sides are read at the same checkpoint.
    """
    rebuild = Projector(store, scratch, on_batch=on_batch)
    await rebuild.start()
    for _ in range(MAX_ATTEMPTS):
        checkpoint = await live.checkpoint()
        await rebuild.catch_up(checkpoint)
        live_rows = await live.dump()
        if await live.checkpoint() != checkpoint:
            continue  # the live projector moved on while we read it
        rebuilt_rows = await scratch.dump()
        return VerifyReport(
            checkpoint,
            {table: len(live_rows.get(table, [])) for table in TABLES},
            compare_dumps(live_rows, rebuilt_rows),
        )
    raise RuntimeError(
        f"the live read model kept moving during {MAX_ATTEMPTS} comparisons; "
        "verify while the projector is idle or stopped"
    )


__all__ = ["PRIMARY_KEYS", "Difference", "VerifyReport", "compare_dumps", "verify"]
