"""Prometheus metrics: request latency by route template (recorded by middleware) and,
sampled at scrape time from the read model and the log, runs by status, projection lag,
events per second and live workers. Each app has its own registry, so several apps (tests)
never share counters."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from projections.contract import ReadModelBackend

RUN_STATUSES = (
    "queued",
    "running",
    "waiting",
    "asked_user",
    "completed",
    "failed",
    "cancelled",
    "dead_lettered",
)


class ApiMetrics:
    """The API's collectors, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._last_sample: tuple[float, int] | None = None
        self.request_seconds = Histogram(
            "jetledger_api_request_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.runs = Gauge(
            "jetledger_runs", "Runs in the read model by status", ["status"], registry=self.registry
        )
        self.lag = Gauge(
            "jetledger_projection_lag_events",
            "Log events not yet in the read model (stream last seq - checkpoint)",
            registry=self.registry,
        )
        self.checkpoint = Gauge(
            "jetledger_projection_checkpoint",
            "Last stream sequence applied to the read model (rate() of it is events/s)",
            registry=self.registry,
        )
        self.events_per_second = Gauge(
            "jetledger_events_per_second",
            "Events projected per second between the last two scrapes",
            registry=self.registry,
        )
        self.live_workers = Gauge(
            "jetledger_live_workers", "Workers whose status is live", registry=self.registry
        )
        self.sse_clients = Gauge(
            "jetledger_api_sse_clients", "Open live tails", registry=self.registry
        )
        self.commands = Counter(
            "jetledger_api_commands", "Commands accepted by kind", ["kind"], registry=self.registry
        )

    async def sample(self, backend: ReadModelBackend, stream_last_seq: int | None) -> None:
        """Refresh the gauges that describe the read model and the log."""
        counts = await backend.counts()
        for status in RUN_STATUSES:
            self.runs.labels(status=status).set(counts.get(f"runs:{status}", 0))
        checkpoint = await backend.checkpoint()
        self.checkpoint.set(checkpoint)
        if stream_last_seq is not None:
            self.lag.set(max(0, stream_last_seq - checkpoint))
        workers = await backend.list_workers()
        self.live_workers.set(sum(1 for worker in workers if worker.status == "live"))
        now = time.monotonic()
        if self._last_sample is not None and now > self._last_sample[0]:
            before, seq = self._last_sample
            self.events_per_second.set(max(0, checkpoint - seq) / (now - before))
        self._last_sample = (now, checkpoint)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Times every HTTP request and labels it with its route template (``/v1/runs/{run_id}``,
    never the concrete path, so label cardinality stays bounded)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(
                method=scope["method"], route=template, status=str(status)
            ).observe(time.perf_counter() - started)


__all__ = ["RUN_STATUSES", "ApiMetrics", "LatencyMiddleware"]
