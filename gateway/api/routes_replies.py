"""Commands that talk to a running conversation: answer a run's question (``reply``) and
add a message to a session's active run (``steer``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from eventstore.catalog_common import Content
from gateway.api.commands import CommandAccepted, WaitSeconds, accepted
from gateway.api.context import ApiContext, Context, Writer
from gateway.api.errors import ApiError, NotFound
from gateway.api.visibility import Visibility
from gateway.errors import RunNotFoundError, RunNotWaitingError
from projections.contract import RunFilter
from projections.rows import TERMINAL_STATUSES, RunRow

router = APIRouter(prefix="/v1", tags=["commands"])

Ident = Annotated[str, Path(min_length=1, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
ACTIVE_RUN_SCAN = 50
"""Most recent runs of a session looked at to find the one a steer goes to."""


class ReplyBody(BaseModel):
    """The answer to the question a run asked (``ask_user``)."""

    model_config = ConfigDict(extra="forbid")

    answer: JsonValue = None
    content: Content | None = None
    user_code: Name | None = None


class SteerBody(BaseModel):
    """A message for the session's active run. ``agent_type`` defaults to the active
    run's; ``run_id`` picks a run instead of the most recent active one."""

    model_config = ConfigDict(extra="forbid")

    content: Content
    agent_type: Name | None = None
    run_id: Name | None = None
    user_code: Name | None = None


@router.post(
    "/runs/{run_id}/reply",
    status_code=202,
    responses={409: {"description": "not_waiting: the run is not waiting for a reply."}},
)
async def reply(
    run_id: Ident, body: ReplyBody, context: Context, principal: Writer, wait: WaitSeconds = None
) -> CommandAccepted:
    """Answer a run's question. 409 ``not_waiting`` when the run ended, waits for
    something else, or the question was answered already."""
    visibility = Visibility(principal, context.backend)
    if not visibility.everything:
        run = await context.backend.get_run(run_id)
        if run is None or not await visibility.run(run):
            raise NotFound("run", run_id)
    try:
        sent = await context.gateway().reply(
            run_id, body.answer, content=body.content, user_code=body.user_code
        )
    except RunNotFoundError as exc:
        raise NotFound("run", run_id) from exc
    except RunNotWaitingError as exc:
        raise ApiError(409, "not_waiting", str(exc), {"run_id": run_id}) from exc
    context.metrics.commands.labels(kind="reply").inc()
    return await accepted(
        context,
        run_id=sent.run_id,
        session_id=sent.session_id,
        event_id=sent.event_id,
        seq=sent.seq,
        wait=wait,
    )


async def active_run(context: ApiContext, session_id: str) -> RunRow | None:
    runs = await context.backend.list_runs(RunFilter(session_id=session_id, limit=ACTIVE_RUN_SCAN))
    return next((run for run in runs if run.status not in TERMINAL_STATUSES), None)


@router.post(
    "/sessions/{session_id}/steer",
    status_code=202,
    responses={409: {"description": "no_active_run: nothing to steer and no agent_type."}},
)
async def steer(
    session_id: Ident,
    body: SteerBody,
    context: Context,
    principal: Writer,
    wait: WaitSeconds = None,
) -> CommandAccepted:
    """Add a message to the session's active run (``command.steer``)."""
    await Visibility(principal, context.backend).require_command_session(session_id, body.user_code)
    target_run_id, agent_type = body.run_id, body.agent_type
    if agent_type is None:
        run = (
            await context.backend.get_run(target_run_id)
            if target_run_id is not None
            else await active_run(context, session_id)
        )
        if run is None or run.session_id != session_id or run.agent_type is None:
            raise ApiError(
                409,
                "no_active_run",
                f"session {session_id!r} has no active run to steer: name an agent_type",
                {"session_id": session_id},
            )
        target_run_id, agent_type = run.run_id, run.agent_type
    sent = await context.gateway().steer(
        session_id,
        body.content,
        agent_type=agent_type,
        user_code=body.user_code,
        target_run_id=target_run_id,
    )
    context.metrics.commands.labels(kind="steer").inc()
    return await accepted(
        context,
        run_id=sent.run_id or None,
        session_id=sent.session_id,
        event_id=sent.event_id,
        seq=sent.seq,
        wait=wait,
    )


__all__ = ["router"]
