"""Parity: the same test bodies against real redis-server and the adapter, asserting
identical replies, error texts included (``resp_target`` runs each test twice).

The command tables (``resp_parity_tables``) hold the replies real redis-server 7.0 gave;
every run checks them against both servers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from resp_parity_tables import TABLES
from respkit import RawClient, Target

from gateway.resp.lease_scripts import HEARTBEAT_CAS_SHA, REFRESH_LOCK_SHA, RELEASE_LOCK_SHA

WRONGTYPE = "-WRONGTYPE Operation against a key holding the wrong kind of value"


@pytest.fixture
async def r(resp_target: Target) -> AsyncIterator[RawClient]:
    client = await resp_target.raw()
    try:
        yield client
    finally:
        await client.close()


async def run(r: RawClient, prefix: str, *commands: tuple[str, ...]) -> list[Any]:
    return [await r.call(*(arg.replace("{p}", prefix) for arg in cmd)) for cmd in commands]


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_command_table(r: RawClient, resp_target: Target, table: str) -> None:
    commands = [command for command, _ in TABLES[table]]
    expected = [reply for _, reply in TABLES[table]]
    assert await run(r, resp_target.prefix, *commands) == expected


async def test_hello_3_with_redis_py(resp_target: Target) -> None:
    client = resp_target.client(protocol=3)
    try:
        hello = await client.execute_command("HELLO", "3")
        assert {k: hello[k] for k in ("server", "proto", "mode", "role", "modules")} == {
            "server": "redis",
            "proto": 3,
            "mode": "standalone",
            "role": "master",
            "modules": [],
        }
        key = resp_target.key("h3")
        await client.hset(key, mapping={"a": "1"})
        assert await client.hgetall(key) == {"a": "1"}
        assert await client.get(resp_target.key("missing")) is None
        assert await client.zadd(resp_target.key("z3"), {"m": 1.5}) == 1
        assert await client.zscore(resp_target.key("z3"), "m") == 1.5
    finally:
        await client.aclose()


async def test_resp3_raw_replies(resp_target: Target) -> None:
    client = await resp_target.raw()
    try:
        hello = await client.call("HELLO", "3")
        assert hello["proto"] == 3 and hello["server"] == "redis"
        key = resp_target.key("r3")
        replies = await run(
            client,
            resp_target.prefix,
            ("HSET", key, "a", "1"),
            ("HGETALL", key),
            ("GET", resp_target.key("none")),
            ("ZADD", resp_target.key("z"), "0.5", "m"),
            ("ZSCORE", resp_target.key("z"), "m"),
            ("ZRANGE", resp_target.key("z"), "0", "-1", "WITHSCORES"),
        )
        assert replies == [1, {"a": "1"}, None, 1, 0.5, [["m", 0.5]]]
    finally:
        await client.close()


async def test_keys_expire_on_time(r: RawClient, resp_target: Target) -> None:
    a, b = resp_target.key("a"), resp_target.key("b")
    assert await r.call("SET", a, "1", "PX", "150") == "+OK"
    assert await r.call("HSET", b, "f", "1") == 1
    assert await r.call("PEXPIRE", b, "150") == 1
    assert 0 < await r.call("PTTL", a) <= 150
    await asyncio.sleep(0.4)
    replies = [await r.call(*cmd) for cmd in (("GET", a), ("HGET", b, "f"), ("EXISTS", a, b))]
    assert replies == [None, None, 0]
    assert await r.call("TTL", a) == -2
    assert await r.call("SET", a, "x", "EX", "1", "NX") == "+OK"
    assert await r.call("EXPIRE", a, "0") == 1
    assert await r.call("EXISTS", a) == 0


async def test_type_keys_and_scan(r: RawClient, resp_target: Target) -> None:
    p = resp_target.prefix
    for command in (
        ("SET", p + "str", "v"),
        ("HSET", p + "hash", "f", "v"),
        ("SADD", p + "set", "m"),
        ("ZADD", p + "zset", "1", "m"),
        ("RPUSH", p + "list", "i"),
        *(("SET", f"{p}many:{i}", str(i)) for i in range(25)),
    ):
        await r.call(*command)
    types = [await r.call("TYPE", p + name) for name in ("str", "hash", "set", "zset", "list", "x")]
    assert types == ["+string", "+hash", "+set", "+zset", "+list", "+none"]
    assert sorted(await r.call("KEYS", p + "many:1*")) == sorted(
        [f"{p}many:1"] + [f"{p}many:{i}" for i in range(10, 20)]
    )
    assert sorted(await r.call("KEYS", p + "[hs]*")) == [p + "hash", p + "set", p + "str"]
    assert sorted(await r.call("KEYS", p + "s?t")) == [p + "set"]
    seen: list[str] = []
    cursor = "0"
    for _ in range(10_000):
        cursor, page = await r.call("SCAN", cursor, "MATCH", p + "many:*", "COUNT", "7")
        seen += page
        if cursor == "0":
            break
    assert sorted(set(seen)) == sorted(f"{p}many:{i}" for i in range(25))
    typed: list[str] = []
    cursor = "0"
    for _ in range(10_000):
        cursor, page = await r.call("SCAN", cursor, "MATCH", p + "*", "TYPE", "hash")
        typed += page
        if cursor == "0":
            break
    assert typed == [p + "hash"]
    errors = [
        await r.call("SCAN", "x"),
        await r.call("SCAN", "0", "COUNT", "0"),
        await r.call("SCAN", "0", "MATCH"),
    ]
    assert errors == ["-ERR invalid cursor", "-ERR syntax error", "-ERR syntax error"]


async def test_redis_py_pipeline_is_a_transaction(resp_target: Target) -> None:
    r = resp_target.client()
    k, h = resp_target.key("tx"), resp_target.key("txh")
    try:
        async with r.pipeline(transaction=True) as pipe:
            pipe.set(k, "1").incr(k).hset(h, mapping={"a": "1"}).expire(h, 60).hget(k, "f")
            pipe.get(k)
            results = await pipe.execute(raise_on_error=False)
        assert [str(x) if isinstance(x, Exception) else x for x in results] == [
            True,
            2,
            1,
            True,
            WRONGTYPE[1:],
            "2",
        ]
        assert await r.ttl(h) == 60
    finally:
        await r.aclose()


async def test_concurrent_increments_and_setnx(resp_target: Target) -> None:
    h, lock = resp_target.key("counter"), resp_target.key("lock")
    clients = [resp_target.client() for _ in range(4)]
    try:

        async def bump(client: aioredis.Redis) -> None:
            for _ in range(15):
                await client.hincrby(h, "n", 1)

        await asyncio.gather(*(bump(client) for client in clients))
        assert await clients[0].hget(h, "n") == "60"
        winners = await asyncio.gather(
            *(client.set(lock, f"owner{i}", nx=True, ex=30) for i, client in enumerate(clients))
        )
        assert sorted(bool(w) for w in winners) == [False, False, False, True]
    finally:
        for client in clients:
            await client.aclose()


async def test_lease_scripts_by_sha(r: RawClient, resp_target: Target) -> None:
    # The scripts' text is by-framework's, not ours: real Redis can run them by sha1
    # only once by-framework (e.g. its real-package test) has loaded them.
    loaded = await r.call("SCRIPT", "EXISTS", HEARTBEAT_CAS_SHA, REFRESH_LOCK_SHA, RELEASE_LOCK_SHA)
    if loaded != [1, 1, 1]:
        pytest.skip("real Redis has not loaded by-framework's lease scripts")
    lease = resp_target.key("lease")
    mine = '{"version":1,"token":"t1","last_seen":1,"ip_address":""}'
    theirs = '{"version":1,"token":"t2","last_seen":2,"ip_address":""}'
    replies = [
        await r.call(*command)
        for command in (
            ("EVALSHA", HEARTBEAT_CAS_SHA, "1", lease, "t1", mine, "30"),
            ("TTL", lease),
            ("EVALSHA", HEARTBEAT_CAS_SHA, "1", lease, "t2", theirs, "30"),
            ("EVALSHA", HEARTBEAT_CAS_SHA, "1", lease, "", theirs, "30"),
            ("EVALSHA", REFRESH_LOCK_SHA, "1", lease, "t1", "100"),
            ("TTL", lease),
            ("EVALSHA", REFRESH_LOCK_SHA, "1", lease, "t2", "100"),
            ("EVALSHA", RELEASE_LOCK_SHA, "1", lease, "t2"),
            ("EVALSHA", RELEASE_LOCK_SHA, "1", lease, "t1"),
            ("EXISTS", lease),
            ("EVALSHA", RELEASE_LOCK_SHA, "1", lease, ""),
            ("EVALSHA", RELEASE_LOCK_SHA, "1", lease, "t1"),
            ("SET", lease, "not json"),
            ("EVALSHA", HEARTBEAT_CAS_SHA, "1", lease, "t1", mine, "30"),
            ("EVALSHA", HEARTBEAT_CAS_SHA, "1", lease, "", mine, "30"),
            ("EVALSHA", REFRESH_LOCK_SHA, "1", lease, "t1", "100"),
            ("SET", lease, "1"),
            ("EVALSHA", HEARTBEAT_CAS_SHA, "1", lease, "", mine, "30"),
            ("GET", lease),
            ("EVALSHA", RELEASE_LOCK_SHA, "1", lease, ""),
            ("EVALSHA", "0" * 40, "0"),
            ("EVALSHA", HEARTBEAT_CAS_SHA, "2", lease),
        )
    ]
    assert replies == [
        1,
        30,
        0,
        0,
        1,
        100,
        0,
        0,
        1,
        0,
        1,
        0,
        "+OK",
        -1,
        0,
        0,
        "+OK",
        1,
        mine,
        1,
        "-NOSCRIPT No matching script. Please use EVAL.",
        "-ERR Number of keys can't be greater than number of args",
    ]
