"""Pipelined XADDs whose acknowledgement does not come never get an id out of command
order: an entry lost while a later entry of its key was stored is answered with an
error and stays unstored (not stored after that entry), a stored one gets its original
id, and no new pipeline goes out before the unacknowledged entries are answered.

An entry is "lost" here by never writing its frame (the server neither stores nor
answers it, as when a broker drops a message); the server, the link and the probes are
real."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from respkit import RawClient, adapter_settings, id_key, start_adapter

from eventstore.publish import Outgoing
from gateway.resp import stream_appends
from gateway.resp.append_recovery import NOT_STORED
from gateway.resp.replies import CommandError
from gateway.resp.server import RespServer

TIMEOUT = 0.5
"""The adapter's request timeout here: how long a lost entry's acknowledgement is awaited."""


@contextlib.asynccontextmanager
async def _adapter(nats_url: str, *, lean: bool) -> AsyncIterator[RespServer]:
    settings = adapter_settings()
    streams = replace(settings.streams, request_timeout=TIMEOUT, lean_appends=lean)
    store, served = await start_adapter(nats_url, replace(settings, streams=streams))
    try:
        yield served
    finally:
        await served.close()
        await store.close()


@pytest.fixture(params=[True, False], ids=["lean", "nats-py"])
async def server(request: pytest.FixtureRequest, nats_url: str) -> AsyncIterator[RespServer]:
    async with _adapter(nats_url, lean=request.param) as served:
        yield served


@pytest.fixture
async def lean_server(nats_url: str) -> AsyncIterator[RespServer]:
    async with _adapter(nats_url, lean=True) as served:
        yield served


@pytest.fixture
def lose(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bytes], None]]:
    """``lose(marker)``: entries whose body holds ``marker`` are never written."""
    markers: list[bytes] = []
    real = stream_appends.frame

    def frame(outgoing: Outgoing, fields_header: str, reply: bytes) -> bytes:
        if any(marker in outgoing.body for marker in markers):
            return b""
        return real(outgoing, fields_header, reply)

    monkeypatch.setattr(stream_appends, "frame", frame)
    yield markers.append


def fields(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"n", value.encode())]


async def stored(server: RespServer, key: str) -> list[tuple[str, str]]:
    """(id, value of ``n``) of every entry of ``key``, oldest first."""
    client = await RawClient.connect(server.host, server.port)
    try:
        return [
            (entry_id, values[1]) for entry_id, values in await client.call("XRANGE", key, "-", "+")
        ]
    finally:
        await client.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def assert_in_order(ids: list[str]) -> None:
    assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})


def assert_settled(server: RespServer) -> None:
    """Nothing is left of the bookkeeping, and new pipelines go out again."""
    assert len(server.streams._orders) == 0
    assert server.streams._appends._calm.is_set()


async def test_a_probe_finds_a_stored_entry_and_stores_nothing(lean_server: RespServer) -> None:
    streams = lean_server.streams
    await streams._mark_exists(streams.meta(b"probed"))  # as an XADD does
    kept, fields_header = streams._prepared(b"probed", fields("kept"))
    seq = await streams._recovery.publish_alone(kept, fields_header)
    assert isinstance(seq, int)
    assert await streams._recovery.probe(kept, fields_header) == seq  # a duplicate
    never, never_header = streams._prepared(b"probed", fields("never"))
    assert await streams._recovery.probe(never, never_header) is None  # refused
    assert await stored(lean_server, "probed") == [(f"{seq}-0", "kept")]
    # The refused probe left no trace of its id: the entry is stored when published.
    later = await streams._recovery.publish_alone(never, never_header)
    assert isinstance(later, int) and later > seq
    assert await stored(lean_server, "probed") == [(f"{seq}-0", "kept"), (f"{later}-0", "never")]


async def test_an_entry_lost_in_a_pipeline_is_refused_not_stored_after_later_ones(
    server: RespServer, lose: Callable[[bytes], None]
) -> None:
    lose(b"lost")
    client = await RawClient.connect(server.host, server.port)
    try:
        values = ["0", "1", "lost", "3", "4"]
        replies = await client.pipeline(*[("XADD", "mid", "*", "n", v) for v in values])
    finally:
        await client.close()
    assert replies[2] == "-" + NOT_STORED
    ids = replies[:2] + replies[3:]
    assert_in_order(ids)
    assert await stored(server, "mid") == list(zip(ids, ["0", "1", "3", "4"], strict=True))
    assert_settled(server)


async def test_an_entry_lost_before_a_stored_later_pipeline_is_not_stored_after_it(
    server: RespServer, lose: Callable[[bytes], None]
) -> None:
    lose(b"lost")
    streams = server.streams
    published = asyncio.get_running_loop().create_future()
    first = asyncio.create_task(
        streams.add_many(
            [(b"groups", fields("a")), (b"groups", fields("lost"))], published=published
        )
    )
    second = await streams.add_many(
        [(b"groups", fields("c")), (b"groups", fields("d"))], after=published
    )
    assert all(type(seq) is int for seq in second)  # stored while the first still waits
    a, lost = await first
    assert isinstance(lost, CommandError) and lost.message == NOT_STORED
    assert isinstance(a, int)
    ids = [f"{seq}-0" for seq in (a, *second)]
    assert_in_order(ids)
    assert await stored(server, "groups") == list(zip(ids, ["a", "c", "d"], strict=True))
    assert_settled(server)


async def test_later_unacknowledged_entries_are_probed_before_an_earlier_one_is_stored(
    lean_server: RespServer, lose: Callable[[bytes], None]
) -> None:
    server = lean_server
    client = await RawClient.connect(server.host, server.port)
    try:
        await client.call("XADD", "probe-later", "*", "n", "warm-up")  # opens the link
        link = server.streams._appends._link
        assert link is not None
        real = link._on_reply
        answered = 0

        def first_only(token: int, data: bytes) -> None:  # later acknowledgements are lost
            nonlocal answered
            answered += 1
            if answered == 1:
                real(token, data)

        link._on_reply = first_only
        lose(b"lost")
        replies = await client.pipeline(
            *[("XADD", "probe-later", "*", "n", v) for v in ["a", "lost", "c"]]
        )
    finally:
        await client.close()
    # "c" was stored but not acknowledged: it keeps its id, and "lost" is not stored after it.
    assert replies[1] == "-" + NOT_STORED
    ids = [replies[0], replies[2]]
    assert_in_order(ids)
    assert (await stored(server, "probe-later"))[1:] == list(zip(ids, ["a", "c"], strict=True))
    assert_settled(server)


async def test_no_pipeline_goes_out_before_a_lost_links_entries_are_answered(
    lean_server: RespServer, lose: Callable[[bytes], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = lean_server
    streams = server.streams
    appends = streams._appends
    await streams.add_many([(b"relink", fields("warm-up"))])
    link = appends._link
    assert link is not None
    lose(b"unsent")
    published = asyncio.get_running_loop().create_future()
    first = asyncio.create_task(
        streams.add_many(
            [(b"relink", fields(v)) for v in ["a", "unsent-b", "unsent-c"]], published=published
        )
    )
    await wait_until(lambda: len(appends._due) == 2)  # "a" acknowledged, the rest never sent
    nc = streams._recovery.nc
    real_request = nc.request

    async def slow_request(*args: Any, **kwargs: Any) -> Any:  # the answers take a while
        await asyncio.sleep(0.2)
        return await real_request(*args, **kwargs)

    monkeypatch.setattr(nc, "request", slow_request)
    assert link._writer is not None
    link._writer.transport.abort()
    await wait_until(lambda: appends._link is not link)  # the loss is known
    second = await streams.add_many([(b"relink", fields(v)) for v in ["d", "e"]], after=published)
    results = [*await first, *second]
    assert all(type(seq) is int for seq in results), results  # nothing refused, nothing lost
    ids = [f"{seq}-0" for seq in results]
    assert_in_order(ids)
    values = ["a", "unsent-b", "unsent-c", "d", "e"]
    assert (await stored(server, "relink"))[1:] == list(zip(ids, values, strict=True))
    assert appends._link is not None and appends._link is not link
    assert_settled(server)


async def test_send_tokens_follow_the_wire_order_across_groups(
    nats_url: str, lose: Callable[[bytes], None]
) -> None:
    # On nats-py a group yields between chunks: the next group must not take its send
    # tokens (which order the answers) before the previous group's last chunk is out.
    async with _adapter(nats_url, lean=False) as server:
        lose(b"lost")
        streams = server.streams
        published = asyncio.get_running_loop().create_future()
        values = [str(n) for n in range(stream_appends.PUBLISH_CHUNK + 20)]
        values[-1] = "lost"  # in the second chunk
        first = asyncio.create_task(
            streams.add_many([(b"chunks", fields(v)) for v in values], published=published)
        )
        second = asyncio.create_task(
            streams.add_many([(b"chunks", fields(v)) for v in ["x", "y"]], after=published)
        )
        results = [*await first, *await second]
        assert isinstance(results[len(values) - 1], CommandError)
        del results[len(values) - 1]
        assert all(type(seq) is int for seq in results)
        ids = [f"{seq}-0" for seq in results]
        assert_in_order(ids)
        kept = [*values[:-1], "x", "y"]
        assert await stored(server, "chunks") == list(zip(ids, kept, strict=True))
        assert_settled(server)
