"""Connecting to NATS: authentication and TLS options passed through to nats-py, and
the server-version gate (jetledger refuses servers older than 2.12.1).
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import NoServersError

from eventstore.errors import ServerUnreachableError, ServerVersionError
from eventstore.settings import MIN_SERVER_VERSION, nats_url_from_env

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to reach the NATS server. Every field maps onto a nats-py ``connect`` option."""

    url: str = ""
    """``nats://host:port`` (comma-separated for several); empty means JETLEDGER_NATS_URL."""
    user: str | None = None
    password: str | None = None
    token: str | None = None
    credentials_file: Path | None = None
    """A ``.creds`` file (JWT + NKey seed) for decentralized auth."""
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_hostname: str | None = None
    name: str = "jetledger"
    connect_timeout: float = 5.0
    connect_attempts: int = 3
    """Tries per server for the first connection; then the URL is reported unreachable."""
    max_reconnect_attempts: int = -1
    """-1 retries forever: a restarting server must not end a long-lived process."""
    reconnect_wait: float = 0.5
    drain_timeout: float = 2.0
    """Seconds ``close`` waits for subscriptions to drain before closing anyway."""
    pending_size: int = 64 * 1024 * 1024
    """Bytes nats-py buffers while reconnecting; bulk appends stage frames here."""

    def resolved_url(self) -> str:
        return self.url or nats_url_from_env()

    def tls_context(self) -> ssl.SSLContext | None:
        if not (self.tls_ca_file or self.tls_cert_file):
            return None
        context = ssl.create_default_context(
            cafile=str(self.tls_ca_file) if self.tls_ca_file else None
        )
        if self.tls_cert_file:
            context.load_cert_chain(
                str(self.tls_cert_file), str(self.tls_key_file) if self.tls_key_file else None
            )
        return context

    def nats_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`nats.connect`."""
        kwargs: dict[str, Any] = {
            "servers": [part.strip() for part in self.resolved_url().split(",") if part.strip()],
            "name": self.name,
            "connect_timeout": self.connect_timeout,
            "max_reconnect_attempts": max(1, self.connect_attempts),
            "reconnect_time_wait": self.reconnect_wait,
            "pending_size": self.pending_size,
            "drain_timeout": self.drain_timeout,
            "allow_reconnect": True,
            "error_cb": _log_error,
            "disconnected_cb": _log_disconnected,
            "reconnected_cb": _log_reconnected,
        }
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["password"] = self.password or ""
        if self.token is not None:
            kwargs["token"] = self.token
        if self.credentials_file is not None:
            kwargs["user_credentials"] = str(self.credentials_file)
        tls = self.tls_context()
        if tls is not None:
            kwargs["tls"] = tls
            if self.tls_hostname:
                kwargs["tls_hostname"] = self.tls_hostname
        return kwargs


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)


async def _log_disconnected() -> None:
    # Also called on a deliberate close, so not a warning by itself.
    log.info("nats: disconnected")


async def _log_reconnected() -> None:
    log.info("nats: reconnected")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"2.12.1-RC.2"`` -> ``(2, 12, 1)``; unparseable -> ``(0, 0, 0)``."""
    match = _VERSION_RE.search(text)
    if match is None:
        return (0, 0, 0)
    major, minor, patch = (int(part) for part in match.groups())
    return (major, minor, patch)


def check_server_version(found: str) -> tuple[int, int, int]:
    version = parse_version(found)
    if version < MIN_SERVER_VERSION:
        shown = ".".join(map(str, version)) if version != (0, 0, 0) else found
        raise ServerVersionError(shown, ".".join(map(str, MIN_SERVER_VERSION)))
    return version


async def connect(options: ConnectOptions | None = None) -> NatsClient:
    """Connect, then refuse a server older than 2.12.1 with a message naming both versions."""
    options = options or ConnectOptions()
    try:
        nc = await nats.connect(**options.nats_kwargs())
    except (NoServersError, OSError, TimeoutError) as exc:
        raise ServerUnreachableError(
            f"cannot reach NATS at {options.resolved_url()} after {options.connect_attempts} "
            f"attempts ({type(exc).__name__}); is the server running? "
            "`jetledger server` starts one"
        ) from exc
    # The bound above is for the first connection only; once connected, keep reconnecting.
    nc.options["max_reconnect_attempts"] = options.max_reconnect_attempts
    try:
        check_server_version(str(nc.connected_server_version))
    except ServerVersionError:
        await nc.close()
        raise
    return nc


__all__ = ["ConnectOptions", "check_server_version", "connect", "parse_version"]
