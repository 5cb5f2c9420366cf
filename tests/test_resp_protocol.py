"""RESP framing: the parser and encoder on their own, then malformed, half-sent and
oversized frames over real sockets, against real redis-server and the adapter alike."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys

import pytest
from respkit import Endpoint, Target, adapter_settings, start_adapter

from gateway.resp.protocol import (
    ParserLimits,
    ProtocolError,
    RequestParser,
    encode,
    split_inline,
)
from gateway.resp.replies import NULL_ARRAY, ErrorReply, MapReply, SimpleString

LIMITS = ParserLimits(max_bulk_len=1024, max_multibulk_len=64, max_inline_len=256)


def parse_all(data: bytes, limits: ParserLimits = LIMITS) -> list[list[bytes]]:
    parser = RequestParser(limits)
    parser.feed(data)
    commands = []
    while (command := parser.next_command()) is not None:
        commands.append(command)
    return commands


def test_multibulk_and_inline_commands() -> None:
    data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\n  echo  \"a b\" 'c d'\r\n*0\r\n\r\n"
    assert parse_all(data) == [[b"SET", b"k", b""], [b"PING"], [b"echo", b"a b", b"c d"]]


def test_byte_at_a_time_gives_the_same_commands() -> None:
    data = b"*2\r\n$4\r\nECHO\r\n$12\r\nhello\r\nworld\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n"
    parser = RequestParser(LIMITS)
    commands = []
    for index in range(len(data)):
        parser.feed(data[index : index + 1])
        while (command := parser.next_command()) is not None:
            commands.append(command)
    assert commands == [[b"ECHO", b"hello\r\nworld"], [b"PING"], [b"QUIT"]]
    assert parser.buffered == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*65\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$1025\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$1x\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
        (b"*1\r\n" + b"$" + b"9" * 300, "Protocol error: too big bulk count string"),
        (b"*" + b"1" * 300, "Protocol error: too big mbulk count string"),
        (b"GET " + b"a" * 300, "Protocol error: too big inline request"),
        (b'GET "abc\r\n', "Protocol error: unbalanced quotes in request"),
        (b'GET "abc"x\r\n', "Protocol error: unbalanced quotes in request"),
    ],
)
def test_malformed_frames_raise_redis_texts(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_all(data)
    assert caught.value.message == message


def test_unauthenticated_clients_get_tight_limits() -> None:
    parser = RequestParser(ParserLimits(10**9, 10**6, 65536))
    parser.authenticated = False
    parser.feed(b"*11\r\n")
    with pytest.raises(ProtocolError):
        parser.next_command()
    parser = RequestParser(ParserLimits(10**9, 10**6, 65536))
    parser.authenticated = False
    parser.feed(b"*1\r\n$16385\r\n")
    with pytest.raises(ProtocolError):
        parser.next_command()


def test_inline_escapes() -> None:
    assert split_inline(b'SET k "a\\x41\\n\\"q"') == [b"SET", b"k", b'aA\n"q']
    assert split_inline(b"SET k 'it\\'s'") == [b"SET", b"k", b"it's"]
    assert split_inline(b"   ") == []


def test_encode_resp2_and_resp3() -> None:
    reply = [b"a", 1, None, SimpleString("OK"), ErrorReply("ERR x\r\ny"), 1.5]
    assert encode(reply, 2) == b"*6\r\n$1\r\na\r\n:1\r\n$-1\r\n+OK\r\n-ERR x  y\r\n$3\r\n1.5\r\n"
    assert encode(reply, 3) == b"*6\r\n$1\r\na\r\n:1\r\n_\r\n+OK\r\n-ERR x  y\r\n,1.5\r\n"
    pairs = MapReply([(b"k", b"v")])
    assert encode(pairs, 2) == b"*2\r\n$1\r\nk\r\n$1\r\nv\r\n"
    assert encode(pairs, 3) == b"%1\r\n$1\r\nk\r\n$1\r\nv\r\n"
    assert encode(NULL_ARRAY, 2) == b"*-1\r\n"
    assert encode(float("inf"), 2) == b"$3\r\ninf\r\n"


# -- over sockets -------------------------------------------------------------------


async def exchange(host: str, port: int, data: bytes, wait: float = 1.0) -> bytes:
    """Send ``data``; return everything received until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), wait)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            received += chunk
        return received
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
        (b"PING\r\nECHO hi\r\n", b"+PONG\r\n$2\r\nhi\r\n"),
        (b"*0\r\n*-3\r\nPING\r\n", b"+PONG\r\n"),
        (b"*x\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-7\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n+PING\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
        (b'ECHO "x\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        (b"PING " + b"x" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
        (
            b"NOPE a 'b c'\r\n",
            b"-ERR unknown command 'NOPE', with args beginning with: 'a' 'b c' \r\n",
        ),
        (b"GET\r\n", b"-ERR wrong number of arguments for 'get' command\r\n"),
    ],
)
async def test_frames_answer_like_redis(resp_target: Target, data: bytes, expected: bytes) -> None:
    assert await exchange(resp_target.host, resp_target.port, data, wait=0.5) == expected


async def test_half_sent_pipeline_does_not_stall_others(resp_target: Target) -> None:
    host, port = resp_target.host, resp_target.port
    slow_reader, slow_writer = await asyncio.open_connection(host, port)
    try:
        slow_writer.write(b"*2\r\n$4\r\nECHO\r\n$10\r\nhello")
        await slow_writer.drain()
        assert await exchange(host, port, b"PING\r\n", wait=0.3) == b"+PONG\r\n"
        slow_writer.write(b"world\r\nPING\r\n")
        await slow_writer.drain()
        expected = b"$10\r\nhelloworld\r\n+PONG\r\n"
        received = b""
        while len(received) < len(expected):
            chunk = await asyncio.wait_for(slow_reader.read(1024), 2.0)
            assert chunk, "the server closed the connection"
            received += chunk
        assert received == expected
    finally:
        slow_writer.close()


async def test_oversized_bulk_is_refused(nats_url: str) -> None:
    store, server = await start_adapter(nats_url, adapter_settings(proto_max_bulk_len=1000))
    try:
        reply = await exchange(server.host, server.port, b"*2\r\n$4\r\nECHO\r\n$1001\r\n")
        assert reply == b"-ERR Protocol error: invalid bulk length\r\n"
        ok = await exchange(
            server.host, server.port, b"*2\r\n$4\r\nECHO\r\n$1000\r\n" + b"x" * 1000 + b"\r\n"
        )
        assert ok == b"$1000\r\n" + b"x" * 1000 + b"\r\n"
    finally:
        await server.close()
        await store.close()


async def test_slow_reader_is_closed_and_others_are_served(nats_url: str) -> None:
    store, server = await start_adapter(nats_url, adapter_settings(max_output_buffer=64 * 1024))
    _, writer = await asyncio.open_connection(server.host, server.port)
    try:
        big = b"x" * 60_000
        frame = b"*2\r\n$4\r\nECHO\r\n$%d\r\n%b\r\n" % (len(big), big)
        with contextlib.suppress(ConnectionError):
            for _ in range(400):  # ~24 MB of replies that this client never reads
                writer.write(frame)
                await asyncio.wait_for(writer.drain(), 5.0)
        assert await exchange(server.host, server.port, b"PING\r\n", wait=0.3) == b"+PONG\r\n"
        for _ in range(100):
            if not server.connections or len(server.connections) == 0:
                break
            await asyncio.sleep(0.05)
        assert len(server.connections) == 0
    finally:
        writer.close()
        await server.close()
        await store.close()


async def test_query_buffer_limit_closes_the_client(nats_url: str) -> None:
    store, server = await start_adapter(nats_url, adapter_settings(max_query_buffer=100_000))
    try:
        # A bulk within the bulk limit but larger than the query buffer: never completes.
        head = b"*2\r\n$4\r\nECHO\r\n$1000000\r\n"
        reply = await exchange(server.host, server.port, head + b"y" * 200_000, wait=2.0)
        assert reply == b""
        assert await exchange(server.host, server.port, b"PING\r\n", wait=0.3) == b"+PONG\r\n"
    finally:
        await server.close()
        await store.close()


async def test_connection_limit(nats_url: str) -> None:
    store, server = await start_adapter(nats_url, adapter_settings(max_clients=2))
    held = [await asyncio.open_connection(server.host, server.port) for _ in range(2)]
    try:
        for reader, writer in held:
            writer.write(b"PING\r\n")
            assert await asyncio.wait_for(reader.readline(), 2.0) == b"+PONG\r\n"
        refused = await exchange(server.host, server.port, b"PING\r\n")
        assert refused == b"-ERR max number of clients reached\r\n"
    finally:
        for _, writer in held:
            writer.close()
        await server.close()
        await store.close()


async def test_password_is_required(nats_url: str) -> None:
    store, server = await start_adapter(nats_url, adapter_settings(password="s3cret"))
    host, port = server.host, server.port
    try:
        assert await exchange(host, port, b"PING\r\n") == b"-NOAUTH Authentication required.\r\n"
        assert await exchange(host, port, b"AUTH nope\r\nPING\r\n") == (
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
            b"-NOAUTH Authentication required.\r\n"
        )
        assert await exchange(host, port, b"AUTH s3cret\r\nPING\r\n") == b"+OK\r\n+PONG\r\n"
        assert await exchange(host, port, b"AUTH default s3cret\r\nPING\r\n") == (
            b"+OK\r\n+PONG\r\n"
        )
        hello = await exchange(host, port, b"HELLO 3 AUTH default s3cret\r\nPING\r\n")
        assert hello.startswith(b"%7\r\n") and hello.endswith(b"+PONG\r\n")
        # Before AUTH a client cannot make the server buffer a large frame.
        assert await exchange(host, port, b"*11\r\n") == (
            b"-ERR Protocol error: invalid multibulk length\r\n"
        )
    finally:
        await server.close()
        await store.close()


async def test_quit_closes_after_reply(resp_target: Target) -> None:
    assert await exchange(resp_target.host, resp_target.port, b"QUIT\r\nPING\r\n") == b"+OK\r\n"


def test_adapter_endpoint_fixture(adapter: Endpoint) -> None:
    assert adapter.host == "127.0.0.1" and adapter.port > 0


async def test_transaction_queue_is_bounded(nats_url: str) -> None:
    store, server = await start_adapter(nats_url, adapter_settings(max_queued_commands=3))
    try:
        reply = await exchange(
            server.host, server.port, b"MULTI\r\n" + b"PING\r\n" * 4 + b"EXEC\r\nPING\r\n"
        )
        assert reply == (
            b"+OK\r\n"
            + b"+QUEUED\r\n" * 3
            + b"-ERR transaction too large for jetledger redis (at most 3 commands, "
            b"67108864 bytes)\r\n"
            b"-EXECABORT Transaction discarded because of previous errors.\r\n+PONG\r\n"
        )
    finally:
        await server.close()
        await store.close()


async def test_cli_serves_until_sigterm(nats_url: str) -> None:
    env = {**os.environ, "JETLEDGER_STREAM": "CLIREDIS", "JETLEDGER_ROOT": "clir"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "redis",
        "--port",
        "0",
        "--kv-bucket",
        "cli_redis",
        "--nats-url",
        nats_url,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stderr is not None
        port = 0
        for _ in range(50):
            line = (await asyncio.wait_for(process.stderr.readline(), 10.0)).decode()
            if match := re.search(r"serving redis://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
                break
        assert port
        assert await exchange("127.0.0.1", port, b"SET k v\r\nGET k\r\n", wait=0.5) == (
            b"+OK\r\n$1\r\nv\r\n"
        )
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10.0) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_pipeline_larger_than_the_query_buffer_is_served(nats_url: str) -> None:
    store, server = await start_adapter(nats_url, adapter_settings(max_query_buffer=4096))
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"*2\r\n$4\r\nECHO\r\n$10\r\n0123456789\r\n" * 3000)  # ~100 KB at once
        await writer.drain()
        expected = b"$10\r\n0123456789\r\n" * 3000
        received = b""
        while len(received) < len(expected):
            chunk = await asyncio.wait_for(reader.read(65536), 5.0)
            assert chunk, "the adapter closed the connection"
            received += chunk
        assert received == expected
        writer.close()
    finally:
        await server.close()
        await store.close()
