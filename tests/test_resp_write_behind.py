"""Write-behind (decision 27): a plain write is answered once it is decided and in line
in its key's change queue, before JetStream acknowledges it; this adapter's reads see it
at once; compare-and-set style commands still wait for the acknowledgement; a write
that fails after its early reply is reported to the client's next command and the value
is read back from the server afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from respkit import (
    RawClient,
    adapter_beside,
    adapter_settings,
    start_adapter,
    two_adapters,
    writes_again_after_restart,
)

from eventstore.embedded import EmbeddedNatsServer
from gateway.resp.server import RespServer
from gateway.resp.values import StoredValue

HELD_REPLY_SECONDS = 0.3
Put = Callable[[str, bytes, int, float | None], Awaitable[int]]


class HeldWrites:
    """Holds every KV write of the adapter until released (or fails them)."""

    def __init__(self, server: RespServer) -> None:
        self.released = asyncio.Event()
        self.fail_with: BaseException | None = None
        self.started = 0
        self._put: Put = server.keyspace.kv.put
        server.keyspace.kv.put = self.put  # type: ignore[method-assign]

    async def put(self, key: str, body: bytes, expected: int, ttl: float | None) -> int:
        self.started += 1
        await self.released.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return await self._put(key, body, expected, ttl)


@pytest.fixture
async def server(nats_url: str) -> AsyncIterator[RespServer]:
    store, started = await start_adapter(nats_url, adapter_settings())
    try:
        yield started
    finally:
        await started.close()
        await store.close()


async def info_stat(client: RawClient, name: str) -> int:
    text: Any = await client.call("INFO", "stats")
    for line in str(text).splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":", 1)[1])
    raise AssertionError(f"{name} not in INFO stats")


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def stored(server: RespServer, key: str) -> StoredValue | None:
    """What the KV bucket holds for ``key`` (DB 0): what every other reader would get."""
    record = await server.keyspace.kv.get(f"d0.{key}")
    return None if record is None or record.body is None else StoredValue.decode(record.body)


async def test_write_is_answered_before_its_acknowledgement_and_read_back(
    server: RespServer,
) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("HSET", "h", "a", "1") == 1
        await wait_until(lambda: not server.keyspace._queues.busy("d0.h"))  # stored
        held = HeldWrites(server)
        # Answered while its write is held; this adapter's reads see the new value...
        assert await client.call("HSET", "h", "b", "2") == 1
        assert await client.call("HGETALL", "h") == ["a", "1", "b", "2"]
        await wait_until(lambda: held.started == 1)  # after kv_write_linger
        # ...which the bucket does not have yet.
        before = await stored(server, "h")
        assert before is not None and before.data == {b"a": b"1"}
        held.released.set()
        await wait_until(lambda: not server.keyspace._queues.busy("d0.h"))
        assert await info_stat(client, "jetledger_kv_early_replies") >= 1
        # Stored as answered; later changes of the key apply on top of it.
        assert await client.call("HINCRBY", "h", "a", "5") == 6
        assert await client.call("EXPIRE", "h", "100") == 1
        await wait_until(lambda: not server.keyspace._queues.busy("d0.h"))
        after = await stored(server, "h")
        assert after is not None and after.data == {b"a": b"6", b"b": b"2"}
        assert after.expire_at_ms is not None
        assert 0 < after.expire_at_ms - time.time() * 1000 <= 100_000
    finally:
        await client.close()


async def test_a_write_answered_here_is_stored_before_another_adapter_can_write(
    server: RespServer, nats_url: str
) -> None:
    # Two adapters on one bucket: a reply here must mean "stored", or a client's next
    # write through the other adapter (a blind SET) could be stored before it.
    async with two_adapters(nats_url, server) as (client, other, elsewhere):
        for round_no in range(20):
            assert await client.call("SET", "k", f"here {round_no}") == "+OK"
            assert await elsewhere.call("SET", "k", f"there {round_no}") == "+OK"
            await server.keyspace.stored()
            await other.keyspace.stored()
            value = await stored(server, "k")
            assert value is not None and value.data == f"there {round_no}".encode()
        assert await info_stat(client, "jetledger_kv_early_replies") == 0


async def test_compare_and_set_commands_wait_for_the_acknowledgement(
    server: RespServer,
) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("SET", "warm", "x") == "+OK"
        held = HeldWrites(server)
        for command in (("SET", "lock", "me", "NX", "PX", "5000"), ("INCR", "counter")):
            pending = asyncio.ensure_future(client.call(*command))
            await asyncio.sleep(HELD_REPLY_SECONDS)
            assert not pending.done(), f"{command[0]} answered before it was stored"
            held.released.set()
            assert await pending in ("+OK", 1)
            held.released.clear()
        held.released.set()
    finally:
        await client.close()


async def test_a_failed_write_behind_is_reported_and_not_read_back(server: RespServer) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("SET", "k", "stored") == "+OK"
        await wait_until(lambda: not server.keyspace._queues.busy("d0.k"))
        held = HeldWrites(server)
        held.fail_with = TimeoutError()
        assert await client.call("SET", "k", "lost") == "+OK"  # answered early
        held.released.set()
        await wait_until(lambda: server.keyspace.lost_writes == 1)
        # The next command is not run: it carries the report instead.
        reply = await client.call("GET", "k")
        assert reply.startswith("-ERR jetledger redis: a write to 'k' was answered before")
        assert "TimeoutError" in reply and "it may be lost" in reply
        held.fail_with = None
        # The cache forgot the early value: the server's value is read again.
        assert await client.call("GET", "k") == "stored"
        assert await info_stat(client, "jetledger_kv_lost_writes") == 1
        # Other clients were not told: the write was not theirs.
        other = await RawClient.connect(server.host, server.port)
        assert await other.call("PING") == "+PONG"
        await other.close()
    finally:
        await client.close()


async def test_broker_outage_with_write_behind_never_loses_a_write_silently(
    killable_nats_server: EmbeddedNatsServer,
) -> None:
    store, server = await start_adapter(
        killable_nats_server.url, adapter_settings(request_timeout=1.0)
    )
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("SET", "k", "v1") == "+OK"
        await wait_until(lambda: not server.keyspace._queues.busy("d0.k"))
        killable_nats_server.kill()
        reply = await client.call("SET", "k", "v2")
        if reply == "+OK":  # answered before the adapter saw the broker go
            for _ in range(50):  # the write times out after request_timeout
                reply = await client.call("PING")
                if reply != "+PONG":
                    break
                await asyncio.sleep(0.1)
            assert reply.startswith("-ERR jetledger redis: a write to 'k' was answered")
        else:
            assert reply.startswith("-ERR jetledger redis: JetStream unavailable")
        assert await client.call("PING") == "+PONG"
        await writes_again_after_restart(client, killable_nats_server)
    finally:
        await client.close()
        await server.close()
        await store.close()


async def test_shutdown_lets_writes_behind_finish(nats_url: str) -> None:
    settings = adapter_settings()
    store, server = await start_adapter(nats_url, settings)
    client = await RawClient.connect(server.host, server.port)
    held = HeldWrites(server)
    assert await client.call("SET", "late", "v") == "+OK"
    await client.close()
    closing = asyncio.ensure_future(server.close())
    await asyncio.sleep(0.1)
    held.released.set()  # acknowledged during the shutdown grace time
    await closing
    await store.close()
    store, reopened = await start_adapter(nats_url, settings)
    try:
        client = await RawClient.connect(reopened.host, reopened.port)
        assert await client.call("GET", "late") == "v"
        await client.close()
    finally:
        await reopened.close()
        await store.close()


async def test_write_behind_pauses_while_another_adapter_writes(
    server: RespServer, nats_url: str
) -> None:
    async with two_adapters(nats_url, server) as (client, _other, elsewhere):
        assert await client.call("SET", "mine", "1") == "+OK"
        assert await elsewhere.call("SET", "theirs", "1") == "+OK"
        await wait_until(lambda: not server.keyspace.cache.alone_for(1.0))
        held = HeldWrites(server)
        # Even a key only this adapter wrote: its view of the bucket may lag now.
        pending = asyncio.ensure_future(client.call("SET", "mine", "2"))
        await asyncio.sleep(HELD_REPLY_SECONDS)
        assert not pending.done(), "answered early while another adapter writes"
        held.released.set()
        assert await pending == "+OK"


async def test_changes_behind_a_write_in_flight_are_answered_at_once(
    server: RespServer, nats_url: str
) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("HSET", "h", "n", "0") == 1
        await wait_until(lambda: not server.keyspace._queues.busy("d0.h"))
        held = HeldWrites(server)
        assert await client.call("HSET", "h", "a", "1") == 1  # its write is held
        # Decided on the value in flight, in order, without waiting for it:
        assert await client.call("HINCRBY", "h", "n", "5") == 5
        assert await client.call("HDEL", "h", "a") == 1
        assert await client.call("HINCRBY", "h", "n", "1") == 6
        assert await client.call("HGETALL", "h") == ["n", "6"]
        # One write (after kv_write_linger, with the changes decided meanwhile).
        await wait_until(lambda: held.started >= 1)
        await asyncio.sleep(0.05)
        assert held.started == 1
        # A compare-and-set still waits for the acknowledged value.
        pending = asyncio.ensure_future(client.call("HSETNX", "h", "n", "x"))
        await asyncio.sleep(HELD_REPLY_SECONDS)
        assert not pending.done()
        held.released.set()
        assert await pending == 0
        await wait_until(lambda: not server.keyspace._queues.busy("d0.h"))
        assert not server.keyspace._settled  # nothing held once everything is stored
        async with adapter_beside(nats_url, server) as (_other, elsewhere):
            assert await elsewhere.call("HGETALL", "h") == ["n", "6"]  # stored as answered
    finally:
        await client.close()


async def test_a_change_too_large_to_store_is_refused_not_answered(server: RespServer) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("HSET", "big", "a", "1") == 1
        await wait_until(lambda: not server.keyspace._queues.busy("d0.big"))
        held = HeldWrites(server)
        assert await client.call("HSET", "big", "b", "2") == 1  # in flight
        huge = "x" * (server.keyspace.kv.max_value_size + 1)
        reply = await client.call("HSET", "big", "c", huge)  # decided on the value in flight
        assert reply.startswith("-ERR value too large for jetledger redis")
        held.released.set()
        await wait_until(lambda: not server.keyspace._queues.busy("d0.big"))
        assert await client.call("HKEYS", "big") == ["a", "b"]
        assert server.keyspace.lost_writes == 0
    finally:
        await client.close()


async def test_whole_bucket_commands_wait_for_writes_behind(server: RespServer) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("SET", "warm", "x") == "+OK"
        await wait_until(lambda: not server.keyspace._queues.busy("d0.warm"))
        held = HeldWrites(server)
        assert await client.call("SET", "warm", "y") == "+OK"  # in flight
        counting = asyncio.ensure_future(client.call("DBSIZE"))
        await asyncio.sleep(HELD_REPLY_SECONDS)
        assert not counting.done()  # the server's key list must include that write
        held.released.set()
        assert await counting == 1
        held.released.clear()
        assert await client.call("SET", "warm", "z") == "+OK"  # in flight again
        flushing = asyncio.ensure_future(client.call("FLUSHDB"))
        await asyncio.sleep(HELD_REPLY_SECONDS)
        assert not flushing.done()  # landing after the purge would bring the key back
        held.released.set()
        assert await flushing == "+OK"
        assert await client.call("DBSIZE") == 0
        assert await client.call("GET", "warm") is None
    finally:
        await client.close()
