"""Groups of pipelined XADDs overlap (the next group is published while the one before
waits for its acknowledgements) and still behave as one ordered pipeline: ids strictly
increase in command order, replies come in order, NOMKSTREAM sees the key an earlier
group created, and a command after the XADDs sees all of them. A blocked XREADGROUP
woken by one entry also takes the ones pending behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from respkit import RawClient, adapter_settings, id_key, start_adapter

from gateway.resp.server import RespServer

GROUP = 7


@pytest.fixture
async def small_groups(nats_url: str) -> AsyncIterator[RespServer]:
    store, server = await start_adapter(nats_url, adapter_settings(max_pipelined_appends=GROUP))
    try:
        yield server
    finally:
        await server.close()
        await store.close()


async def test_groups_in_flight_keep_pipeline_order(small_groups: RespServer) -> None:
    client = await RawClient.connect(small_groups.host, small_groups.port)
    other = await RawClient.connect(small_groups.host, small_groups.port)
    try:
        commands: list[tuple[object, ...]] = [("XADD", "s", "*", "n", n) for n in range(60)]
        commands.insert(30, ("XADD", "s", "NOMKSTREAM", "*", "n", "nomk"))
        commands.append(("XLEN", "s"))

        async def interleave() -> None:  # another client's appends between the groups
            for n in range(20):
                await other.call("XADD", "s", "*", "n", f"other{n}")

        replies, _ = await asyncio.gather(client.pipeline(*commands), interleave())
        ids = replies[:-1]
        assert all(isinstance(entry_id, str) for entry_id in ids)  # NOMKSTREAM too
        assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})
        assert replies[-1] >= 61  # every XADD before it, and some of the other client's
        entries = await client.call("XRANGE", "s", "-", "+")
        assert len(entries) == 61 + 20
        mine = [entry for entry in entries if not entry[1][1].startswith("other")]
        assert [entry[0] for entry in mine] == ids
        expected = [str(n) for n in range(30)] + ["nomk"] + [str(n) for n in range(30, 60)]
        assert [entry[1][1] for entry in mine] == expected
    finally:
        await client.close()
        await other.close()


async def test_blocked_group_read_takes_the_entries_behind_the_first(
    small_groups: RespServer,
) -> None:
    reader = await RawClient.connect(small_groups.host, small_groups.port)
    writer = await RawClient.connect(small_groups.host, small_groups.port)
    try:
        assert await writer.call("XGROUP", "CREATE", "q", "g", "$", "MKSTREAM") == "+OK"
        read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "BLOCK", "3000", "STREAMS")
        blocked = asyncio.ensure_future(reader.call(*read, "q", ">"))
        await asyncio.sleep(0.2)
        await writer.pipeline(*[("XADD", "q", "*", "n", n) for n in range(5)])
        first = await blocked
        got = [entry[1][1] for entry in first[0][1]]
        assert got[0] == "0" and got == [str(n) for n in range(len(got))]
        rest = await reader.call(*read[:6], "STREAMS", "q", ">")
        more = [entry[1][1] for entry in rest[0][1]] if rest else []
        assert got + more == [str(n) for n in range(5)]
    finally:
        await reader.close()
        await writer.close()
