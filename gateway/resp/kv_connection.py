"""The keyspace's own NATS connection, opened like the store's (decision 29)."""

from __future__ import annotations

import nats
from nats.aio.client import Client as NatsClient

from eventstore.connection import ConnectOptions


async def connect(options: ConnectOptions, *, no_echo: bool, name_suffix: str) -> NatsClient:
    """A second connection with ``options`` (the store's), optionally without echo: a
    subscription on it never receives what this connection itself published."""
    kwargs = {**options.nats_kwargs(), "no_echo": no_echo, "name": options.name + name_suffix}
    nc = await nats.connect(**kwargs)
    # As eventstore.connection.connect: bounded attempts to connect, then reconnect always.
    nc.options["max_reconnect_attempts"] = options.max_reconnect_attempts
    return nc


__all__ = ["connect"]
