"""``audit <run_id>``: the call tree of a run with statuses and timings, from the read model."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from projections.contract import ReadModelBackend
from projections.rows import RunRow


@dataclass(slots=True)
class AuditNode:
    run: RunRow
    children: list[AuditNode] = field(default_factory=list)

    @property
    def queued_seconds(self) -> float | None:
        return _seconds(self.run.created_at, self.run.started_at)

    @property
    def run_seconds(self) -> float | None:
        return _seconds(self.run.started_at, self.run.ended_at)

    def walk(self, depth: int = 0) -> list[tuple[int, AuditNode]]:
        """Depth-first, children in creation order."""
        rows = [(depth, self)]
        for child in self.children:
            rows.extend(child.walk(depth + 1))
        return rows


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


class RunNotFoundError(LookupError):
    pass


async def audit_tree(backend: ReadModelBackend, run_id: str) -> AuditNode:
    """The whole tree ``run_id`` belongs to (from its root), as nested nodes."""
    run = await backend.get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"run {run_id!r} is not in the read model (yet?)")
    root_id = run.root_run_id or run.run_id
    runs = await backend.tree(root_id)
    if not any(r.run_id == root_id for r in runs):
        root = await backend.get_run(root_id)
        runs = ([root] if root is not None else []) + runs
    nodes = {r.run_id: AuditNode(r) for r in runs}
    top: list[AuditNode] = []
    for node in nodes.values():
        parent = nodes.get(node.run.parent_run_id or "")
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            top.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda child: child.run.first_seq)
    root_node = nodes.get(root_id)
    if root_node is None:  # an incomplete tree: show what we have under a synthetic root
        return top[0] if len(top) == 1 else AuditNode(run, top)
    return root_node


__all__ = ["AuditNode", "RunNotFoundError", "audit_tree"]
