"""XADDs on the lean append link (and on nats-py when it is off): every field
reads back byte for byte whether the entry carries its fields in a header or in its body,
and a link that ends with acknowledgements outstanding costs no entry and no duplicate:
the unacknowledged entries are published again under their own ``Nats-Msg-Id``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from respkit import RawClient, adapter_settings, start_adapter

from eventstore.embedded import EmbeddedNatsServer
from gateway.resp.server import RespServer

FIELDS: list[dict[bytes, bytes]] = [
    {b"data": b'{"text": "plain"}'},
    {b"name": "h\u00e9llo \u2603".encode(), b"n": b"1"},
    {b"bin": b"\xff\x00\xfe"},
    {b"nul": b"a\x00b"},
    {b"tag": b"base64:AAAA"},
    {b"empty": b""},
    {b'quote"s': b"back\\slash\n\t"},
]


@pytest.fixture(params=[True, False], ids=["lean", "nats-py"])
async def server(request: pytest.FixtureRequest, nats_url: str) -> AsyncIterator[RespServer]:
    settings = adapter_settings()
    settings = replace(settings, streams=replace(settings.streams, lean_appends=request.param))
    store, served = await start_adapter(nats_url, settings)
    try:
        yield served
    finally:
        await served.close()
        await store.close()


def seq_of(entry_id: bytes) -> int:
    ms, seq = entry_id.split(b"-")
    assert seq == b"0"
    return int(ms)


async def test_pipelined_entries_read_back_exactly(server: RespServer) -> None:
    client = aioredis.Redis(host=server.host, port=server.port)
    try:
        pipe = client.pipeline(transaction=False)
        for fields in FIELDS * 3:
            pipe.xadd("exact", fields)  # type: ignore[arg-type]
        ids = await pipe.execute()
        assert [seq_of(entry_id) for entry_id in ids] == sorted({seq_of(i) for i in ids})
        # Repeated field names are kept as sent (not collapsed like a JSON object).
        raw = await RawClient.connect(server.host, server.port)
        try:
            repeated = await raw.call("XADD", "exact", "*", "f", "1", "f", "2")
            found = await raw.call("XRANGE", "exact", repeated, repeated)
        finally:
            await raw.close()
        assert found[0][1] == ["f", "1", "f", "2"]
        entries = await client.xrange("exact")
        assert entries is not None
        assert [entry_id for entry_id, _ in entries] == [*ids, repeated.encode()]
        assert [fields for _, fields in entries[:-1]] == FIELDS * 3
    finally:
        await client.aclose()


async def test_a_lost_link_costs_no_entry_and_no_duplicate(nats_url: str) -> None:
    store, server = await start_adapter(nats_url, adapter_settings())
    client = aioredis.Redis(host=server.host, port=server.port)
    try:
        await client.xadd("lost", {"n": "warm-up"})  # a single XADD takes the link too
        pipe = client.pipeline(transaction=False)
        for n in range(3):
            pipe.xadd("lost", {"n": f"first{n}"})
        await pipe.execute()
        appends = server.streams._appends
        link = appends._link
        assert link is not None and link.alive
        count = 40
        dropped: list[int] = []
        all_dropped = asyncio.Event()

        def drop(token: int, _data: bytes) -> None:  # stored, and never answered
            dropped.append(token)
            if len(dropped) >= count:
                all_dropped.set()

        link._on_reply = drop
        pipe = client.pipeline(transaction=False)
        for n in range(count):
            pipe.xadd("lost", {"n": str(n)})
        running = asyncio.create_task(pipe.execute())
        await asyncio.wait_for(all_dropped.wait(), 10)
        assert link._writer is not None
        link._writer.transport.abort()  # the link ends with 40 acknowledgements unread
        async with asyncio.timeout(10):  # well before the 2 s request timeout per entry
            ids = await running
        assert [seq_of(entry_id) for entry_id in ids] == sorted({seq_of(i) for i in ids})
        entries = await client.xrange("lost")
        assert entries is not None
        assert len(entries) == 1 + 3 + count  # each stored once: the copies were duplicates
        assert [entry_id for entry_id, _ in entries[-count:]] == ids
        # The next pipeline opens a new link.
        pipe = client.pipeline(transaction=False)
        for n in range(3):
            pipe.xadd("lost", {"n": f"after{n}"})
        await pipe.execute()
        assert appends._link is not None and appends._link is not link
        assert await client.xlen("lost") == 1 + 3 + count + 3
    finally:
        await client.aclose()
        await server.close()
        await store.close()


async def test_pipelines_fail_cleanly_while_the_broker_is_away_then_resume(
    killable_nats_server: EmbeddedNatsServer,
) -> None:
    settings = adapter_settings()
    settings = replace(settings, streams=replace(settings.streams, request_timeout=0.5))
    store, server = await start_adapter(killable_nats_server.url, settings)
    client = await RawClient.connect(server.host, server.port)
    try:
        commands = [("XADD", "away", "*", "n", str(n)) for n in range(5)]
        first = await client.pipeline(*commands)
        assert all(not reply.startswith("-") for reply in first)
        killable_nats_server.kill()
        away = await client.pipeline(*commands)
        unavailable = "-ERR jetledger redis: JetStream unavailable"
        assert all(reply.startswith(unavailable) for reply in away)
        assert (await client.call("XADD", "away", "*", "n", "alone")).startswith(unavailable)
        await killable_nats_server.restart()
        for _ in range(100):  # nats-py reconnects; the next pipeline opens a new link
            again = await client.pipeline(*commands)
            if not any(reply.startswith("-") for reply in again):
                break
            await asyncio.sleep(0.1)
        ids = [*first, *again]
        assert [seq_of(i.encode()) for i in ids] == sorted({seq_of(i.encode()) for i in ids})
        # Every id answered is stored; the entries answered with an error while the broker
        # was away may be stored too (nats-py sends what it buffered when it reconnects),
        # as the error says: try again.
        stored = [entry[0] for entry in await client.call("XRANGE", "away", "-", "+")]
        assert set(ids) <= set(stored) and len(stored) <= len(ids) + len(away) + 1
        assert server.streams._appends._link is not None
    finally:
        await client.close()
        await server.close()
        await store.close()
