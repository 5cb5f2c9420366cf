"""Settings of the HTTP API, each overridable by ``JETLEDGER_API_<FIELD>`` (every timeout
is a setting, so tests run with one- or two-second values)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Self

from eventstore.settings import nats_url_from_env
from projections.backends import DEFAULT_DB_URL

ENV_PREFIX = "JETLEDGER_API_"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class ApiSettingsError(ValueError):
    """A ``JETLEDGER_API_*`` value cannot be parsed."""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the API listens, what it reads and how patient it is."""

    host: str = "127.0.0.1"
    """Interface to bind. Without tokens only a loopback address is allowed."""
    port: int = 8000
    """TCP port; 0 picks a free one."""
    db_url: str = ""
    """Read-model URL (``$JETLEDGER_DB_URL``, else ``./.jetledger/readmodel.db``)."""
    nats_url: str = ""
    """NATS URL (``$JETLEDGER_NATS_URL``, else ``nats://127.0.0.1:4222``)."""
    db_namespace: str = "jl"
    """Table prefix of the read model (as given to the projector)."""
    tokens_file: str = ""
    """JSON or TOML file with bearer tokens (see :mod:`gateway.api.auth`)."""
    tokens: str = ""
    """Bearer tokens as JSON (env ``JETLEDGER_API_TOKENS``), added to the file's."""
    default_page_size: int = 50
    max_page_size: int = 500
    max_body_bytes: int = 1024 * 1024
    """Larger request bodies are refused with 413."""
    readyz_max_lag: int = 1000
    """``/readyz`` fails when the read model is more events than this behind the log."""
    sse_heartbeat_seconds: float = 15.0
    """A comment line is sent on an idle live tail this often, so proxies keep it open."""
    sse_queue_events: int = 1000
    """Events buffered per live tail before the tail waits for its slow client."""
    wait_max_seconds: float = 30.0
    """Upper bound of ``?wait=`` on commands."""
    wait_poll_seconds: float = 0.05
    """How often ``?wait=`` polls the read model's checkpoint."""
    filter_scan_rows: int = 5000
    """Rows a list route scans per page for a token restricted to some sessions."""
    nats_connect_retry_seconds: float = 2.0
    """Pause between attempts to reach NATS when it was away at start-up."""
    db_start_attempts: int = 20
    """Attempts to open the read model at start-up (a projector may be creating it)."""
    db_start_retry_seconds: float = 0.25
    worker_probe_seconds: float = 1.0
    """How long ``POST messages`` looks for a live worker before answering 503."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Self:
        """Defaults, then ``JETLEDGER_API_<FIELD>``, then keyword overrides; ``db_url`` and
        ``nats_url`` fall back to ``JETLEDGER_DB_URL`` / ``JETLEDGER_NATS_URL``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(ENV_PREFIX + spec.name.upper())
            if raw is not None:
                values[spec.name] = _parse(spec.name, raw, getattr(cls(), spec.name))
        settings = replace(cls(**values), **overrides)
        return replace(
            settings,
            db_url=settings.db_url or env.get("JETLEDGER_DB_URL") or DEFAULT_DB_URL,
            nats_url=settings.nats_url or nats_url_from_env(dict(env)),
        )

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        raise ApiSettingsError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type(default).__name__}"
        ) from exc
    return raw


__all__ = ["LOOPBACK_HOSTS", "ApiSettings", "ApiSettingsError"]
