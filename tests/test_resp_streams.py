"""Redis streams through the adapter: parity with redis-server, then what only the
adapter does (redelivery from dead consumers, ids stable across restarts, the key map).

Parity bodies run against both targets (``resp_target``); stream ids differ by design
(log sequences, not times), so they are compared by order and position, never by value.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from respkit import (
    PARITY_DB,
    REAL_REDIS_HOST,
    REAL_REDIS_PORT,
    Endpoint,
    Target,
    adapter_settings,
    id_key,
    start_adapter,
)

from eventstore.catalog import MessageDelta, MessageDeltaData
from eventstore.store import EventStore
from gateway.resp.replies import CommandError
from gateway.resp.server import RespServer
from gateway.resp.stream_ids import (
    entry_id,
    first_seq_after,
    first_seq_from,
    last_seq_upto,
    parse_id,
)
from gateway.resp.stream_keys import target_for

BLOCK_MS = 1500


async def _delete_prefix(target: Target) -> None:
    client = target.client()
    try:
        keys = [key async for key in client.scan_iter(match=f"{target.prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["redis", "adapter"])
async def resp_target(request: pytest.FixtureRequest, nats_url: str) -> AsyncIterator[Target]:
    """The same body against redis-server (DB 9, unique prefix) and a fresh adapter.

    The adapter is started here rather than through another async fixture, so the
    parametrised fixture needs no ``getfixturevalue`` from inside a running loop.
    """
    prefix = f"streams:{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        target = Target("redis", REAL_REDIS_HOST, REAL_REDIS_PORT, PARITY_DB, prefix)
        try:
            yield target
        finally:
            await _delete_prefix(target)
        return
    store, server = await start_adapter(nats_url, adapter_settings())
    try:
        yield Target("adapter", server.host, server.port, PARITY_DB, prefix)
    finally:
        await server.close()
        await store.close()


async def error_of(call: Any) -> str:
    with pytest.raises(ResponseError) as caught:
        await call
    return str(caught.value)


@pytest.mark.parametrize(
    ("key", "kind", "name", "subject_filter"),
    [
        (b"byai_gateway:ctrl:agent_type:echo", "agent_type", "echo", "jl.ctrl.agent_type.echo"),
        (b"byai_gateway:v2:ctrl:agent_type:echo", "agent_type", "echo", "jl.ctrl.agent_type.echo"),
        (b"byai_gateway:ctrl:worker:w-1", "worker", "w-1", "jl.ctrl.worker.w-1"),
        (b"byai_gateway:v2:ctrl:worker:{w-1}", "worker", "w-1", "jl.ctrl.worker.w-1"),
        (b"byai_gateway:session:s.1:data_stream", "session_data", "s.1", "jl.data.s~2e1.>"),
        (b"byai_gateway:v2:session:{s.1}:data_stream", "session_data", "s.1", "jl.data.s~2e1.>"),
        (b"byai_gateway:plugin_reload:r1:ack", "generic", "byai_gateway:plugin_reload:r1:ack",
         "jl.redis.stream.byai_gateway~3aplugin_reload~3ar1~3aack"),
    ],
)  # fmt: skip
def test_key_map(key: bytes, kind: str, name: str, subject_filter: str) -> None:
    target = target_for(key, "jl")
    assert (target.kind, target.name, target.filter) == (kind, name, subject_filter)


def test_stream_ids_follow_sequences() -> None:
    assert entry_id(42) == b"42-0"
    assert parse_id(b"42") == (42, 0) and parse_id(b"42", missing_seq=7) == (42, 7)
    assert first_seq_after(parse_id(b"42-0")) == 43
    assert first_seq_from(parse_id(b"42-0"), exclusive=False) == 42
    assert first_seq_from(parse_id(b"42-1"), exclusive=False) == 43
    assert last_seq_upto(parse_id(b"42-0"), exclusive=True) == 41
    for bad in (b"-1", b"1-x", b"", b" 1", b"18446744073709551616"):
        with pytest.raises(CommandError):
            parse_id(bad)


async def test_xadd_xlen_xrange_round_trip(resp_target: Target) -> None:
    r = resp_target.client()
    key = resp_target.key("s1")
    ids = [await r.xadd(key, {"data": f'{{"n": {n}}}', "x": "é"}) for n in range(3)]
    assert sorted(ids, key=id_key) == ids and len(set(ids)) == 3
    assert await r.xlen(key) == 3
    entries = await r.xrange(key)
    assert [e[0] for e in entries] == ids
    assert entries[1][1] == {"data": '{"n": 1}', "x": "é"}
    assert [e[0] for e in await r.xrange(key, ids[1], "+")] == ids[1:]
    assert [e[0] for e in await r.xrange(key, f"({ids[0]}", ids[1])] == ids[1:2]
    assert [e[0] for e in await r.xrange(key, count=2)] == ids[:2]
    assert [e[0] for e in await r.xrevrange(key, count=1)] == ids[-1:]
    assert [e[0] for e in await r.xrevrange(key)] == ids[::-1]
    assert await r.xlen(resp_target.key("missing")) == 0
    assert await r.xrange(resp_target.key("missing")) == []
    assert await r.type(key) == "stream"
    assert await r.exists(key) == 1
    await r.aclose()


async def test_group_create_busygroup_and_missing_key(resp_target: Target) -> None:
    r = resp_target.client()
    key = resp_target.key("g")
    missing = await error_of(r.xgroup_create(key, "workers", id="0"))
    assert missing.startswith("The XGROUP subcommand requires the key to exist")
    assert await r.xgroup_create(key, "workers", id="0", mkstream=True) is True
    assert "BUSYGROUP" in await error_of(r.xgroup_create(key, "workers", id="0"))
    assert await r.exists(key) == 1 and await r.xlen(key) == 0
    assert await r.xgroup_destroy(key, "workers") == 1
    assert await r.xgroup_destroy(key, "workers") == 0
    await r.aclose()


async def test_readgroup_pending_ack_and_history(resp_target: Target) -> None:
    r = resp_target.client()
    key = resp_target.key("work")
    await r.xgroup_create(key, "g", id="0", mkstream=True)
    ids = [await r.xadd(key, {"data": str(n)}) for n in range(3)]
    got = await r.xreadgroup("g", "c1", {key: ">"}, count=2)
    assert [[e[0] for e in entries] for _k, entries in got] == [ids[:2]]
    assert got[0][0] == key and got[0][1][0][1] == {"data": "0"}
    summary = await r.xpending(key, "g")
    assert summary == {
        "pending": 2,
        "min": ids[0],
        "max": ids[1],
        "consumers": [{"name": "c1", "pending": 2}],
    }
    assert await r.xack(key, "g", ids[0]) == 1
    assert await r.xack(key, "g", ids[0]) == 0
    history = await r.xreadgroup("g", "c1", {key: "0"})
    assert [[e[0] for e in entries] for _k, entries in history] == [ids[1:2]]
    detail = await r.xpending_range(key, "g", min="-", max="+", count=10)
    assert [(d["message_id"], d["consumer"], d["times_delivered"]) for d in detail] == [
        (ids[1], "c1", 2)
    ]
    rest = await r.xreadgroup("g", "c2", {key: ">"})
    assert [[e[0] for e in entries] for _k, entries in rest] == [ids[2:]]
    assert await r.xreadgroup("g", "c2", {key: ">"}) == []
    groups = await r.xinfo_groups(key)
    assert [(g["name"], g["consumers"], g["pending"]) for g in groups] == [("g", 2, 2)]
    assert groups[0]["last-delivered-id"] == ids[2]
    consumers = await r.xinfo_consumers(key, "g")
    assert sorted((c["name"], c["pending"]) for c in consumers) == [("c1", 1), ("c2", 1)]
    await r.aclose()


async def test_group_from_dollar_sees_only_new_entries(resp_target: Target) -> None:
    r = resp_target.client()
    key = resp_target.key("dollar")
    await r.xadd(key, {"old": "1"})
    await r.xgroup_create(key, "g", id="$")
    assert await r.xreadgroup("g", "c", {key: ">"}) == []
    new = await r.xadd(key, {"new": "1"})
    got = await r.xreadgroup("g", "c", {key: ">"})
    assert [e[0] for e in got[0][1]] == [new]
    await r.aclose()


async def test_xread_positions_and_blocking(resp_target: Target) -> None:
    r, writer = resp_target.client(), resp_target.client()
    key = resp_target.key("feed")
    first = await r.xadd(key, {"n": "1"})
    everything = await r.xread({key: "0-0"})
    assert [e[0] for e in everything[0][1]] == [first]
    assert await r.xread({key: first}) == []
    assert await r.xread({key: "$"}, block=300) == []  # times out: nil
    waiting = asyncio.create_task(r.xread({key: "$"}, block=BLOCK_MS * 4))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    second = await writer.xadd(key, {"n": "2"})
    got = await asyncio.wait_for(waiting, BLOCK_MS / 1000 * 4)
    assert got == [[key, [(second, {"n": "2"})]]]
    await r.aclose()
    await writer.aclose()


async def test_block_zero_waits_until_an_entry_arrives(resp_target: Target) -> None:
    r, writer = resp_target.client(), resp_target.client()
    key = resp_target.key("forever")
    await r.xgroup_create(key, "g", id="0", mkstream=True)
    reading = asyncio.create_task(r.xread({key: "$"}, block=0))
    grouped = asyncio.create_task(r.xreadgroup("g", "c", {key: ">"}, block=0))
    await asyncio.sleep(1.0)
    assert not reading.done() and not grouped.done()
    added = await writer.xadd(key, {"go": "1"})
    assert (await asyncio.wait_for(reading, 5))[0][1][0][0] == added
    assert (await asyncio.wait_for(grouped, 5))[0][1][0][0] == added
    await r.aclose()
    await writer.aclose()


async def test_blocking_read_does_not_block_other_clients(resp_target: Target) -> None:
    r, other = resp_target.client(), resp_target.client()
    key = resp_target.key("busy")
    waiting = asyncio.create_task(r.xread({key: "$"}, block=BLOCK_MS))
    await asyncio.sleep(0.1)
    assert await asyncio.wait_for(other.ping(), 1.0) is True
    assert await waiting == []
    await r.aclose()
    await other.aclose()


async def test_transaction_with_xadd_expire_and_no_blocking(resp_target: Target) -> None:
    r = resp_target.client()
    key = resp_target.key("tx")
    async with r.pipeline(transaction=True) as pipe:
        pipe.xadd(key, {"data": "x"})
        pipe.xread({key: "$"}, block=0)  # inside MULTI: answers at once
        pipe.xlen(key)
        results = await asyncio.wait_for(pipe.execute(), 5)
    assert isinstance(results[0], str) and results[1] == [] and results[2] == 1
    await r.aclose()


async def test_errors_match_redis(resp_target: Target) -> None:
    r = resp_target.client()
    key, plain = resp_target.key("e"), resp_target.key("plain")
    await r.set(plain, "v")
    wrong = "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert await error_of(r.xadd(plain, {"a": "b"})) == wrong
    assert await error_of(r.xlen(plain)) == wrong
    assert await error_of(r.xread({plain: "0"})) == wrong
    await r.xadd(key, {"a": "b"})
    assert await error_of(r.get(key)) == wrong
    assert (await error_of(r.xreadgroup("nog", "c", {key: ">"}))).startswith(
        f"NOGROUP No such key '{key}' or consumer group 'nog'"
    )
    assert (await error_of(r.execute_command("XREAD", "STREAMS", key, ">"))).startswith(
        "The > ID can be specified only when calling XREADGROUP"
    )
    await r.xgroup_create(key, "g", id="0")
    assert (await error_of(r.xreadgroup("g", "c", {key: "$"}))).startswith(
        "The $ ID is meaningless in the context of XREADGROUP"
    )
    assert await error_of(r.execute_command("XREAD", "STREAMS", key, key, "0")) == (
        "Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."
    )
    assert await error_of(r.execute_command("XRANGE", key, "x", "+")) == (
        "Invalid stream ID specified as stream command argument"
    )
    assert await error_of(r.execute_command("XREAD", "BLOCK", "-1", "STREAMS", key, "0")) == (
        "timeout is negative"
    )
    assert await error_of(r.execute_command("XINFO", "GROUPS", resp_target.key("none"))) == (
        "no such key"
    )
    assert await r.xack(key, "nog", "1-0") == 0
    await r.aclose()


async def test_del_removes_a_stream(resp_target: Target) -> None:
    r = resp_target.client()
    key = resp_target.key("gone")
    await r.xadd(key, {"a": "1"})
    await r.xgroup_create(key, "g", id="0")
    assert await r.delete(key) == 1
    assert await r.exists(key) == 0 and await r.xlen(key) == 0 and await r.xrange(key) == []
    assert "requires the key to exist" in await error_of(r.xgroup_create(key, "g", id="0"))
    again = await r.xadd(key, {"b": "2"})
    assert [e[0] for e in await r.xrange(key)] == [again]
    await r.aclose()


# -- what only the adapter does -----------------------------------------------------


def client_of(endpoint: Endpoint) -> aioredis.Redis:
    return aioredis.Redis(host=endpoint.host, port=endpoint.port, decode_responses=True)


async def test_dead_consumer_entries_go_to_a_live_consumer(adapter: Endpoint) -> None:
    """c1 takes an entry and dies; after the ack wait c2 gets it (Redis never does this)."""
    key = "byai_gateway:ctrl:agent_type:recover"
    setup = client_of(adapter)
    await setup.xgroup_create(key, "agent_engines", id="0", mkstream=True)
    entry = await setup.xadd(key, {"data": "task"})
    dying = client_of(adapter)
    taken = await dying.xreadgroup("agent_engines", "c1", {key: ">"}, count=1)
    assert taken[0][1][0][0] == entry
    await dying.aclose()  # the worker is gone and never acks
    survivor = client_of(adapter)
    got: list[Any] = []
    for _ in range(20):  # ack wait 2 s + liveness 2 s in the test settings
        got = await survivor.xreadgroup("agent_engines", "c2", {key: ">"}, count=1, block=500)
        if got:
            break
    assert got and got[0][1][0] == (entry, {"data": "task"})
    detail = await survivor.xpending_range(key, "agent_engines", "-", "+", 10)
    assert [(d["consumer"], d["times_delivered"]) for d in detail] == [("c2", 2)]
    assert await survivor.xack(key, "agent_engines", entry) == 1
    await survivor.aclose()
    await setup.aclose()


async def test_live_consumer_keeps_its_entries(adapter: Endpoint) -> None:
    key = "byai_gateway:ctrl:agent_type:busy"
    holder, other = client_of(adapter), client_of(adapter)
    await holder.xgroup_create(key, "g", id="0", mkstream=True)
    await holder.xadd(key, {"data": "long task"})
    assert await holder.xreadgroup("g", "c1", {key: ">"}, count=1)
    for _ in range(5):  # 5 s: past the 2 s ack wait, while c1's connection stays open
        assert await other.xreadgroup("g", "c2", {key: ">"}, count=1, block=1000) == []
    await holder.aclose()
    await other.aclose()


async def test_ids_and_groups_survive_an_adapter_restart(
    adapter_server: RespServer, nats_url: str
) -> None:
    first = client_of(Endpoint(adapter_server.host, adapter_server.port))
    key = "byai_gateway:session:restart:data_stream"
    ids = [await first.xadd(key, {"data": str(n)}) for n in range(3)]
    await first.xgroup_create(key, "g", id="0")
    await first.aclose()
    # A second adapter on the same log and buckets, as after a restart.
    store = await EventStore.open(nats_url, adapter_server.store.settings)
    second_server = RespServer(store, adapter_server.settings)
    await second_server.start()
    try:
        second = client_of(Endpoint(second_server.host, second_server.port))
        assert [e[0] for e in await second.xrange(key)] == ids
        assert "BUSYGROUP" in await error_of(second.xgroup_create(key, "g", id="0"))
        got = await second.xreadgroup("g", "c", {key: ">"})
        assert [e[0] for e in got[0][1]] == ids
        later = await second.xadd(key, {"data": "3"})
        assert id_key(later) > id_key(ids[-1])
        await second.aclose()
    finally:
        await second_server.close()
        await store.close()


async def log_items(server: RespServer, subject_filter: str) -> list[tuple[str, Any]]:
    """(subject, event) of every record on ``subject_filter`` in the adapter's log."""
    found = []
    async for record in server.store.records(subject_filter=subject_filter):
        found.append((record.subject, record.item))
    return found


async def test_byframework_command_becomes_a_catalog_event_and_reads_back_exactly(
    adapter_server: RespServer,
) -> None:
    r = aioredis.Redis(host=adapter_server.host, port=adapter_server.port)
    entry = {
        "action_type": "ASK_AGENT",
        "header": {
            "message_id": "msg-1a2b3c4d",
            "session_id": "sess-1",
            "trace_id": "t" * 32,
            "source_agent_type": "",
            "target_agent_type": "echo",
            "parent_message_id": "",
        },
        "body": {"content": "héllo", "wait_for_reply": False},
    }
    raw = json.dumps(entry).encode()
    # v2 key with a hash tag, read back through the v1 key: one stream.
    await r.xadd("byai_gateway:v2:ctrl:worker:{w-1}", {b"data": raw, b"bin": b"\xff\x00\r\n"})
    back = await r.xrange("byai_gateway:ctrl:worker:w-1")
    assert back[0][1] == {b"data": raw, b"bin": b"\xff\x00\r\n"}
    root = adapter_server.store.settings.root
    items = await log_items(adapter_server, f"{root}.ctrl.worker.w-1")
    assert len(items) == 1
    subject, event = items[0]
    assert subject == f"{root}.ctrl.worker.w-1"
    assert event.type == "command.ask" and event.session_id == "sess-1"
    assert event.run_id == "msg-1a2b3c4d" and event.agent_type == "echo"
    assert event.data.content == "héllo" and event.data.target_worker_id == "w-1"
    assert event.data.metadata["byframework"] == entry
    await r.aclose()


async def test_unrecognised_entries_round_trip_as_generic_events(
    adapter_server: RespServer,
) -> None:
    r = aioredis.Redis(host=adapter_server.host, port=adapter_server.port)
    fields = {b"k\xfe": b"\x00\x01 not json", b"data": b"[1, 2]"}
    entry_id = await r.xadd("some:other stream", fields)
    assert await r.xrange("some:other stream") == [(entry_id, fields)]
    root = adapter_server.store.settings.root
    items = await log_items(adapter_server, f"{root}.redis.stream.>")
    assert [getattr(event, "type", event) for _subject, event in items] == ["state.updated"]
    assert items[0][1].data.key == "some:other stream"
    await r.aclose()


async def test_native_events_show_on_the_session_data_stream(
    adapter_server: RespServer,
) -> None:
    r = aioredis.Redis(host=adapter_server.host, port=adapter_server.port)
    key = "byai_gateway:session:native:data_stream"
    waiting = asyncio.create_task(r.xread({key: "$"}, block=5000))
    await asyncio.sleep(0.2)
    event = MessageDelta(session_id="native", run_id="r1", data=MessageDeltaData(text="hi"))
    result = await adapter_server.store.append(event)
    got = await asyncio.wait_for(waiting, 5)
    assert got[0][1][0][0] == f"{result.seq}-0".encode()
    assert got[0][1][0][1] == {b"event": event.to_json()}
    await r.aclose()
