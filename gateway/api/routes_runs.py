"""Runs from the State read model: filtered lists, one run with its events and children,
and the call tree under a root run."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from gateway.api.context import Context, Reader
from gateway.api.errors import NotFound
from gateway.api.metrics import RUN_STATUSES
from gateway.api.pagination import clamp_limit, decode_cursor, encode_cursor, runs_page
from gateway.api.serialize import as_json, as_json_list, json_response
from gateway.api.visibility import Visibility
from projections.contract import RunFilter
from projections.rows import RunRow, RunStatus

router = APIRouter(prefix="/v1/runs", tags=["runs"])

Id = Annotated[str | None, Query(max_length=256)]


@router.get("")
async def list_runs(
    *,
    context: Context,
    principal: Reader,
    status: Annotated[RunStatus | None, Query(description=", ".join(RUN_STATUSES))] = None,
    agent_type: Id = None,
    session: Id = None,
    root: Id = None,
    limit: Annotated[int | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Runs, newest first. Status changes while paging drop a run out of a status-filtered
    list; without a status filter no run is repeated or skipped."""
    settings = context.settings
    size = clamp_limit(limit, settings.default_page_size, settings.max_page_size)
    after: tuple[int, str] | None = None
    if cursor is not None:
        first_seq, run_id = decode_cursor(cursor, "runs", (int, str))
        after = (first_seq, run_id)
    query = RunFilter(status=status, agent_type=agent_type, session_id=session, root_run_id=root)
    visibility = Visibility(principal, context.backend)
    rows, position = await runs_page(
        context.backend,
        query=query,
        after=after,
        limit=size,
        visible=visibility.run,
        scan_rows=settings.filter_scan_rows,
    )
    return json_response(
        {
            "items": as_json_list(rows),
            "next_cursor": None if position is None else encode_cursor("runs", position),
        }
    )


async def visible_run(context: Context, principal: Reader, run_id: str) -> RunRow:
    row = await context.backend.get_run(run_id)
    if row is None or not await Visibility(principal, context.backend).run(row):
        raise NotFound("run", run_id)
    return row


@router.get("/{run_id}")
async def get_run(run_id: str, context: Context, principal: Reader) -> Response:
    """The run, its events in log order and its direct children."""
    row = await visible_run(context, principal, run_id)
    events = await context.backend.run_events(run_id)
    children = await context.backend.children(run_id)
    return json_response(
        {**as_json(row), "events": as_json_list(events), "children": as_json_list(children)}
    )


@router.get("/{run_id}/tree")
async def get_tree(run_id: str, context: Context, principal: Reader) -> Response:
    """The call tree of the run's root: nested ``children``, each in start order."""
    row = await visible_run(context, principal, run_id)
    root_id = row.root_run_id or row.run_id
    runs = await context.backend.tree(root_id)
    nodes: dict[str, dict[str, Any]] = {
        run.run_id: {**as_json(run), "children": []} for run in runs
    }
    roots: list[dict[str, Any]] = []
    for run in runs:
        parent = nodes.get(run.parent_run_id or "")
        (parent["children"] if parent is not None else roots).append(nodes[run.run_id])
    return json_response({"root_run_id": root_id, "runs": len(runs), "tree": roots})


__all__ = ["router", "visible_run"]
