"""Writing many publish frames in one go.

nats-py spends most of a publish in per-call Python work (validation, header building,
buffer bookkeeping). For bulk appends we build the ``HPUB`` frames ourselves and hand
them to the client's outgoing buffer in one write, which keeps reconnect buffering and
TLS in nats-py's hands. The buffer is a private part of nats-py, so its presence is
checked once per connection and the code falls back to ``publish`` when it is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient


class Frame(NamedTuple):
    """One message to publish. A NamedTuple: one is built per event on the hot path."""

    subject: str
    payload: bytes
    headers: tuple[tuple[str, str], ...] = ()
    reply: str = ""


def header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    if len(headers) == 1:  # the bulk path: just Nats-Msg-Id
        key, value = headers[0]
        return b"NATS/1.0\r\n%b: %b\r\n\r\n" % (key.encode(), value.encode())
    lines = [b"NATS/1.0\r\n"]
    for key, value in headers:
        lines.append(b"%b: %b\r\n" % (key.encode(), value.encode()))
    lines.append(b"\r\n")
    return b"".join(lines)


def hpub(subject: bytes, reply: bytes, block: bytes, payload: bytes) -> bytes:
    """One ``HPUB`` frame: ``reply`` is empty or a space and the reply subject, ``block``
    a header block. bytes %-formatting is the cheapest way to build a frame in CPython."""
    size = len(block)
    return b"HPUB %b%b %d %d\r\n%b%b\r\n" % (
        subject,
        reply,
        size,
        size + len(payload),
        block,
        payload,
    )


def encode_frame(frame: Frame) -> bytes:
    reply = b" " + frame.reply.encode() if frame.reply else b""
    return hpub(frame.subject.encode(), reply, header_block(frame.headers), frame.payload)


def msg_id_frame(subject: str, payload: bytes, msg_id: str, reply: str) -> bytes:
    """The frame of :func:`encode_frame` for the bulk path's one header, built directly."""
    block = b"NATS/1.0\r\nNats-Msg-Id: %b\r\n\r\n" % msg_id.encode()
    return hpub(subject.encode(), b" " + reply.encode(), block, payload)


def supports_bulk(nc: NatsClient) -> bool:
    return callable(getattr(nc, "_send_command", None)) and callable(
        getattr(nc, "_flush_pending", None)
    )


async def publish_frames(nc: NatsClient, frames: Sequence[Frame]) -> None:
    """Queue ``frames`` on the connection, in order, and ask for a flush.

    Raises what ``nc.publish`` would: closed or draining connection, or a full
    reconnect buffer.
    """
    if not frames:
        return
    if not supports_bulk(nc):
        for frame in frames:
            await nc.publish(frame.subject, frame.payload, frame.reply, dict(frame.headers))
        return
    await publish_encoded(nc, b"".join([encode_frame(frame) for frame in frames]))


async def publish_encoded(nc: NatsClient, data: bytes) -> None:
    """Queue already-encoded frames (see :func:`publish_frames`); needs ``supports_bulk``."""
    if nc.is_closed:
        raise nats_errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats_errors.ConnectionDrainingError
    if not nc.is_connected and len(data) + nc._pending_data_size > nc._max_pending_size:
        raise nats_errors.OutboundBufferLimitError
    await nc._send_command(data)
    await nc._flush_pending()
    # Let nats-py's flusher task put the bytes on the socket now, so the server works on
    # them while we encode the next chunk instead of after.
    await asyncio.sleep(0)


__all__ = [
    "Frame",
    "encode_frame",
    "header_block",
    "hpub",
    "msg_id_frame",
    "publish_encoded",
    "publish_frames",
    "supports_bulk",
]
