"""``create_app(settings) -> FastAPI``: the read-model HTTP API.

The app opens the read model and connects to NATS in its lifespan. NATS may be away at
start: reads are served meanwhile and routes that need NATS answer 503 until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from eventstore.settings import StoreSettings
from gateway.api import (
    routes_commands,
    routes_misc,
    routes_ops,
    routes_replies,
    routes_runs,
    routes_sessions,
)
from gateway.api import sse as routes_sse
from gateway.api.auth import TokenTable, load_tokens
from gateway.api.context import ApiContext
from gateway.api.errors import install_error_handlers
from gateway.api.limits import BodySizeLimit
from gateway.api.metrics import ApiMetrics, LatencyMiddleware
from gateway.api.settings import ApiSettings
from gateway.client import GatewayClient
from projections.backends import normalize_url, open_backend
from projections.contract import ReadModelBackend

log = logging.getLogger(__name__)

DESCRIPTION = """Read models of a jetledger deployment (sessions, transcripts, runs, events,
groups, workers, state), a live tail over Server-Sent Events, and commands (ask, reply,
cancel, steer). Errors always have the body `{"error": {"code", "message", "details"}}`."""


class ApiConfigError(ValueError):
    """The API cannot start with these settings."""


def check_settings(settings: ApiSettings, tokens: TokenTable) -> None:
    if tokens.local_mode and not settings.loopback:
        raise ApiConfigError(
            f"no API tokens are configured (local mode, no auth), so the API only binds a "
            f"loopback address, not {settings.host!r}: configure tokens with --tokens FILE "
            f"or JETLEDGER_API_TOKENS, or use --host 127.0.0.1"
        )
    if normalize_url(settings.db_url).startswith("duckdb:"):
        raise ApiConfigError(
            "the API serves SQLite or PostgreSQL read models: DuckDB allows one process per "
            "file, and the projector holds it; project into sqlite+aiosqlite:///file.db or "
            "postgresql+asyncpg://... for the API (keep DuckDB for audit and export)"
        )


async def start_backend(backend: ReadModelBackend, settings: ApiSettings) -> None:
    """Start the backend. A projector starting at the same moment on a fresh database may
    be creating the same tables (``CREATE ... IF NOT EXISTS`` is not atomic across
    connections), so a failure is retried a few times before it counts."""
    for attempt in range(1, settings.db_start_attempts + 1):
        try:
            await backend.start()
        except DBAPIError as exc:
            if attempt == settings.db_start_attempts:
                raise
            log.info("read model not ready (%s); retrying", type(exc.orig).__name__)
            await asyncio.sleep(settings.db_start_retry_seconds)
        else:
            return


def create_app(
    settings: ApiSettings,
    *,
    store_settings: StoreSettings | None = None,
    tokens: TokenTable | None = None,
) -> FastAPI:
    """The API for ``settings``; ``tokens`` default to the configured file / environment."""
    tokens = tokens if tokens is not None else load_tokens(settings.tokens_file, settings.tokens)
    check_settings(settings, tokens)
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = open_backend(settings.db_url, namespace=settings.db_namespace)
        await start_backend(backend, settings)
        client = GatewayClient(
            settings.nats_url,
            store_settings or StoreSettings.from_env(),
            worker_probe_timeout=settings.worker_probe_seconds,
        )
        context = ApiContext(settings, backend, client, tokens, metrics)
        app.state.context = context
        if tokens.local_mode:
            log.warning("no API tokens configured: local mode, auth is OFF (loopback only)")
        else:
            log.info("bearer auth on: %d token(s)", len(tokens))
        connecting = asyncio.create_task(context.connect_nats())
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            if context.fanout is not None:
                await context.fanout.close()
            await client.close()
            await backend.close()

    app = FastAPI(
        title="jetledger API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    for module in (
        routes_ops,
        routes_sessions,
        routes_runs,
        routes_misc,
        routes_commands,
        routes_replies,
        routes_sse,
    ):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app


__all__ = ["ApiConfigError", "check_settings", "create_app"]
