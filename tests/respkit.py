"""Fixtures for the RESP adapter: an adapter on a free port over the test's nats-server,
and a parametrised target that runs the same test body against real redis-server.

Use them with ``from respkit import adapter, adapter_server, resp_target  # noqa: F401``
(pytest finds fixtures imported into a test module).

* ``adapter_server``: a started :class:`~gateway.resp.server.RespServer` (isolated
  stream, KV buckets and short timeouts).
* ``adapter``: its ``Endpoint(host, port)``.
* ``resp_target``: ``Target`` for ``redis`` (127.0.0.1:6379, DB 9, keys under a unique
  prefix deleted afterwards) and for ``adapter`` (same DB and prefix): parity tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import pytest
import redis.asyncio as aioredis
from storekit import isolated_settings

from eventstore.embedded import EmbeddedNatsServer
from eventstore.store import EventStore
from gateway.resp.server import RespServer
from gateway.resp.settings import RespSettings
from gateway.resp.stream_space import StreamSpaceSettings

REAL_REDIS_HOST = "127.0.0.1"
REAL_REDIS_PORT = 6379
PARITY_DB = 9
RAW_REPLY_TIMEOUT = 5.0


class Endpoint(NamedTuple):
    host: str
    port: int


def adapter_settings(**overrides: Any) -> RespSettings:
    """Settings with a bucket of their own and 1-2 s timeouts."""
    tag = uuid.uuid4().hex[:8]
    streams = StreamSpaceSettings(
        ack_wait_seconds=2.0,
        consumer_alive_seconds=2.0,
        progress_interval_seconds=0.5,  # 1.5 s of slack before the ack wait on a loaded machine
        block_poll_seconds=0.2,
        meta_bucket=f"rs{tag}",
        request_timeout=2.0,
    )
    settings = RespSettings(
        port=0,
        kv_bucket=f"rk{tag}",
        request_timeout=2.0,
        shutdown_timeout=1.0,
        streams=streams,
    )
    return replace(settings, **overrides)


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (Redis compares ids as two numbers)."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def start_adapter(nats_url: str, settings: RespSettings) -> tuple[EventStore, RespServer]:
    store = await EventStore.open(nats_url, isolated_settings())
    server = RespServer(store, settings)
    try:
        await server.start()
    except BaseException:
        await store.close()
        raise
    return store, server


@pytest.fixture
async def adapter_server(nats_url: str) -> AsyncIterator[RespServer]:
    store, server = await start_adapter(nats_url, adapter_settings())
    try:
        yield server
    finally:
        await server.close()
        await store.close()


@pytest.fixture
def adapter(adapter_server: RespServer) -> Endpoint:
    return Endpoint(adapter_server.host, adapter_server.port)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a parity test talks to: ``name`` is ``redis`` or ``adapter``."""

    name: str
    host: str
    port: int
    db: int
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def raw(self) -> RawClient:
        """A :class:`RawClient` on this target's DB."""
        return await RawClient.connect(self.host, self.port, self.db)

    def client(self, **options: Any) -> aioredis.Redis:
        """A redis-py client (``decode_responses=True`` unless told otherwise)."""
        options.setdefault("decode_responses", True)
        return aioredis.Redis(host=self.host, port=self.port, db=self.db, **options)


async def _delete_prefix(target: Target) -> None:
    client = target.client()
    try:
        keys = [key async for key in client.scan_iter(match=f"{target.prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["redis", "adapter"])
def resp_endpoint(request: pytest.FixtureRequest) -> Target:
    """Real redis-server, then the adapter (started only for that case)."""
    prefix = f"parity:{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        return Target("redis", REAL_REDIS_HOST, REAL_REDIS_PORT, PARITY_DB, prefix)
    endpoint: Endpoint = request.getfixturevalue("adapter")
    return Target("adapter", endpoint.host, endpoint.port, PARITY_DB, prefix)


@pytest.fixture
async def resp_target(resp_endpoint: Target) -> AsyncIterator[Target]:
    """:func:`resp_endpoint`, with its keys deleted afterwards."""
    try:
        yield resp_endpoint
    finally:
        await _delete_prefix(resp_endpoint)


def _frame(args: tuple[object, ...]) -> bytes:
    words = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
    return b"*%d\r\n" % len(words) + b"".join(
        b"$%d\r\n%b\r\n" % (len(word), word) for word in words
    )


class RawClient:
    """A minimal RESP client that shows replies as sent: ``"+OK"`` for a simple string,
    ``"-ERR ..."`` for an error, ``str`` (or ``bytes`` if not UTF-8) for a bulk string,
    ``int``, ``None``, lists, and RESP3 maps as dicts. No client-side interpretation,
    so parity tests compare what the servers really said."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, db: int = 0) -> RawClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        if db:
            assert await client.call("SELECT", db) == "+OK"
        return client

    async def call(self, *args: object) -> Any:
        self._writer.write(_frame(args))
        await self._writer.drain()
        return await asyncio.wait_for(self._reply(), RAW_REPLY_TIMEOUT)

    async def pipeline(self, *commands: tuple[object, ...]) -> list[Any]:
        """Send every command in one write, then read one reply per command."""
        self._writer.write(b"".join(_frame(command) for command in commands))
        await self._writer.drain()
        return [await asyncio.wait_for(self._reply(), RAW_REPLY_TIMEOUT) for _ in commands]

    async def _reply(self) -> Any:
        line = (await self._reader.readuntil(b"\r\n"))[:-2]
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return (kind + rest).decode()
        if kind == b":":
            return int(rest)
        if kind in (b"$", b"="):
            if int(rest) < 0:
                return None
            data = (await self._reader.readexactly(int(rest) + 2))[:-2]
            try:
                return data.decode()
            except UnicodeDecodeError:
                return data
        if kind in (b"*", b"~", b">"):
            if int(rest) < 0:
                return None
            return [await self._reply() for _ in range(int(rest))]
        if kind == b"%":
            return {await self._reply(): await self._reply() for _ in range(int(rest))}
        if kind == b"_":
            return None
        if kind == b",":
            return float(rest)
        if kind == b"#":
            return rest == b"t"
        raise AssertionError(f"unexpected RESP reply line {line!r}")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


async def writes_again_after_restart(client: RawClient, server: EmbeddedNatsServer) -> None:
    """Restart the (killed) broker; the same client connection writes and reads again."""
    await server.restart()
    for _ in range(100):  # the adapter reconnects within a few seconds
        if await client.call("SET", "k", "v3") == "+OK":
            break
        await asyncio.sleep(0.1)
    assert await client.call("GET", "k") == "v3"


class TwoAdapters(NamedTuple):
    """A client of the test's adapter, a second adapter on the same KV bucket (as a
    second replica of one deployment), and a client of that one."""

    client: RawClient
    other: RespServer
    elsewhere: RawClient


@contextlib.asynccontextmanager
async def adapter_beside(
    nats_url: str, server: RespServer, **overrides: Any
) -> AsyncIterator[tuple[RespServer, RawClient]]:
    """A second adapter on ``server``'s KV bucket (settings ``overrides``) and a client
    of it: what another replica of the deployment sees. Closed on the way out."""
    settings = adapter_settings(kv_bucket=server.settings.kv_bucket, **overrides)
    other_store, other = await start_adapter(nats_url, settings)
    try:
        elsewhere = await RawClient.connect(other.host, other.port)
        try:
            yield other, elsewhere
        finally:
            await elsewhere.close()
    finally:
        await other.close()
        await other_store.close()


@contextlib.asynccontextmanager
async def two_adapters(
    nats_url: str, server: RespServer, **overrides: Any
) -> AsyncIterator[TwoAdapters]:
    """:func:`adapter_beside`, plus a client of ``server`` itself."""
    async with adapter_beside(nats_url, server, **overrides) as (other, elsewhere):
        client = await RawClient.connect(server.host, server.port)
        try:
            yield TwoAdapters(client, other, elsewhere)
        finally:
            await client.close()
