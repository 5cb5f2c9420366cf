"""Commands: ask an agent type in a session, and cancel a run. Each is appended to the
log through :class:`~gateway.client.GatewayClient` and answered with its ids."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from eventstore.catalog_common import CancelMode, Content
from gateway.api.commands import CommandAccepted, WaitSeconds, accepted, reflected
from gateway.api.context import Context, Writer
from gateway.api.errors import ApiError, NotFound
from gateway.api.visibility import Visibility
from gateway.client import GatewayClient, NoWorkerError
from gateway.errors import RunNotFoundError
from projections.rows import TERMINAL_STATUSES

router = APIRouter(prefix="/v1", tags=["commands"])

SessionId = Annotated[str, Path(min_length=1, max_length=256)]
RunId = Annotated[str, Path(min_length=1, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class MessageBody(BaseModel):
    """Ask ``agent_type`` to start a run in the session (``command.ask``)."""

    model_config = ConfigDict(extra="forbid")

    agent_type: Name
    content: Content
    user_code: Name | None = None
    metadata: dict[str, JsonValue] | None = None
    queue: bool = Field(
        default=False,
        description="Store the command even if no worker serves the agent type now "
        "(otherwise 503 no_worker).",
    )


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: CancelMode = "graceful"
    reason: Annotated[str, Field(max_length=4096)] | None = None


class AlreadyFinished(BaseModel):
    """Cancelling a finished run changes nothing."""

    run_id: str
    session_id: str
    status: str
    already_finished: bool = True
    message: str


@router.post("/sessions/{session_id}/messages", status_code=202)
async def post_message(
    session_id: SessionId,
    body: MessageBody,
    context: Context,
    principal: Writer,
    wait: WaitSeconds = None,
) -> CommandAccepted:
    """Ask an agent type. 503 ``no_worker`` when no worker serves it, unless ``queue``."""
    user_code = body.user_code
    if user_code is None and principal.user_codes is not None and len(principal.user_codes) == 1:
        (user_code,) = principal.user_codes  # a token for one user acts as that user
    await Visibility(principal, context.backend).require_command_session(session_id, user_code)
    if (
        principal.user_codes is not None
        and principal.sessions is None
        and (user_code not in principal.user_codes)
    ):
        raise ApiError(403, "forbidden_user_code", f"this token may not act as user {user_code!r}")
    client = context.gateway()
    try:
        sent = await client.send_message(
            body.agent_type,
            session_id,
            body.content,
            user_code=user_code,
            metadata=body.metadata,
            queue_if_no_worker=body.queue,
        )
    except NoWorkerError as exc:
        raise ApiError(
            503,
            "no_worker",
            str(exc),
            {"agent_type": body.agent_type, "hint": 'send "queue": true to store it anyway'},
        ) from exc
    context.metrics.commands.labels(kind="ask").inc()
    return await accepted(
        context,
        run_id=sent.run_id,
        session_id=sent.session_id,
        event_id=sent.message_id,
        seq=sent.seq,
        wait=wait,
    )


class CancelAccepted(CommandAccepted):
    """A cancel recorded: the runs it ended now and those found already ended."""

    cancelled: list[str]
    already_ended: list[str]


@router.post(
    "/runs/{run_id}/cancel",
    status_code=202,
    responses={200: {"model": AlreadyFinished, "description": "The run had already ended."}},
)
async def cancel_run(
    run_id: RunId,
    context: Context,
    principal: Writer,
    body: Annotated[CancelBody | None, Body()] = None,
    wait: WaitSeconds = None,
) -> Any:
    """Cancel a run and its subtree. A finished run is answered 200 and nothing is sent."""
    run = await context.backend.get_run(run_id)
    visibility = Visibility(principal, context.backend)
    if (run is None and not visibility.everything) or (
        run is not None and not await visibility.run(run)
    ):
        raise NotFound("run", run_id)
    if run is not None and run.status in TERMINAL_STATUSES:
        return already_finished(run_id, run.session_id, run.status)
    request = body or CancelBody()
    client = context.gateway()
    try:
        outcome = await client.cancel(
            run_id,
            run.session_id if run is not None else None,
            request.reason or "",
            request.mode,
            agent_type=run.agent_type if run is not None else None,
            requested_by=principal.name,
        )
    except RunNotFoundError as exc:
        raise NotFound("run", run_id) from exc
    report = outcome.report
    session_id = run.session_id if run is not None else ""
    cancelled, already_ended = list(report.cancelled), list(report.already_ended)
    if run_id in already_ended:
        # A worker taking the same command may have ended the run a moment before the
        # client did: that is this cancel too, not a run that had finished by itself.
        ended_by = await terminal_type(client, run_id, session_id)
        if ended_by != "run.cancelled":
            return already_finished(run_id, session_id, ended_by.removeprefix("run."))
        already_ended.remove(run_id)
        cancelled.insert(0, run_id)
    context.metrics.commands.labels(kind="cancel").inc()
    # read-your-writes covers the run.cancelled events the cancel appended after its
    # command, so wait for the log's end as it is now, not only for the command
    effects_seq = await client.store.last_log_seq(after=outcome.seq) if wait else outcome.seq
    done, checkpoint = await reflected(context, max(outcome.seq, effects_seq), wait)
    return CancelAccepted(
        run_id=run_id,
        session_id=session_id,
        event_id=None,
        seq=outcome.seq,
        reflected=done,
        checkpoint=checkpoint,
        cancelled=cancelled,
        already_ended=already_ended,
    )


async def terminal_type(client: GatewayClient, run_id: str, session_id: str) -> str:
    """The type of the run's terminal event (``run.ended`` when it cannot be read)."""
    if not session_id:
        return "run.ended"
    try:
        return (await client.wait(run_id, session_id, timeout=0)).type
    except TimeoutError:
        return "run.ended"


def already_finished(run_id: str, session_id: str, status: str) -> JSONResponse:
    return JSONResponse(
        AlreadyFinished(
            run_id=run_id,
            session_id=session_id,
            status=status,
            message=f"run {run_id} already finished ({status}): nothing to cancel",
        ).model_dump(),
        status_code=200,
    )


__all__ = ["router"]
