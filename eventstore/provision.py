"""``ensure``: create or update the log stream, KV buckets and object store idempotently.

A changed setting updates the stream in place; a change the server cannot make (for
example the storage type) is reported as :class:`StreamConfigError` with the server's
reason and the fields that differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from eventstore.errors import StreamConfigError
from eventstore.jsapi import ERR_STREAM_NOT_FOUND, JetStreamApiError, api_request
from eventstore.settings import StoreSettings

log = logging.getLogger(__name__)

FAST_INGEST_VERSION = (2, 14, 0)
NANOS = 1_000_000_000


def timer_root(settings: StoreSettings) -> str:
    """Prefix of the subjects that hold durable timers (JetStream message schedules).

    It is a subject space of the same stream (a schedule's target must be in its own
    stream) but outside ``<root>.>``: every reader filters on ``<root>.>``, so a timer
    waiting to fire is never read as an event; only the command it fires is.
    """
    return f"{settings.root}_timers"


@dataclass(frozen=True, slots=True)
class EnsureReport:
    """What ``ensure`` did: ``created``, ``updated`` (with the changed fields) or ``unchanged``."""

    stream: str
    action: str
    changed: tuple[str, ...] = ()


def desired_stream_config(
    settings: StoreSettings, server_version: tuple[int, int, int]
) -> dict[str, Any]:
    """The stream configuration of DESIGN §3: one limits-retention, file-backed log."""
    config: dict[str, Any] = {
        "name": settings.stream,
        "subjects": [settings.subjects_wildcard, f"{timer_root(settings)}.>"],
        "retention": "limits",
        "storage": "file",
        "num_replicas": settings.replicas,
        "max_age": int(settings.max_age_seconds * NANOS),
        "max_bytes": settings.max_bytes,
        "max_msg_size": settings.max_msg_size,
        "duplicate_window": int(settings.duplicate_window_seconds * NANOS),
        "discard": "old",
        "allow_direct": True,
        "allow_atomic": True,
        "allow_msg_ttl": True,
        # Durable timers of parked runs (runners.timers); message schedules, server 2.12+.
        "allow_msg_schedules": True,
    }
    if server_version >= FAST_INGEST_VERSION:
        config["allow_batched"] = True
    return config


def _differences(current: dict[str, Any], desired: dict[str, Any]) -> tuple[str, ...]:
    changed = []
    for key, value in desired.items():
        existing = current.get(key)
        if existing is None and value in (False, 0, -1):
            continue  # the server omits zero values; absent equals the default
        if existing != value:
            changed.append(key)
    return tuple(changed)


async def ensure_stream(
    nc: NatsClient, settings: StoreSettings, server_version: tuple[int, int, int]
) -> EnsureReport:
    desired = desired_stream_config(settings, server_version)
    name = settings.stream
    timeout = settings.request_timeout
    try:
        info = await api_request(nc, f"$JS.API.STREAM.INFO.{name}", timeout=timeout)
    except JetStreamApiError as exc:
        if exc.err_code != ERR_STREAM_NOT_FOUND:
            raise
        await api_request(nc, f"$JS.API.STREAM.CREATE.{name}", desired, timeout=timeout)
        log.info("created stream %s on %s", name, settings.subjects_wildcard)
        return EnsureReport(name, "created")
    current: dict[str, Any] = info["config"]
    changed = _differences(current, desired)
    if not changed:
        return EnsureReport(name, "unchanged")
    try:
        await api_request(
            nc, f"$JS.API.STREAM.UPDATE.{name}", {**current, **desired}, timeout=timeout
        )
    except JetStreamApiError as exc:
        detail = ", ".join(f"{key}: {current.get(key)!r} -> {desired[key]!r}" for key in changed)
        raise StreamConfigError(
            f"stream {name} exists with settings that cannot be changed in place "
            f"({detail}): {exc.description}. Use another stream name "
            f"(JETLEDGER_STREAM) or migrate the data."
        ) from exc
    log.info("updated stream %s: %s", name, ", ".join(changed))
    return EnsureReport(name, "updated", changed)


async def ensure_buckets(js: JetStreamContext, settings: StoreSettings) -> None:
    """KV buckets and the object store; creating an existing one is a no-op."""
    for bucket in settings.kv_buckets:
        await js.create_key_value(bucket=bucket, history=1, replicas=settings.replicas)
    await js.create_object_store(bucket=settings.object_bucket, replicas=settings.replicas)


__all__ = [
    "EnsureReport",
    "desired_stream_config",
    "ensure_buckets",
    "ensure_stream",
    "timer_root",
]
