"""What every request handler shares: settings, the read model, the NATS client, the
tokens and the metrics; and the dependencies that hand them to routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventstore.errors import EventStoreError
from gateway.api.auth import LOCAL, Principal, Scope, TokenTable
from gateway.api.errors import ApiError, NatsUnavailable
from gateway.api.fanout import FanOut
from gateway.api.metrics import ApiMetrics
from gateway.api.settings import ApiSettings
from gateway.client import GatewayClient
from projections.contract import ReadModelBackend

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ApiContext:
    settings: ApiSettings
    backend: ReadModelBackend
    client: GatewayClient
    tokens: TokenTable
    metrics: ApiMetrics
    nats_ready: asyncio.Event = field(default_factory=asyncio.Event)
    nats_error: str = "not connected yet"
    fanout: FanOut | None = None

    def gateway(self) -> GatewayClient:
        """The connected client, or 503 while NATS is away."""
        if not self.nats_ready.is_set():
            raise NatsUnavailable(self.nats_error)
        nc = self.client.store.nc
        if not nc.is_connected:
            raise NatsUnavailable("the connection is down (reconnecting)")
        return self.client

    async def connect_nats(self) -> None:
        """Connect, retrying until it works: the API serves reads while NATS is away."""
        while True:
            try:
                await self.client.connect()
            except (EventStoreError, OSError, TimeoutError) as exc:
                self.nats_error = str(exc) or type(exc).__name__
                log.warning(
                    "cannot reach NATS at %s (%s); retrying in %gs",
                    self.client.nats_url,
                    self.nats_error,
                    self.settings.nats_connect_retry_seconds,
                )
                await asyncio.sleep(self.settings.nats_connect_retry_seconds)
            else:
                self.fanout = FanOut(self.client.store, self.settings.sse_queue_events)
                self.nats_ready.set()
                return

    def live(self) -> FanOut:
        """The live fan-out, or 503 while NATS is away."""
        self.gateway()
        if self.fanout is None:
            raise NatsUnavailable(self.nats_error)
        return self.fanout


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]

_bearer = HTTPBearer(auto_error=False, description="A token from the API's token file.")


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks ``scope``."""

    async def check(
        context: Context,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if context.tokens.local_mode:
            return LOCAL
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "unauthorized", "a bearer token is required")
        entry = context.tokens.lookup(credentials.credentials)
        if entry is None:
            raise ApiError(401, "unauthorized", "unknown bearer token")
        if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
            raise ApiError(401, "token_expired", f"token {entry.principal.name!r} has expired")
        if not entry.principal.has(scope):
            raise ApiError(
                403,
                "insufficient_scope",
                f"this route needs the {scope!r} scope",
                {"needed": scope, "granted": sorted(entry.principal.scopes)},
            )
        return entry.principal

    return check


Reader = Annotated[Principal, Depends(require("read"))]
Writer = Annotated[Principal, Depends(require("write"))]
Admin = Annotated[Principal, Depends(require("admin"))]

__all__ = ["Admin", "ApiContext", "Context", "Reader", "Writer", "get_context", "require"]
