"""Operations: liveness, readiness (NATS up and projection lag below a threshold),
Prometheus metrics, and the OpenAPI document and its UI (behind auth when tokens are set)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from nats.errors import Error as NatsError
from prometheus_client import CONTENT_TYPE_LATEST

from eventstore.errors import EventStoreError
from gateway.api.context import Admin, ApiContext, Context, Reader
from gateway.api.errors import ApiError, error_response

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process is up (no auth, no dependencies checked)."""
    return {"status": "ok"}


async def stream_last_seq(context: ApiContext, checkpoint: int = 0) -> int | None:
    """The log's last sequence (a held timer's never counts), or ``None`` while NATS is
    away; ``checkpoint``: applied already, so nothing up to it needs a look-up."""
    try:
        return await context.gateway().store.last_log_seq(after=checkpoint)
    except (ApiError, EventStoreError, NatsError, TimeoutError):
        return None


@router.get("/readyz", responses={503: {"description": "Not ready (error body says why)."}})
async def readyz(context: Context, _principal: Reader) -> Any:
    """Ready when NATS is connected and the read model is at most ``readyz_max_lag``
    events behind the log."""
    checkpoint = await context.backend.checkpoint()
    last_seq = await stream_last_seq(context, checkpoint)
    details: dict[str, Any] = {
        "nats": last_seq is not None,
        "checkpoint": checkpoint,
        "stream_last_seq": last_seq,
        "lag": None if last_seq is None else max(0, last_seq - checkpoint),
        "max_lag": context.settings.readyz_max_lag,
    }
    if last_seq is None:
        return error_response(503, "nats_unavailable", "NATS is not connected", details)
    if details["lag"] > context.settings.readyz_max_lag:
        return error_response(
            503, "projection_lag", f"the read model is {details['lag']} events behind", details
        )
    return JSONResponse({"status": "ready", **details})


@router.get("/metrics", response_class=Response)
async def metrics(context: Context, _principal: Admin) -> Response:
    """Prometheus exposition (admin scope: it describes the whole deployment)."""
    checkpoint = await context.backend.checkpoint()
    await context.metrics.sample(context.backend, await stream_last_seq(context, checkpoint))
    return Response(context.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request, _principal: Reader) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
async def docs(_principal: Reader) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="jetledger API")


__all__ = ["router", "stream_last_seq"]
