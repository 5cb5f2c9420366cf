"""Writing many publish frames in one go.

nats-py spends most of a publish in per-call Python work (validation, header building,
buffer bookkeeping). For bulk appends we build the ``HPUB`` frames ourselves and hand
them to the client's outgoing buffer in one write, which keeps reconnect buffering and
TLS in nats-py's hands. The buffer is a private part of nats-py, so its presence is
checked once per connection and the code falls back to ``publish`` when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient


@dataclass(frozen=True, slots=True)
class Frame:
    """One message to publish: headers are plain ``str`` pairs."""

    subject: str
    payload: bytes
    headers: tuple[tuple[str, str], ...] = ()
    reply: str = ""


def encode_frame(frame: Frame) -> bytes:
    header_block = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in frame.headers) + "\r\n"
    header_bytes = header_block.encode()
    reply = f" {frame.reply}" if frame.reply else ""
    sizes = f"{len(header_bytes)} {len(header_bytes) + len(frame.payload)}"
    head = f"HPUB {frame.subject}{reply} {sizes}\r\n"
    return b"".join((head.encode(), header_bytes, frame.payload, b"\r\n"))


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
    if nc.is_closed:
        raise nats_errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats_errors.ConnectionDrainingError
    data = b"".join(encode_frame(frame) for frame in frames)
    if not nc.is_connected and len(data) + nc._pending_data_size > nc._max_pending_size:
        raise nats_errors.OutboundBufferLimitError
    await nc._send_command(data)
    await nc._flush_pending()


__all__ = ["Frame", "encode_frame", "publish_frames", "supports_bulk"]
