"""A lean NATS connection for pipelined ``XADD``\\ s (frames out, acknowledgements in)
and for the pulls of ``XREADGROUP``.

Through nats-py every acknowledgement of a pipelined append is parsed in Python, wrapped
in a ``Msg``, queued to a subscription task and handed to a callback: about a fifth of
the adapter's CPU per entry. This connection (handshake by
:class:`~eventstore.raw_connection.RawConnection`, so plain or TLS with user/password or
token) subscribes once to an inbox of its own and parses the replies in one loop per
read, calling ``on_reply(token, payload)`` for each; frames are written straight to the
socket in the caller's order, so the server stores them in that order.

It never reconnects by itself: when the connection ends, ``on_lost`` is called and the
appends still waiting for acknowledgements are answered through nats-py by
:mod:`gateway.resp.append_recovery` (same ``Nats-Msg-Id``, so an entry that was stored is
not stored twice, and none is stored after a later entry of its key); the owner opens a
new link later, once they are answered. Pull requests (:meth:`AppendLink.request`) get
their deliveries the same way, as raw reply subject, header block and payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
from collections.abc import Callable

from eventstore.connection import ConnectOptions
from eventstore.raw_connection import RawConnection

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
WRITE_HIGH_WATER = 4 << 20
"""Bytes queued in the transport before a sender waits for the socket to drain."""
SID = b"1"
MSG_WITH_REPLY = 5
"""Words of ``MSG <subject> <sid> <reply> <size>``; HMSG has one more (header size)."""
HMSG_WITH_REPLY = 6

ReplyCallback = Callable[[int, bytes], None]
MessageCallback = Callable[[bytes, bytes, bytes], None]
"""Called with a message's reply subject (empty if none), header block and payload."""


class AppendLink:
    def __init__(
        self, options: ConnectOptions, on_reply: ReplyCallback, on_lost: Callable[[], None]
    ) -> None:
        self._options = options
        self._on_reply = on_reply
        self._on_lost = on_lost
        name = os.urandom(12).hex().encode()
        self.prefix = b"_JL.redis.acks.%b." % name
        """Reply subjects are this prefix followed by a decimal token."""
        self._request_prefix = b"_JL.redis.pulls.%b." % name
        self._sids = itertools.count(2)  # 1 is the acknowledgement inbox
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._buffer = b""
        self._requests: dict[int, MessageCallback] = {}
        """Subscription id -> the request in flight it answers (pulls)."""

    @property
    def alive(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def open(self) -> None:
        raw = RawConnection(self._options)
        await raw.connect()
        reader, writer, self._buffer = raw.detach()
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        # The server handles a connection's protocol in order: the subscription is in
        # place before any frame sent after it names the inbox.
        writer.write(b"SUB %b> %b\r\n" % (self.prefix, SID))
        self._writer = writer
        self._reading = asyncio.create_task(self._read_loop(reader), name="resp-append-link")

    async def send(self, data: bytes) -> None:
        """Write encoded ``HPUB`` frames; waits only while the socket is backed up."""
        writer = self._writer
        if writer is None or writer.is_closing():
            raise ConnectionResetError("append link closed")
        writer.write(data)
        if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await writer.drain()

    async def request(self, subject: str, payload: bytes, on_message: MessageCallback) -> int:
        """Publish a request whose answers (any number of messages) go to ``on_message``
        until :meth:`forget` with the number returned. Each request has a subscription
        of its own: JetStream deliveries carry their stream subject, not the inbox, so
        only the subscription id tells whose they are."""
        sid = next(self._sids)
        self._requests[sid] = on_message
        inbox = b"%b%d" % (self._request_prefix, sid)
        head = b"SUB %b %d\r\nPUB %b %b %d\r\n" % (
            inbox,
            sid,
            subject.encode(),
            inbox,
            len(payload),
        )
        try:
            await self.send(head + payload + b"\r\n")
        except BaseException:
            self._requests.pop(sid, None)
            raise
        return sid

    def forget(self, sid: int) -> None:
        """End request ``sid``: later answers are dropped by the server."""
        if self._requests.pop(sid, None) is not None:
            self._send_now(b"UNSUB %d\r\n" % sid)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
            self._reading = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                self._buffer = self._parse(self._buffer + chunk if self._buffer else chunk)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("append link to NATS ended: %r", exc)
        finally:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.close()
            self._on_lost()

    def _parse(self, data: bytes) -> bytes:
        """Handle every complete protocol line/message in ``data``; return the rest."""
        position, size = 0, len(data)
        prefix_len = len(self.prefix)
        on_reply = self._on_reply
        while position < size:
            end = data.find(b"\r\n", position)
            if end < 0:
                break
            line = data[position:end]
            if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                # MSG <subject> <sid> [reply] <size>; HMSG ... <header size> <total size>
                parts = line.split(b" ")
                total = int(parts[-1])
                start = end + 2
                if start + total + 2 > size:
                    break  # the rest of this message has not arrived yet
                with_headers = line[0] == 72  # 72: "H"
                header = int(parts[-2]) if with_headers else 0
                position = start + total + 2
                if parts[2] == SID:  # an acknowledgement: routed by its subject's token
                    subject = parts[1]
                    if subject.startswith(self.prefix):
                        on_reply(int(subject[prefix_len:]), data[start + header : start + total])
                    continue
                request = self._requests.get(int(parts[2]))
                if request is not None:
                    has_reply = len(parts) == (HMSG_WITH_REPLY if with_headers else MSG_WITH_REPLY)
                    request(
                        parts[3] if has_reply else b"",
                        data[start : start + header],
                        data[start + header : start + total],
                    )
                continue
            position = end + 2
            if line == b"PING":
                self._send_now(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise ValueError(line.decode(errors="replace"))
        return data[position:]

    def _send_now(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)


__all__ = ["AppendLink", "MessageCallback", "ReplyCallback"]
