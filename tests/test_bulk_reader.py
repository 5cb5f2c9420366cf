"""Bulk reads (batched direct gets on a lean connection) give exactly the records the
ordered consumer gives, survive a server restart without gap or duplicate, and fall
back to nats-py where they cannot work."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from storekit import delta, isolated_settings, open_store

from eventstore.codec import Undecodable
from eventstore.connection import ConnectOptions
from eventstore.embedded import EmbeddedNatsServer
from eventstore.raw_connection import RawConnection, RawConnectionError, RawUnsupported
from eventstore.store import EventStore
from eventstore.types import StoredRecord


async def collect(store: EventStore, **kwargs: object) -> list[StoredRecord]:
    async with contextlib.aclosing(store.records(**kwargs)) as records:  # type: ignore[arg-type]
        return [record async for record in records]


def same(a: list[StoredRecord], b: list[StoredRecord]) -> bool:
    def key(record: StoredRecord) -> tuple[object, ...]:
        item = record.item
        content = (item.reason, item.body) if isinstance(item, Undecodable) else item
        return (record.seq, record.subject, content)

    return [key(r) for r in a] == [key(r) for r in b]


async def test_bulk_and_consumer_reads_agree(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        root = store.settings.root
        await store.append_many([delta(i, run_id=f"r{i % 3}") for i in range(5000)])
        await store.js.publish(f"{root}.data.s1.r1.out", b"not json")
        foreign = {
            "type": "command.ask",
            "session_id": "s9",
            "agent_type": "echo",
            "data": {"content": "hi"},
        }  # no id, no time: filled from the position
        await store.js.publish(f"{root}.ctrl.agent_type.echo", json.dumps(foreign).encode())
        await store.append_many([delta(i) for i in range(10)])
        bulk = await collect(store)
        options = store.connect_options
        store.connect_options = None  # forces the ordered consumer
        ordered = await collect(store)
        store.connect_options = options
        assert len(bulk) == 5012 and same(bulk, ordered)
        ask = next(r.item for r in bulk if r.subject.endswith(".echo"))
        assert not isinstance(ask, Undecodable) and ask.id == "seq-5002"
        assert same(await collect(store, from_seq=4990, until_seq=5003), bulk[4989:5003])
        filtered = await collect(store, subject_filter=f"{root}.data.s1.r1.>")
        assert [r.seq for r in filtered] == [r.seq for r in bulk if r.subject.endswith(".r1.out")]
        assert await collect(store, from_seq=6000) == []


async def test_bulk_follow_survives_a_server_restart(
    killable_nats_server: EmbeddedNatsServer,
) -> None:
    server = killable_nats_server
    settings = isolated_settings(request_timeout=1.0, append_retries=30, append_retry_backoff=0.1)
    async with open_store(server.url, settings) as store:
        await store.append_many([delta(i) for i in range(1000)])
        seen: list[int] = []

        async def follow() -> None:
            async with contextlib.aclosing(store.records(follow=True)) as records:
                async for record in records:
                    seen.append(record.seq)
                    if len(seen) == 2000:
                        return

        task = asyncio.create_task(follow())
        for _ in range(200):
            if len(seen) >= 1000:
                break
            await asyncio.sleep(0.02)
        server.kill()
        await asyncio.sleep(0.3)
        await server.restart()
        results = await store.append_many([delta(i) for i in range(1000, 2000)])
        assert all(r.ok for r in results)
        await asyncio.wait_for(task, 60)
        assert seen == list(range(1, 2001))


async def test_credentials_files_fall_back_to_the_ordered_consumer(
    nats_url: str, tmp_path: Path
) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("not used")
    with pytest.raises(RawUnsupported):
        RawConnection(ConnectOptions(url=nats_url, credentials_file=creds))
    async with open_store(nats_url) as store:
        await store.append_many([delta(i) for i in range(20)])
        assert store.connect_options is not None
        store.connect_options = replace(store.connect_options, credentials_file=creds)
        assert [r.seq for r in await collect(store)] == list(range(1, 21))


async def test_user_and_password_and_a_clear_refusal(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(
        store_dir=tmp_path / "auth", extra_args=("--user", "u", "--pass", "p")
    )
    await server.start()
    try:
        good = RawConnection(ConnectOptions(url=server.url, user="u", password="p"))
        await good.connect()
        await good.close()
        bad = RawConnection(ConnectOptions(url=server.url, user="u", password="wrong"))
        with pytest.raises(RawConnectionError, match=r"(?i)authorization"):
            await bad.connect()
        await bad.close()
    finally:
        await server.stop()


async def test_a_reset_connection_is_a_raw_connection_error() -> None:
    # A server that greets, accepts the client, then resets the socket (SO_LINGER 0), the
    # way a SIGKILLed nats-server can: the reader must see its own error type, which the
    # bulk read turns into a reconnect, not a bare ConnectionResetError.
    import socket
    import struct

    async def greet_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"fake","max_payload":1048576}\r\n')
        await writer.drain()
        await reader.readline()  # CONNECT
        await reader.readline()  # PING
        writer.write(b"PONG\r\n")
        await writer.drain()
        await reader.readline()  # SUB
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(greet_then_reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        connection = RawConnection(ConnectOptions(url=f"nats://127.0.0.1:{port}"))
        await connection.connect()
        await connection.subscribe("_INBOX.x")
        await connection.publish("x", b"")
        with pytest.raises(RawConnectionError):
            await connection.messages(timeout=5)
        await connection.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_record_batches_give_the_same_records_in_lists(nats_url: str) -> None:
    async with open_store(nats_url) as store:
        await store.append_many([delta(i, run_id=f"r{i % 3}") for i in range(4500)])
        await store.js.publish(f"{store.settings.root}.data.s1.r1.out", b"not json")
        every = await collect(store)

        async def lists(**kwargs: object) -> list[list[StoredRecord]]:
            source = store.record_batches(**kwargs)  # type: ignore[arg-type]
            async with contextlib.aclosing(source) as batches:
                return [batch async for batch in batches]

        bulk = await lists()
        assert all(bulk) and len(bulk) > 1  # several reads, none empty
        assert same([record for batch in bulk for record in batch], every)
        # a bound inside a list cuts that list, and nothing past it is handed out
        cut = await lists(from_seq=1000, until_seq=3333)
        assert same([record for batch in cut for record in batch], every[999:3333])
        options = store.connect_options
        store.connect_options = None  # the ordered consumer: one record per list
        single = await lists(from_seq=4400)
        store.connect_options = options
        assert all(len(batch) == 1 for batch in single)
        assert same([batch[0] for batch in single], every[4399:])
