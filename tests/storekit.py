"""Shared helpers for tests that talk to a real JetStream through EventStore."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from eventstore.catalog import MessageDelta, MessageDeltaData
from eventstore.settings import StoreSettings
from eventstore.store import EventStore


def isolated_settings(**overrides: Any) -> StoreSettings:
    """A stream and subject root of its own, so tests may share an external server."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "stream": f"T{tag}",
        "root": f"t{tag}",
        "kv_buckets": (f"kv{tag}",),
        "object_bucket": f"obj{tag}",
        "request_timeout": 2.0,
        "append_retry_backoff": 0.1,
        "subscribe_idle_heartbeat": 1.0,
    }
    values.update(overrides)
    return StoreSettings(**values)


@asynccontextmanager
async def open_store(url: str, settings: StoreSettings | None = None) -> AsyncIterator[EventStore]:
    store = await EventStore.open(url, settings or isolated_settings())
    try:
        yield store
    finally:
        await store.close()


def delta(index: int, session_id: str = "s1", run_id: str = "r1", size: int = 160) -> MessageDelta:
    """A ~300-byte event, the size the ingest benchmark uses."""
    text = (f"{index:08d} " * (size // 9 + 1))[:size]
    return MessageDelta(
        session_id=session_id, run_id=run_id, data=MessageDeltaData(text=text, index=index)
    )
