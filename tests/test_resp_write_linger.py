"""Fewer and cheaper KV writes (decision 29): writes behind their replies wait
``kv_write_linger`` for the key's next changes and carry them in one message, unless
another adapter of the bucket is around; a plain ``SET`` of a key this adapter does not
know is written without reading it first; large hashes are encoded field by field."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from respkit import RawClient, adapter_beside, adapter_settings, start_adapter, two_adapters

from gateway.resp.hash_encodings import HashEncodings
from gateway.resp.server import RespServer
from gateway.resp.values import StoredValue


@pytest.fixture
async def server(nats_url: str) -> AsyncIterator[RespServer]:
    store, started = await start_adapter(nats_url, adapter_settings(kv_write_linger=0.2))
    try:
        yield started
    finally:
        await started.close()
        await store.close()


async def test_changes_during_the_linger_share_one_write(server: RespServer, nats_url: str) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("HSET", "h", "n", "0") == 1
        await server.keyspace.stored()
        writes = server.keyspace.kv.writes
        # Answered at once, a few ms apart, well within the 0.2 s linger:
        assert await client.call("HSET", "h", "a", "1") == 1
        await asyncio.sleep(0.01)
        assert await client.call("HINCRBY", "h", "n", "5") == 5
        assert await client.call("EXPIRE", "h", "100") == 1
        assert await client.call("HDEL", "h", "a") == 1
        assert await client.call("HGETALL", "h") == ["n", "5"]
        await server.keyspace.stored()
        assert server.keyspace.kv.writes == writes + 1
        async with adapter_beside(nats_url, server) as (_other, elsewhere):
            assert await elsewhere.call("HGETALL", "h") == ["n", "5"]  # stored as answered
            assert 0 < int(await elsewhere.call("TTL", "h")) <= 100
    finally:
        await client.close()


async def test_a_change_that_needs_the_write_cuts_the_linger_short(server: RespServer) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        assert await client.call("HSET", "h", "n", "0") == 1
        await server.keyspace.stored()
        assert await client.call("HSET", "h", "a", "1") == 1  # lingers 0.2 s
        started = asyncio.get_running_loop().time()
        assert await client.call("HSETNX", "h", "n", "x") == 0  # answered once stored
        assert asyncio.get_running_loop().time() - started < 0.15
    finally:
        await client.close()


async def test_no_linger_while_another_adapter_is_around(server: RespServer, nats_url: str) -> None:
    async with two_adapters(nats_url, server) as (client, _other, elsewhere):
        for _ in range(100):  # the adapters announce themselves to each other
            if not server.keyspace.cache.peerless_for(1.0):
                break
            await asyncio.sleep(0.01)
        assert await client.call("HSET", "h", "f", "1") == 1
        await asyncio.sleep(0.05)  # an acknowledgement, not the 0.2 s linger
        assert await elsewhere.call("HGET", "h", "f") == "1"


async def test_a_plain_set_of_an_unknown_key_reads_nothing(
    server: RespServer, nats_url: str
) -> None:
    async with two_adapters(nats_url, server) as (client, other, elsewhere):
        # Keys another adapter wrote (so not cached here), of other types:
        assert await elsewhere.call("HSET", "k", "f", "v") == 1
        assert await elsewhere.call("SET", "s", "old", "EX", "100") == "+OK"
        await other.keyspace.stored()
        reads = server.keyspace.kv.reads
        assert await client.call("SET", "k", "new") == "+OK"  # replaces the hash
        assert await client.call("SET", "s", "v2") == "+OK"  # and drops the TTL
        assert await client.call("SET", "fresh", "1", "PX", "100000") == "+OK"
        assert server.keyspace.kv.reads == reads
        await server.keyspace.stored()
        assert await elsewhere.call("TYPE", "k") == "+string"
        assert await elsewhere.call("GET", "k") == "new"
        assert await elsewhere.call("TTL", "s") == -1
        assert await elsewhere.call("GET", "fresh") == "1"
        # KEEPTTL and GET still read the old value:
        assert await client.call("SET", "s", "v3", "KEEPTTL") == "+OK"
        assert await client.call("SET", "s", "v4", "GET") == "v3"


def test_field_by_field_encoding_is_byte_for_byte_the_whole_encoding() -> None:
    encodings = HashEncodings(min_fields=4)
    rnd = random.Random(7)
    data: dict[bytes, bytes] = {}
    for step in range(400):
        data = dict(data)  # as change functions do: a new dict, most values shared
        for _ in range(rnd.randint(0, 3)):
            field = (
                rnd.randbytes(rnd.randint(0, 5))
                if rnd.random() < 0.3
                else b"f%d" % rnd.randint(0, 60)
            )
            value = rnd.randbytes(rnd.randint(0, 9)) if rnd.random() < 0.3 else 'v"\\é\n'.encode()
            data[field] = value + str(step).encode()
        if data and rnd.random() < 0.25:
            del data[rnd.choice(list(data))]
        value_ = StoredValue("hash", data, rnd.choice([None, 1_900_000_000_000]))
        assert encodings.encode("d0.k", value_) == value_.encode()
        assert StoredValue.decode(encodings.encode("d0.k", value_)) == value_
    fields = len(data)
    before = encodings.fields_encoded
    data = {**data, b"one more": b"x"}
    encodings.encode("d0.k", StoredValue("hash", data, None))
    assert encodings.encode("d0.k", StoredValue("hash", data, None))
    assert encodings.fields_encoded == before + 1  # only the new field, of fields + 1
    assert fields > 20


async def test_own_writes_do_not_come_back_to_the_watch(server: RespServer, nats_url: str) -> None:
    cache = server.keyspace.cache
    async with two_adapters(nats_url, server, kv_write_linger=0.0) as (client, _other, elsewhere):
        assert await client.call("HSET", "mine", "f", "1") == 1
        await server.keyspace.stored()
        await cache.sync_now()
        seen = cache.writes_seen
        assert await client.call("HSET", "mine", "f", "2") == 0
        await server.keyspace.stored()
        await cache.sync_now()
        assert cache.writes_seen == seen  # no echo of this adapter's own write
        # ...while another adapter's write still reaches the watch and drops the key:
        assert await elsewhere.call("HSET", "mine", "f", "3") == 0
        for _ in range(100):
            if cache.writes_seen > seen:
                break
            await asyncio.sleep(0.01)
        assert cache.writes_seen == seen + 1
        assert await client.call("HGET", "mine", "f") == "3"


async def test_a_del_during_the_linger_joins_the_write(server: RespServer) -> None:
    client = await RawClient.connect(server.host, server.port)
    try:
        writes = server.keyspace.kv.writes
        assert await client.call("SET", "snapshot", "v", "EX", "100") == "+OK"
        assert await client.call("DEL", "snapshot") == 1  # answered once stored
        assert server.keyspace.kv.writes == writes + 1  # the delete marker only
        assert await client.call("EXISTS", "snapshot") == 0
        assert await server.keyspace.kv.get("d0.snapshot") is not None  # a marker...
        record = await server.keyspace.kv.get("d0.snapshot")
        assert record is not None and record.body is None  # ...with no value
    finally:
        await client.close()


async def test_a_starting_adapter_serves_only_once_lingering_writes_here_are_stored(
    nats_url: str,
) -> None:
    # A long linger makes the window wide: this adapter answers the SET at once and
    # would write it a second later. The adapter that starts meanwhile greets this one
    # and serves clients once answered; the answer waits for the write, so the client's
    # next SET of the key (blind, through the new adapter) is stored after it.
    store, here = await start_adapter(nats_url, adapter_settings(kv_write_linger=1.5))
    try:
        client = await RawClient.connect(here.host, here.port)
        try:
            assert await client.call("SET", "k", "here") == "+OK"
            assert here.keyspace.kv.writes == 0  # answered, lingering
            async with adapter_beside(nats_url, here) as (other, elsewhere):
                assert await elsewhere.call("SET", "k", "there") == "+OK"
                await other.keyspace.stored()
                await here.keyspace.stored()
                record = await here.keyspace.kv.get("d0.k")
                assert record is not None and record.body is not None
                assert b"there" in record.body
                assert await client.call("GET", "k") == "there"
        finally:
            await client.close()
    finally:
        await here.close()
        await store.close()
