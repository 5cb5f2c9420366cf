"""The keyspace on JetStream KV beyond what parity can show: several adapters sharing
one bucket stay atomic, expired keys leave the bucket on their own, any key or value
bytes round-trip, by-framework's v1/v2 keys work, and stream keys answer WRONGTYPE."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from respkit import (
    Endpoint,
    RawClient,
    adapter_settings,
    start_adapter,
    writes_again_after_restart,
)
from storekit import isolated_settings

from eventstore.embedded import EmbeddedNatsServer
from eventstore.store import EventStore
from gateway.resp.key_names import decode_key, encode_key
from gateway.resp.lease_scripts import HEARTBEAT_CAS_SHA
from gateway.resp.server import RespServer

WRONGTYPE = "-WRONGTYPE Operation against a key holding the wrong kind of value"


@pytest.fixture
async def twin_adapters(nats_url: str) -> AsyncIterator[list[RespServer]]:
    """Two adapters (two NATS connections) over the same log and the same KV bucket."""
    store_settings = isolated_settings()
    settings = adapter_settings()
    stores = [await EventStore.open(nats_url, store_settings) for _ in range(2)]
    servers = [RespServer(store, settings) for store in stores]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.close()
        for store in stores:
            await store.close()


async def clients_of(servers: list[RespServer], per_server: int) -> list[RawClient]:
    return [
        await RawClient.connect(server.host, server.port)
        for server in servers
        for _ in range(per_server)
    ]


async def test_two_adapters_increment_and_setnx_atomically(twin_adapters: list[RespServer]) -> None:
    clients = await clients_of(twin_adapters, 3)
    try:

        async def bump(client: RawClient) -> None:
            for _ in range(10):
                await client.call("HINCRBY", "shared:counter", "n", "1")

        await asyncio.gather(*(bump(client) for client in clients))
        assert await clients[0].call("HGET", "shared:counter", "n") == "60"
        assert await clients[-1].call("HGET", "shared:counter", "n") == "60"
        winners = await asyncio.gather(
            *(
                client.call("SET", "shared:lock", f"o{i}", "NX", "EX", "30")
                for i, client in enumerate(clients)
            )
        )
        assert sorted(w == "+OK" for w in winners) == [False] * 5 + [True]
    finally:
        for client in clients:
            await client.close()


async def test_an_adapter_sees_writes_of_the_other(twin_adapters: list[RespServer]) -> None:
    a, b = await clients_of(twin_adapters, 1)
    try:
        assert await a.call("HSET", "h", "f", "1") == 1
        assert await b.call("HINCRBY", "h", "f", "5") == 6
        # a's remembered revision is stale now: its next change must still see 6.
        assert await a.call("HINCRBY", "h", "f", "1") == 7
        assert await b.call("DEL", "h") == 1
        assert await a.call("HSETNX", "h", "f", "new") == 1
        assert await b.call("HGETALL", "h") == ["f", "new"]
        assert await a.call("SET", "s", "x", "NX") == "+OK"
        assert await b.call("SET", "s", "y", "NX") is None
        assert await b.call("DEL", "s") == 1
        assert await a.call("SET", "s", "z", "NX") == "+OK"
    finally:
        await a.close()
        await b.close()


async def test_expired_keys_leave_the_bucket(adapter_server: RespServer, adapter: Endpoint) -> None:
    client = await RawClient.connect(adapter.host, adapter.port)
    try:
        assert await client.call("SET", "short", "v", "PX", "200") == "+OK"
        assert await client.call("HSET", "gone", "f", "v") == 1
        assert await client.call("DEL", "gone") == 1
        assert await client.call("SET", "kept", "v") == "+OK"
        await adapter_server.keyspace.stored()  # written behind the replies (decision 27)
        assert "d0.short" in await adapter_server.keyspace.kv.keys("d0.")
        for _ in range(60):  # per-message TTL (1 s granularity) and the 1 s delete marker
            if await adapter_server.keyspace.kv.keys("d0.") == ["d0.kept"]:
                break
            await asyncio.sleep(0.1)
        assert await adapter_server.keyspace.kv.keys("d0.") == ["d0.kept"]
        assert await client.call("GET", "short") is None
    finally:
        await client.close()


@pytest.mark.parametrize(
    "key",
    [
        b"",
        b"plain",
        b"a:b:c",
        b"byai_gateway:v2:session:{s1}:data_stream",
        b"dots.and spaces*>\x00\xff=/",
    ],
)
def test_key_encoding_round_trips(key: bytes) -> None:
    encoded = encode_key(key)
    assert decode_key(encoded) == key
    assert all(ch.isalnum() or ch in "-_/=" for ch in encoded)


async def test_binary_keys_and_values_and_byframework_keys(adapter: Endpoint) -> None:
    client = await RawClient.connect(adapter.host, adapter.port)
    try:
        binary_key, binary_value = b"bin:\x00\xff.key", b"\x80\x81 not utf-8 \xfe"
        assert await client.call("SET", binary_key, binary_value) == "+OK"
        assert await client.call("GET", binary_key) == binary_value
        assert await client.call("HSET", b"h\xff", b"f\x00", binary_value) == 1
        assert await client.call("HGETALL", b"h\xff") == ["f\x00", binary_value]
        v1 = "byai_gateway:session:s-1:registry"
        v2 = "byai_gateway:v2:session:{s-1}:registry"
        for key in (v1, v2):
            assert await client.call("HSET", key, "exec:e1", '{"status": "QUEUED"}') == 1
            assert await client.call("EXPIRE", key, "604800") == 1
        assert sorted(await client.call("KEYS", "byai_gateway:*registry")) == sorted([v1, v2])
        assert await client.call("KEYS", "byai_gateway:v2:session:{s-1}:*") == [v2]
    finally:
        await client.close()


async def test_stream_keys_are_part_of_the_keyspace(adapter: Endpoint) -> None:
    client = await RawClient.connect(adapter.host, adapter.port)
    try:
        stream = "byai_gateway:ctrl:agent_type:echo"
        entry_id = await client.call("XADD", stream, "*", "data", "{}")
        assert isinstance(entry_id, str) and "-" in entry_id
        assert await client.call("TYPE", stream) == "+stream"
        assert await client.call("EXISTS", stream, "nothing") == 1
        assert await client.call("HSET", stream, "f", "v") == WRONGTYPE
        assert await client.call("GET", stream) == WRONGTYPE
        assert await client.call("SADD", stream, "m") == WRONGTYPE
        assert await client.call("TTL", stream) == -1
        assert await client.call("EXPIRE", stream, "100") == 1
        assert stream in await client.call("KEYS", "byai_gateway:ctrl:*")
        cursor, keys = await client.call("SCAN", "0", "MATCH", "*agent_type*", "COUNT", "100")
        assert (cursor, keys) == ("0", [stream])
        assert await client.call("SET", "plain", "v") == "+OK"
        assert await client.call("XADD", "plain", "*", "f", "v") == WRONGTYPE
        assert await client.call("DEL", stream) == 1
        assert await client.call("EXISTS", stream) == 0
    finally:
        await client.close()


async def test_broker_restart_is_an_error_reply_then_service_resumes(
    killable_nats_server: EmbeddedNatsServer,
) -> None:
    # Confirmed writes: the SET made while the broker is away gets the error itself.
    settings = adapter_settings(request_timeout=1.0, kv_write_behind=False)
    store, server = await start_adapter(killable_nats_server.url, settings)
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("SET", "k", "v1") == "+OK"
        killable_nats_server.kill()
        reply = await client.call("SET", "k", "v2")
        assert reply.startswith("-ERR jetledger redis: JetStream unavailable")
        assert await client.call("PING") == "+PONG"  # the connection itself is fine
        await writes_again_after_restart(client, killable_nats_server)
    finally:
        await client.close()
        await server.close()
        await store.close()


async def test_other_scripts_are_refused_clearly(adapter: Endpoint) -> None:
    client = await RawClient.connect(adapter.host, adapter.port)
    try:
        script = "return redis.call('GET', KEYS[1])"
        sha = hashlib.sha1(script.encode()).hexdigest()
        assert await client.call("EVAL", script, "1", "k") == (
            "-ERR jetledger redis does not run Lua scripts: only by-framework's worker-lease "
            f"scripts are recognised (this script's sha1 is {sha})"
        )
        assert await client.call("SCRIPT", "LOAD", script) == (
            "-ERR jetledger redis does not run Lua scripts: only by-framework's worker-lease "
            f"scripts are recognised (this script's sha1 is {sha})"
        )
        assert await client.call("EVALSHA", sha, "0") == (
            "-NOSCRIPT No matching script. Please use EVAL."
        )
        assert await client.call("SCRIPT", "EXISTS", sha, HEARTBEAT_CAS_SHA) == [0, 1]
    finally:
        await client.close()


async def test_client_setinfo_info_and_command(adapter: Endpoint) -> None:
    # Redis 7.0 (the parity server here) has no CLIENT SETINFO; redis-py >= 5 sends it.
    client = await RawClient.connect(adapter.host, adapter.port)
    try:
        assert await client.call("CLIENT", "SETINFO", "LIB-NAME", "redis-py") == "+OK"
        assert await client.call("CLIENT", "SETINFO", "LIB-VER", "7.4.0") == "+OK"
        assert await client.call("CLIENT", "SETINFO", "COLOR", "x") == (
            "-ERR Unrecognized option 'COLOR'"
        )
        assert isinstance(await client.call("CLIENT", "ID"), int)
        assert await client.call("SET", "k", "v") == "+OK"
        info = await client.call("INFO")
        assert "redis_version:7.0.0" in info and "\r\ndb0:keys=1," in info
        assert "# Keyspace" in await client.call("INFO", "keyspace")
        assert "# Server" not in await client.call("INFO", "keyspace")
        count = await client.call("COMMAND", "COUNT")
        assert count == len(await client.call("COMMAND")) and count > 60
        assert await client.call("COMMAND", "INFO", "get", "nope") == [
            ["get", 2, ["+readonly"], 1, 1, 1],
            None,
        ]
        assert await client.call("DBSIZE") == 1
        assert await client.call("FLUSHDB") == "+OK"
        assert await client.call("DBSIZE") == 0
    finally:
        await client.close()


async def test_values_beyond_the_server_payload_are_refused(adapter: Endpoint) -> None:
    client = await RawClient.connect(adapter.host, adapter.port)
    try:
        big = b"x" * (2 * 1024 * 1024)
        reply = await client.call("SET", "big", big)
        assert reply.startswith("-ERR value too large for jetledger redis: ")
        assert await client.call("EXISTS", "big") == 0
        assert await client.call("HSET", "h", "f", "small") == 1
        assert (await client.call("HSET", "h", "g", big)).startswith("-ERR value too large")
        assert await client.call("HGETALL", "h") == ["f", "small"]
    finally:
        await client.close()
