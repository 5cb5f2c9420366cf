"""Live tail over Server-Sent Events: replay a session's or a run's events from
``Last-Event-ID`` (or ``?after=``), then follow the log live.

The stream sequence is the SSE ``id``, the event type the SSE ``event`` and the event's
JSON the ``data``; the hand-over from replay to live is gap- and duplicate-free, and all
tails of one session share one reader of the log (:mod:`gateway.api.fanout`). Comment
lines are sent on an idle stream every ``sse_heartbeat_seconds`` so proxies keep it open.
A run's stream ends after its terminal event; a session's stream runs until the client
goes away.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse

from eventstore.subjects import run_filter, session_filter
from gateway.api.context import ApiContext, Context, Reader
from gateway.api.errors import ApiError
from gateway.api.fanout import TailClosed, error_frame
from gateway.api.pagination import MAX_SEQ
from gateway.api.visibility import Visibility

router = APIRouter(prefix="/v1", tags=["live tail"])

After = Annotated[
    int | None, Query(ge=0, le=MAX_SEQ, description="Replay events after this stream sequence.")
]
LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", description="Resume after this SSE id (wins over ?after)."),
]
Ident = Annotated[str, Path(min_length=1, max_length=256)]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def start_seq(after: int | None, last_event_id: str | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        try:
            resumed = int(last_event_id.strip())
        except ValueError:
            resumed = -1
        if not 0 <= resumed < MAX_SEQ:
            raise ApiError(
                400,
                "invalid_last_event_id",
                "Last-Event-ID must be a stream sequence (the id of an event you received)",
                {"last_event_id": last_event_id[:64]},
            )
        return resumed + 1
    return (after or 0) + 1


async def tail(
    context: ApiContext, subject_filter: str, from_seq: int, *, ends_at_terminal: bool
) -> AsyncIterator[bytes]:
    fanout = context.live()
    # join before the first byte goes out: a client that has the preamble is following
    frames = fanout.frames(
        await fanout.join(subject_filter),
        from_seq,
        ends_at_terminal=ends_at_terminal,
        heartbeat=context.settings.sse_heartbeat_seconds,
    )
    context.metrics.sse_clients.inc()
    try:
        yield b"retry: 1000\n: live tail open\n\n"
        async with contextlib.aclosing(frames):
            async for frame in frames:
                yield b": heartbeat\n\n" if frame is None else frame.data
    except TailClosed as closed:
        yield error_frame(closed.code, closed.message)
    finally:
        context.metrics.sse_clients.dec()


@router.get("/sessions/{session_id}/stream", response_class=StreamingResponse)
async def stream_session(
    session_id: Ident,
    context: Context,
    principal: Reader,
    after: After = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Server-Sent Events of the session, from ``Last-Event-ID`` / ``after`` on, live."""
    first = start_seq(after, last_event_id)
    await Visibility(principal, context.backend).require_session(session_id)
    subject_filter = session_filter(session_id, context.client.settings.root)
    stream = tail(context, subject_filter, first, ends_at_terminal=False)
    context.live()  # 503 now rather than an empty stream
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/runs/{run_id}/stream", response_class=StreamingResponse)
async def stream_run(
    run_id: Ident,
    context: Context,
    principal: Reader,
    after: After = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Server-Sent Events of one run; the stream ends after the run's terminal event.
    A run not yet in the read model can be followed by unrestricted tokens."""
    first = start_seq(after, last_event_id)
    visibility = Visibility(principal, context.backend)
    if not visibility.everything:
        run = await context.backend.get_run(run_id)
        if run is None or not await visibility.run(run):
            raise ApiError(404, "not_found", f"run {run_id!r} not found", {"run": run_id})
    subject_filter = run_filter(run_id, context.client.settings.root)
    stream = tail(context, subject_filter, first, ends_at_terminal=True)
    context.live()
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)


__all__ = ["router", "start_seq", "tail"]
