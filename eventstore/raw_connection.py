"""A minimal NATS protocol connection for reading the log in bulk.

nats-py parses every incoming message in Python and wraps it in objects, futures and
queues; reading the log that way costs ~40 us per message. This connection does one
thing: send requests and hand back the raw ``HMSG`` frames of their replies, parsed from
a buffer in a tight loop. It supports plain and TLS connections with user/password or
token auth; anything else (credentials files, nkeys) is for nats-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from eventstore.connection import ConnectOptions
from eventstore.errors import EventStoreError

READ_CHUNK = 1 << 20


class RawConnectionError(EventStoreError):
    """The bulk-read connection failed or the server refused it."""


class RawUnsupported(RawConnectionError):
    """These connect options need nats-py (credentials file, several servers...)."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    subject: str
    headers: bytes
    """The raw header block (``NATS/1.0 ...\\r\\nKey: Value\\r\\n...``), empty if none."""
    payload: bytes


class RawConnection:
    def __init__(self, options: ConnectOptions) -> None:
        if options.credentials_file is not None:
            raise RawUnsupported("credentials files need nats-py")
        servers = [part.strip() for part in options.resolved_url().split(",") if part.strip()]
        if len(servers) != 1:
            raise RawUnsupported("bulk reads use one server URL")
        self._options = options
        self._url = urlsplit(servers[0] if "://" in servers[0] else f"nats://{servers[0]}")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()

    async def connect(self) -> None:
        host, port = self._url.hostname or "127.0.0.1", self._url.port or 4222
        timeout = self._options.connect_timeout
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            info_line = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, TimeoutError) as exc:
            raise RawConnectionError(f"cannot reach NATS at {host}:{port}: {exc}") from exc
        if not info_line.startswith(b"INFO "):
            raise RawConnectionError(f"not a NATS server at {host}:{port}")
        info = json.loads(info_line[5:])
        tls = self._options.tls_context()
        if info.get("tls_required") or tls is not None or self._url.scheme == "tls":
            context = tls or ssl.create_default_context()
            await writer.start_tls(context, server_hostname=self._options.tls_hostname or host)
        writer.write(b"CONNECT " + json.dumps(self._connect_fields()).encode() + b"\r\nPING\r\n")
        await writer.drain()
        self._reader, self._writer = reader, writer
        line = await self._expect_line(timeout)
        if not line.startswith(b"PONG"):
            raise RawConnectionError(
                f"NATS refused the connection: {line.decode(errors='replace')}"
            )

    def _connect_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "name": f"{self._options.name}-bulk-reader",
            "lang": "python-jetledger",
            "version": "1",
            "protocol": 1,
        }
        user = self._options.user or self._url.username
        password = self._options.password or self._url.password
        if user:
            fields["user"], fields["pass"] = user, password or ""
        if self._options.token:
            fields["auth_token"] = self._options.token
        return fields

    async def _expect_line(self, timeout: float) -> bytes:
        while True:
            line = await self._read_line(timeout)
            if line.startswith(b"-ERR"):
                raise RawConnectionError(line.decode(errors="replace").strip())
            if line.startswith((b"INFO", b"+OK")):
                continue
            return line

    async def _read_line(self, timeout: float) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 2])
                del self._buffer[: end + 2]
                return line
            await self._fill(timeout)

    async def _fill(self, timeout: float) -> None:
        assert self._reader is not None
        try:
            # Not wait_for: on Python 3.11 it swallows a cancellation that arrives as the
            # read completes, and a cancelled follower then reads on forever (a projector
            # told to stop hung that way when the log grew at the same moment).
            async with asyncio.timeout(timeout):
                chunk = await self._reader.read(READ_CHUNK)
        except TimeoutError as exc:
            raise RawConnectionError(f"no data from NATS within {timeout}s") from exc
        except (OSError, ssl.SSLError) as exc:  # reset by a restarting server, for one
            raise RawConnectionError(f"the NATS connection broke: {exc}") from exc
        if not chunk:
            raise RawConnectionError("NATS closed the connection")
        self._buffer += chunk

    async def subscribe(self, subject: str, sid: int = 1) -> None:
        self._send(b"SUB %b %d\r\n" % (subject.encode(), sid))

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        reply_part = b" " + reply.encode() if reply else b""
        self._send(b"PUB %b%b %d\r\n%b\r\n" % (subject.encode(), reply_part, len(payload), payload))
        assert self._writer is not None
        try:
            await self._writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise RawConnectionError(f"the NATS connection broke: {exc}") from exc

    def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise RawConnectionError("not connected")
        self._writer.write(data)

    async def messages(self, timeout: float) -> list[RawMessage]:
        """Every complete message in the buffer (reading more until there is at least one).

        Answers the server's PINGs on the way; raises on ``-ERR`` or a closed connection.
        """
        while True:
            out = self._parse()
            if out:
                return out
            await self._fill(timeout)

    def _parse(self) -> list[RawMessage]:
        buffer = self._buffer
        out: list[RawMessage] = []
        position = 0
        size = len(buffer)
        while position < size:
            end = buffer.find(b"\r\n", position)
            if end < 0:
                break
            line = bytes(buffer[position:end])
            if line.startswith(b"HMSG "):
                parts = line.split(b" ")
                header_len, total_len = int(parts[-2]), int(parts[-1])
                body_start = end + 2
                if body_start + total_len + 2 > size:
                    break  # the rest of this message has not arrived yet
                headers = bytes(buffer[body_start : body_start + header_len])
                payload = bytes(buffer[body_start + header_len : body_start + total_len])
                out.append(RawMessage(parts[1].decode(), headers, payload))
                position = body_start + total_len + 2
            elif line.startswith(b"MSG "):
                parts = line.split(b" ")
                total_len = int(parts[-1])
                body_start = end + 2
                if body_start + total_len + 2 > size:
                    break
                payload = bytes(buffer[body_start : body_start + total_len])
                out.append(RawMessage(parts[1].decode(), b"", payload))
                position = body_start + total_len + 2
            else:
                position = end + 2
                if line == b"PING":
                    self._send(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    del buffer[:position]
                    raise RawConnectionError(line.decode(errors="replace"))
        del buffer[:position]
        return out

    def detach(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        """Hand the connected streams (and any bytes read past the handshake) to a caller
        that speaks the protocol itself; this object is unusable afterwards."""
        if self._reader is None or self._writer is None:
            raise RawConnectionError("not connected")
        streams = (self._reader, self._writer, bytes(self._buffer))
        self._reader, self._writer, self._buffer = None, None, bytearray()
        return streams

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):  # a dead socket: nothing to do
                await self._writer.wait_closed()
            self._writer = None


__all__ = ["RawConnection", "RawConnectionError", "RawMessage", "RawUnsupported"]
