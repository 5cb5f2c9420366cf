"""Pulling from a durable JetStream consumer the way ``XREADGROUP`` needs it.

``pull_now`` asks for up to ``batch`` messages that are available right now (``no_wait``);
``pull_one`` waits up to ``expires`` seconds for one. Blocking reads use ``pull_one`` in
short chunks and then ``pull_now`` for the rest, so no pull request is ever left open on
the server after the read returns: a message delivered to an inbox nobody listens to
would sit unacked until the ack wait.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.resp.stream_reads import STATUS_HEADER, StreamReadError


async def _pull(
    nc: NatsClient, subject: str, request: dict[str, object], batch: int, timeout: float
) -> list[Msg]:
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    subscription = await nc.subscribe(inbox, cb=queue.put)
    messages: list[Msg] = []
    try:
        await nc.publish(subject, json.dumps(request).encode(), inbox)
        while len(messages) < batch:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                if messages:
                    return messages
                raise StreamReadError(f"no answer to {subject} in {timeout}s") from None
            status = (msg.headers or {}).get(STATUS_HEADER)
            if status is None and msg.reply:
                messages.append(msg)
            elif status != "100":  # 100 is an idle heartbeat; anything else ends the pull
                return messages
        return messages
    finally:
        await subscription.unsubscribe()


def _next_subject(stream: str, durable: str) -> str:
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"


async def pull_now(
    nc: NatsClient, stream: str, durable: str, batch: int, timeout: float
) -> list[Msg]:
    """Whatever is available now, up to ``batch`` messages."""
    if batch <= 0:
        return []
    request: dict[str, object] = {"batch": batch, "no_wait": True}
    return await _pull(nc, _next_subject(stream, durable), request, batch, timeout)


async def pull_one(
    nc: NatsClient, stream: str, durable: str, expires: float, timeout: float
) -> list[Msg]:
    """Wait up to ``expires`` seconds for one message (plus ``timeout`` for the server's
    closing status)."""
    request: dict[str, object] = {"batch": 1, "expires": max(1, int(expires * 1e9))}
    return await _pull(nc, _next_subject(stream, durable), request, 1, expires + timeout)


def pending_after(msg: Msg) -> int:
    """How many messages the consumer had left to deliver after this one."""
    return int(msg.metadata.num_pending or 0)


def stream_seq_of(msg: Msg) -> tuple[int, int]:
    """(stream sequence, delivery count) from the ack subject of a pulled message."""
    meta = msg.metadata
    return int(meta.sequence.stream), int(meta.num_delivered)
