"""The nasty cases: the server is SIGKILLed in the middle of a bulk append, and garbage
arrives on the log from a raw socket that speaks plain NATS protocol (no nats-py)."""

from __future__ import annotations

import asyncio
import collections
import json

import pytest
from storekit import delta, isolated_settings, open_store

from eventstore.codec import Undecodable
from eventstore.embedded import EmbeddedNatsServer
from eventstore.store import BatchMode


@pytest.mark.parametrize("mode", ["fast", "atomic"])
async def test_sigkill_during_append_many_loses_and_duplicates_nothing(
    killable_nats_server: EmbeddedNatsServer, mode: BatchMode
) -> None:
    server = killable_nats_server
    settings = isolated_settings(request_timeout=1.0, append_retries=40, append_retry_backoff=0.2)
    async with open_store(server.url, settings) as store:
        events = [delta(i) for i in range(60_000)]
        confirmed = 0

        def on_progress(count: int) -> None:
            nonlocal confirmed
            confirmed = count

        task = asyncio.create_task(store.append_many(events, mode=mode, progress=on_progress))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while confirmed < 5_000 and not task.done() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        assert not task.done(), "append_many finished before the kill; raise the event count"
        confirmed_before_kill = confirmed
        server.kill()
        await asyncio.sleep(0.5)
        await server.restart()
        results = await asyncio.wait_for(task, 120)

        assert confirmed_before_kill >= 5_000
        counts = collections.Counter()
        async for _seq, event in store.read(1):
            assert not isinstance(event, Undecodable)
            counts[event.id] += 1
        duplicated = [event_id for event_id, n in counts.items() if n > 1]
        assert duplicated == []
        for index, (event, result) in enumerate(zip(events, results, strict=True)):
            if index < confirmed_before_kill:
                assert result.ok, result
            if result.ok:
                assert counts[event.id] == 1, (index, result)
            else:
                assert counts[event.id] <= 1
        stored_ok = sum(1 for r in results if r.ok)
        print(
            f"{mode}: confirmed before kill {confirmed_before_kill}, ok {stored_ok}, "
            f"failed {len(results) - stored_ok}, in log {sum(counts.values())}"
        )
        assert stored_ok >= confirmed_before_kill
        assert sum(counts.values()) >= stored_ok


async def _raw_nats_session(host: str, port: int, frames: list[bytes]) -> bytes:
    """Speak the NATS text protocol by hand: INFO, CONNECT, the frames, PING -> PONG."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert info.startswith(b"INFO ")
        connect = {"verbose": False, "pedantic": False, "headers": True, "name": "garbage"}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
        for frame in frames:
            writer.write(frame)
        writer.write(b"PING\r\n")
        await writer.drain()
        received = b""
        while b"PONG" not in received:
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            assert chunk, "server closed the raw connection"
            received += chunk
        return received
    finally:
        writer.close()
        await writer.wait_closed()


def _pub(subject: str, payload: bytes) -> bytes:
    return f"PUB {subject} {len(payload)}\r\n".encode() + payload + b"\r\n"


async def test_raw_socket_garbage_does_not_break_subscribe(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        root = settings.root
        host, port = nats_url.removeprefix("nats://").rsplit(":", 1)
        garbage = [
            _pub(f"{root}.data.s1.r1.out", b"hello"),
            _pub(f"{root}.ctrl.agent_type.echo", b"{{{"),
            _pub(f"{root}.sys.worker", bytes(range(256))),
            _pub(f"{root}.data.s1.r1.end", b'{"type": "run.completed"}'),
            _pub(f"{root}.ctrl.worker.w1", b'{"type": "command.ask", "data": 42}'),
            _pub(f"{root}.whatever", b""),
        ]
        answer = await _raw_nats_session(host, int(port), garbage)
        assert b"-ERR" not in answer
        good = delta(1)
        await store.append(good)

        records = []
        async for seq, item in store.subscribe(1):
            records.append((seq, item))
            if len(records) == len(garbage) + 1:
                break
        undecodable = [item for _, item in records if isinstance(item, Undecodable)]
        assert len(undecodable) == len(garbage)
        assert all(item.reason for item in undecodable)
        assert records[-1][1] == good
