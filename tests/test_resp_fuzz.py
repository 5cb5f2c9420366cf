"""Protocol fuzz (bounded): random and half-valid byte frames never crash the adapter
and never disturb another client, which keeps getting correct answers throughout."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from respkit import Endpoint, RawClient

EXAMPLES = 60
QUIET = 0.05

# Pieces that look like RESP, so the fuzzer reaches deep parser states quickly.
TOKENS = st.sampled_from(
    [
        b"*",
        b"$",
        b"\r\n",
        b"\n",
        b"-1",
        b"0",
        b"3",
        b"99999999999",
        b"PING",
        b"SET",
        b"HSET",
        b"MULTI",
        b"EXEC",
        b"EVAL",
        b"XADD",
        b'"',
        b"'",
        b"\x00",
        b"\xff",
        b" ",
    ]
)
FRAMES = st.one_of(
    st.binary(max_size=512),
    st.lists(st.one_of(TOKENS, st.binary(max_size=8)), max_size=64).map(b"".join),
)


async def send_and_drop(endpoint: Endpoint, data: bytes) -> None:
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(data)
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(reader.read(65536), QUIET)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(frames=st.lists(FRAMES, min_size=1, max_size=3))
async def test_random_frames_never_disturb_another_client(
    adapter: Endpoint, caplog: pytest.LogCaptureFixture, frames: list[bytes]
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.resp")
    bystander = await RawClient.connect(adapter.host, adapter.port)
    try:
        assert await bystander.call("SET", "fuzz:bystander", "still-here") == "+OK"
        await asyncio.gather(*(send_and_drop(adapter, frame) for frame in frames))
        assert await bystander.call("GET", "fuzz:bystander") == "still-here"
        assert await bystander.call("PING") == "+PONG"
    finally:
        await bystander.close()
    # A brand-new client is served too: the server is still accepting.
    fresh = await RawClient.connect(adapter.host, adapter.port)
    try:
        assert await fresh.call("ECHO", "ok") == "ok"
    finally:
        await fresh.close()
    # No handler failed on the way (a handler bug is answered, but logged as an error).
    assert [record.getMessage() for record in caplog.records] == []
