"""Settings of the log: names, limits and timeouts, each overridable from the environment.

Every timeout is a setting so tests can run with one- or two-second values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Self

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
MIN_SERVER_VERSION = (2, 12, 1)
"""2.12.0 introduced atomic batches; 2.12.1 is the first to accept ``Nats-Msg-Id`` inside them."""

ENV_PREFIX = "JETLEDGER_"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where and how the log lives on JetStream (DESIGN §3)."""

    stream: str = "JETLEDGER"
    """Stream name; several deployments may share an account with different names."""

    root: str = "jl"
    """First subject token; the stream captures ``<root>.>``."""

    replicas: int = 1
    """Stream replicas (use 3 on a cluster)."""

    max_age_seconds: float = 0.0
    """Retention by age; 0 keeps events forever (G8: set it in production)."""

    max_bytes: int = -1
    """Retention by size; -1 is unlimited."""

    duplicate_window_seconds: float = 120.0
    """How long ``Nats-Msg-Id`` dedupe remembers an event id (G3)."""

    max_msg_size: int = 1024 * 1024
    """Largest event body in bytes; larger payloads go to the Object Store."""

    kv_buckets: tuple[str, ...] = ("jl_state", "jl_workers")
    """KV buckets ensured at start-up."""

    object_bucket: str = "jl_objects"
    """Object Store bucket for artifacts and long tool output."""

    request_timeout: float = 5.0
    """Seconds to wait for a JetStream API answer or a publish acknowledgement."""

    append_retries: int = 8
    """How often a publish is retried after a timeout or a lost connection."""

    append_retry_backoff: float = 0.25
    """Seconds before the first retry; doubles each time up to ``request_timeout``."""

    batch_size: int = 1000
    """Events per atomic batch in ``append_many`` (server limit: 1000)."""

    flow_window: int = 500
    """Events between flow acknowledgements in fast-ingest ``append_many``."""

    max_inflight: int = 2000
    """Upper bound on events sent but not yet acknowledged in ``append_many``."""

    bulk_reads: bool = True
    """Let ``EventStore.records`` (projectors, replay, export) read with batched direct
    gets on a connection of its own instead of an ordered consumer."""

    subscribe_idle_heartbeat: float = 5.0
    """Idle heartbeat of ordered consumers; a missed beat recreates the consumer."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Self:
        """Defaults, then ``JETLEDGER_<FIELD>`` variables, then keyword overrides.

        >>> StoreSettings.from_env({"JETLEDGER_STREAM": "DEV"}).stream
        'DEV'
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(ENV_PREFIX + spec.name.upper())
            if raw is None:
                continue
            default = getattr(cls(), spec.name)
            values[spec.name] = _parse_env_value(spec.name, raw, default)
        return replace(cls(**values), **overrides)

    @property
    def subjects_wildcard(self) -> str:
        return f"{self.root}.>"


def _parse_env_value(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type(default).__name__}"
        ) from exc
    return raw


def nats_url_from_env(environ: dict[str, str] | None = None) -> str:
    """``JETLEDGER_NATS_URL`` if set, else ``nats://127.0.0.1:4222``."""
    env = os.environ if environ is None else environ
    return env.get("JETLEDGER_NATS_URL") or DEFAULT_NATS_URL


__all__ = ["DEFAULT_NATS_URL", "MIN_SERVER_VERSION", "StoreSettings", "nats_url_from_env"]
