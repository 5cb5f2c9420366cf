"""What the adapter does to be fast keeps Redis's semantics: pipelined XADDs appended
together still reply in order (a refused one with its own error) with ids strictly
increasing per key; changes of one key written together (EXEC, contention) still apply
in order and exactly once; the KV cache never serves a value that expired, was deleted,
or was replaced through another adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from respkit import Endpoint, RawClient, adapter_settings, id_key
from storekit import isolated_settings

from eventstore.store import EventStore
from gateway.resp.server import RespServer
from gateway.resp.settings import RespSettings
from gateway.resp.stream_args import EXPLICIT_ID

WRONGTYPE = "-WRONGTYPE Operation against a key holding the wrong kind of value"
CACHE_CATCH_UP_SECONDS = 1.0


async def twin(nats_url: str, settings: RespSettings) -> tuple[list[EventStore], list[RespServer]]:
    store_settings = isolated_settings()
    stores = [await EventStore.open(nats_url, store_settings) for _ in range(2)]
    servers = [RespServer(store, settings) for store in stores]
    for server in servers:
        await server.start()
    return stores, servers


@pytest.fixture
async def twins(nats_url: str) -> AsyncIterator[list[RespServer]]:
    """Two adapters (two NATS connections) over one log and one KV bucket."""
    stores, servers = await twin(nats_url, adapter_settings())
    try:
        yield servers
    finally:
        for server in servers:
            await server.close()
        for store in stores:
            await store.close()


async def connect(server: RespServer) -> RawClient:
    return await RawClient.connect(server.host, server.port)


async def test_pipelined_xadds_reply_in_order_and_a_refused_one_fails_alone(
    adapter: Endpoint,
) -> None:
    client = await RawClient.connect(*adapter)
    try:
        assert await client.call("HSET", "not-a-stream", "f", "v") == 1
        replies = await client.pipeline(
            ("XADD", "pipe", "*", "n", "1"),
            ("XADD", "pipe", "5-0", "n", "2"),
            ("XADD", "not-a-stream", "*", "n", "3"),
            ("XADD", "pipe", "*", "n"),
            ("XADD", "pipe", "MAXLEN", "~", "10", "*", "n", "5"),
            ("XADD", "absent", "NOMKSTREAM", "*", "n", "6"),
            ("XADD", "pipe", "*", "n", "7"),
        )
        assert replies[1] == "-" + EXPLICIT_ID
        assert replies[2] == WRONGTYPE
        assert replies[3] == "-ERR wrong number of arguments for 'xadd' command"
        assert replies[5] is None
        stored = [replies[0], replies[4], replies[6]]
        assert all(isinstance(entry_id, str) for entry_id in stored)
        assert sorted(stored, key=id_key) == stored and len(set(stored)) == 3
        entries = await client.call("XRANGE", "pipe", "-", "+")
        assert [(entry[0], entry[1][1]) for entry in entries] == list(
            zip(stored, ["1", "5", "7"], strict=True)
        )
        assert await client.call("EXISTS", "absent") == 0
        # A command after the XADDs in the same pipeline still runs, after them.
        tail = await client.pipeline(("XADD", "pipe", "*", "n", "8"), ("XLEN", "pipe"))
        assert tail[1] == 4
    finally:
        await client.close()


async def test_concurrent_pipelines_give_strictly_increasing_ids(twins: list[RespServer]) -> None:
    clients = [await connect(twins[0]), await connect(twins[0]), await connect(twins[1])]
    per_pipeline, rounds = 150, 3
    try:

        async def produce(index: int, client: RawClient) -> list[str]:
            ids: list[str] = []
            for round_ in range(rounds):
                commands = [
                    ("XADD", "shared", "*", "who", index, "n", round_ * per_pipeline + n)
                    for n in range(per_pipeline)
                ]
                ids += await client.pipeline(*commands)
            return ids

        produced = await asyncio.gather(*(produce(i, c) for i, c in enumerate(clients)))
        for ids in produced:
            assert all(isinstance(entry_id, str) for entry_id in ids)
            assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})
        entries = await clients[0].call("XRANGE", "shared", "-", "+")
        all_ids = [entry[0] for entry in entries]
        assert len(all_ids) == len(clients) * rounds * per_pipeline
        assert [id_key(i) for i in all_ids] == sorted({id_key(i) for i in all_ids})
        for index, ids in enumerate(produced):
            mine = [entry for entry in entries if entry[1][1] == str(index)]
            assert [entry[0] for entry in mine] == ids
            assert [int(entry[1][3]) for entry in mine] == list(range(rounds * per_pipeline))
    finally:
        for client in clients:
            await client.close()


async def test_contended_hincrby_ends_with_the_exact_total(twins: list[RespServer]) -> None:
    tasks_per_adapter, increments = 64, 5
    clients = [await connect(server) for server in twins for _ in range(tasks_per_adapter)]
    try:

        async def bump(client: RawClient) -> None:
            for _ in range(increments):
                reply = await client.call("HINCRBY", "contended", "n", 1)
                assert isinstance(reply, int), reply

        # 64 concurrent tasks (one connection each) per adapter.
        await asyncio.gather(*(bump(client) for client in clients))
        expected = 2 * tasks_per_adapter * increments
        assert await clients[0].call("HGET", "contended", "n") == str(expected)
        assert await clients[-1].call("HGET", "contended", "n") == str(expected)
    finally:
        for client in clients:
            await client.close()


async def test_changes_of_one_key_in_exec_apply_in_order(adapter: Endpoint) -> None:
    client = await RawClient.connect(*adapter)
    try:
        replies = await client.pipeline(
            ("MULTI",),
            ("HSET", "status", "running", "0", "done", "0"),
            ("HINCRBY", "status", "running", "1"),
            ("ZADD", "index", "5", "a"),
            ("HINCRBY", "status", "running", "-1"),
            ("HINCRBY", "status", "done", "1"),
            ("HGET", "status", "done"),
            ("EXPIRE", "status", "100"),
            ("ZREM", "index", "a"),
            ("HDEL", "status", "running"),
            ("SET", "status", "replaced"),
            ("GET", "status"),
            ("HSET", "status", "f", "v"),
            ("DEL", "status", "index"),
            ("EXISTS", "status"),
            ("EXEC",),
        )
        assert replies[0] == "+OK" and all(reply == "+QUEUED" for reply in replies[1:-1])
        assert replies[-1] == [2, 1, 1, 0, 1, "1", 1, 1, 1, "+OK", "replaced", WRONGTYPE, 1, 0]
    finally:
        await client.close()


async def test_cache_forgets_expired_and_deleted_keys(adapter: Endpoint) -> None:
    client = await RawClient.connect(*adapter)
    try:
        assert await client.call("SET", "short", "v", "PX", 300) == "+OK"
        assert await client.call("GET", "short") == "v"
        await asyncio.sleep(0.4)
        assert await client.call("GET", "short") is None
        assert await client.call("SET", "short", "again", "NX") == "+OK"
        assert await client.call("HSET", "h", "f", "1") == 1
        assert await client.call("HGET", "h", "f") == "1"
        assert await client.call("DEL", "h") == 1
        assert await client.call("HGET", "h", "f") is None
        assert await client.call("HINCRBY", "h", "f", "2") == 2
    finally:
        await client.close()


async def read_until(client: RawClient, expected: object, *command: object) -> object:
    """The reply once it is ``expected``, or the last one after the catch-up bound."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CACHE_CATCH_UP_SECONDS
    reply = await client.call(*command)
    while reply != expected and loop.time() < deadline:
        await asyncio.sleep(0.01)
        reply = await client.call(*command)
    return reply


async def test_cache_sees_writes_and_flushes_of_another_adapter(twins: list[RespServer]) -> None:
    a, b = await connect(twins[0]), await connect(twins[1])
    try:
        assert await a.call("SET", "k", "1") == "+OK"
        assert await a.call("GET", "k") == "1"  # cached in a now
        assert await b.call("SET", "k", "2") == "+OK"
        assert await read_until(a, "2", "GET", "k") == "2"
        assert await a.call("INCR", "k") == 3  # a CAS on a's stale revision would fail
        assert await b.call("GET", "k") == "3"
        assert await b.call("DEL", "k") == 1
        assert await read_until(a, None, "GET", "k") is None
        assert await a.call("HSET", "h", "f", "v") == 1
        assert await a.call("HGET", "h", "f") == "v"
        assert await b.call("FLUSHDB") == "+OK"
        assert await read_until(a, 0, "EXISTS", "h") == 0
    finally:
        await a.close()
        await b.close()


async def test_synced_cache_sees_another_adapters_write_at_once(nats_url: str) -> None:
    stores, servers = await twin(nats_url, adapter_settings(kv_cache_sync=True))
    a, b = await connect(servers[0]), await connect(servers[1])
    try:
        for round_ in range(20):
            assert await a.call("GET", "k") == (None if round_ == 0 else str(round_ - 1))
            assert await b.call("SET", "k", round_) == "+OK"
            assert await a.call("GET", "k") == str(round_)
    finally:
        await a.close()
        await b.close()
        for server in servers:
            await server.close()
        for store in stores:
            await store.close()


async def test_info_counts_kv_round_trips(adapter: Endpoint) -> None:
    client = await RawClient.connect(*adapter)
    try:
        before = parse_info(await client.call("INFO", "stats"))
        await client.call("SET", "counted", "1")
        for _ in range(5):
            assert await client.call("GET", "counted") == "1"
        await client.call("DBSIZE")  # waits for the write behind the SET's reply
        after = parse_info(await client.call("INFO", "stats"))
        assert after["jetledger_kv_writes"] - before["jetledger_kv_writes"] == 1
        # A plain SET does not read the key (decision 29); the GETs of a key it wrote
        # come from the cache.
        assert after["jetledger_kv_reads"] - before["jetledger_kv_reads"] == 0
        assert after["keyspace_hits"] - before["keyspace_hits"] >= 5
        commandstats = await client.call("INFO", "commandstats")
        assert "cmdstat_get:calls=5," in commandstats
    finally:
        await client.close()


def parse_info(text: str) -> dict[str, int]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: int(value) for name, value in pairs if value.isdigit()}
