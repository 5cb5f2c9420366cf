"""Groups, workers, key/value state and the whole EventLog."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from gateway.api.context import Admin, Context, Reader
from gateway.api.errors import ApiError, NotFound
from gateway.api.pagination import MAX_SEQ, clamp_limit
from gateway.api.serialize import as_json, as_json_list, json_response
from gateway.api.visibility import Visibility

router = APIRouter(prefix="/v1")

StateScope = Literal["session", "user", "agent_type", "global"]


@router.get("/groups/{group_id}", tags=["runs"])
async def get_group(group_id: str, context: Context, principal: Reader) -> Response:
    """A scatter/gather group: strategy, members and their status, outcome."""
    row = await context.backend.get_group(group_id)
    if row is None or not await Visibility(principal, context.backend).session_id(row.session_id):
        raise NotFound("group", group_id)
    return json_response(as_json(row))


@router.get("/workers", tags=["operations"])
async def list_workers(context: Context, _principal: Admin) -> Response:
    """Every worker seen in the log (admin: it describes the whole deployment)."""
    return json_response({"items": as_json_list(await context.backend.list_workers())})


@router.get("/state/{scope}/{key}", tags=["state"])
async def get_state(
    scope: StateScope,
    key: str,
    context: Context,
    principal: Reader,
    scope_id: Annotated[
        str,
        Query(
            alias="id",
            max_length=256,
            description="Session id, user code or agent type; empty for the global scope.",
        ),
    ] = "",
) -> Response:
    """One value of key/value state. Restricted tokens read their sessions' and user codes'
    state only."""
    if scope != "global" and not scope_id:
        raise ApiError(400, "missing_scope_id", f"scope {scope!r} needs ?id=", {"scope": scope})
    visibility = Visibility(principal, context.backend)
    if scope == "session":
        allowed = await visibility.session_id(scope_id)
    elif scope == "user":
        codes = principal.user_codes
        allowed = not principal.restricted or (codes is not None and scope_id in codes)
    else:
        allowed = not principal.restricted
    row = await context.backend.get_state(scope, scope_id, key) if allowed else None
    if row is None:
        raise NotFound("state", f"{scope}/{scope_id}/{key}")
    return json_response(as_json(row))


@router.get("/events", tags=["events"])
async def list_events(
    context: Context,
    principal: Reader,
    after: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Only events after this sequence.")
    ] = 0,
    limit: Annotated[int | None, Query()] = None,
    event_type: Annotated[str | None, Query(alias="type", max_length=128)] = None,
) -> Response:
    """The EventLog in log order; continue with ``after=next_after``. A restricted token
    sees its sessions' events only (up to ``filter_scan_rows`` are scanned per page)."""
    settings = context.settings
    size = clamp_limit(limit, settings.default_page_size, settings.max_page_size)
    visibility = Visibility(principal, context.backend)
    if visibility.everything:
        rows = await context.backend.events(after, size, event_type)
        return json_response(
            {
                "items": as_json_list(rows),
                "next_after": rows[-1].seq if len(rows) == size else None,
            }
        )
    items: list[Any] = []
    position, scanned = after, 0
    while True:
        batch = await context.backend.events(position, size, event_type)
        for row in batch:
            position, scanned = row.seq, scanned + 1
            if await visibility.event(row):
                items.append(row)
            if len(items) == size or scanned >= settings.filter_scan_rows:
                return json_response({"items": as_json_list(items), "next_after": position})
        if len(batch) < size:
            return json_response({"items": as_json_list(items), "next_after": None})


__all__ = ["router"]
