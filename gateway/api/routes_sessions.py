"""Sessions: list by last activity, one session, its transcript and its events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from gateway.api.context import Context, Reader
from gateway.api.errors import NotFound
from gateway.api.pagination import (
    MAX_SEQ,
    clamp_limit,
    decode_cursor,
    encode_cursor,
    sessions_page,
)
from gateway.api.serialize import as_json, as_json_list, json_response
from gateway.api.visibility import Visibility

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

Limit = Annotated[int | None, Query(description="Page size (default and maximum are settings).")]
After = Annotated[
    int, Query(ge=0, le=MAX_SEQ, description="Only events after this stream sequence.")
]
EventType = Annotated[str | None, Query(alias="type", max_length=128, description="Event type.")]


@router.get("")
async def list_sessions(
    context: Context,
    principal: Reader,
    limit: Limit = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Sessions, most recent activity first (by their latest event's sequence)."""
    settings = context.settings
    size = clamp_limit(limit, settings.default_page_size, settings.max_page_size)
    if cursor is None:
        as_of, before = await context.backend.checkpoint(), None
    else:
        as_of, before = decode_cursor(cursor, "sessions", (int, int))
    visibility = Visibility(principal, context.backend)
    rows, position = await sessions_page(
        context.backend,
        as_of=as_of,
        before=before,
        limit=size,
        visible=visibility.session,
        scan_rows=settings.filter_scan_rows,
    )
    return json_response(
        {
            "items": as_json_list(rows),
            "next_cursor": None
            if position is None
            else encode_cursor("sessions", (as_of, position)),
        }
    )


@router.get("/{session_id}")
async def get_session(session_id: str, context: Context, principal: Reader) -> Response:
    row = await context.backend.get_session(session_id)
    if row is None or not await Visibility(principal, context.backend).session(row):
        raise NotFound("session", session_id)
    return json_response(as_json(row))


@router.get("/{session_id}/transcript")
async def get_transcript(session_id: str, context: Context, principal: Reader) -> Response:
    """The conversation in order; each turn carries the seq range it came from."""
    row = await context.backend.get_session(session_id)
    if row is None or not await Visibility(principal, context.backend).session(row):
        raise NotFound("session", session_id)
    turns = await context.backend.transcript(session_id)
    return json_response(
        {"session_id": session_id, "last_seq": row.last_seq, "turns": as_json_list(turns)}
    )


@router.get("/{session_id}/events")
async def session_events(
    session_id: str,
    *,
    context: Context,
    principal: Reader,
    after: After = 0,
    limit: Limit = None,
    event_type: EventType = None,
) -> Response:
    """The session's events in log order; continue with ``after=next_after``."""
    settings = context.settings
    size = clamp_limit(limit, settings.default_page_size, settings.max_page_size)
    await Visibility(principal, context.backend).require_session(session_id)
    rows = await context.backend.session_events(session_id, after, size, event_type)
    return json_response(
        {
            "items": as_json_list(rows),
            "next_after": rows[-1].seq if len(rows) == size else None,
        }
    )


__all__ = ["router"]
