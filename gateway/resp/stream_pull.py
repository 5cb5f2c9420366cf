"""Pulling from a durable JetStream consumer the way ``XREADGROUP`` needs it.

``pull_now`` asks for up to ``batch`` messages that are available right now (``no_wait``);
``pull_one`` waits up to ``expires`` seconds for one. Blocking reads use ``pull_one`` in
short chunks and then ``pull_now`` for the rest, so no pull request is ever left open on
the server after the read returns: a message delivered to an inbox nobody listens to
would sit unacked until the ack wait.

Pulls go over the lean link of the pipelined appends when there is one (its inbox is
already subscribed, and a delivery costs a few slices instead of nats-py's ``Msg``, header
dict and queue), else over nats-py with an inbox per pull.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.resp.append_link import AppendLink
from gateway.resp.byframework_events import FIELDS_HEADER
from gateway.resp.stream_reads import STATUS_HEADER, StreamReadError, read_header

IDLE_HEARTBEAT = "100"


class Delivery(NamedTuple):
    """One message a pull delivered."""

    reply: str
    """Its JetStream ack subject."""
    fields_header: str | None
    """Its ``Jl-Redis-Fields`` header, if any."""
    data: bytes


class Puller:
    """Sends pull requests (see the module doc); ``lean_link`` gives the link or None."""

    def __init__(
        self, nc: NatsClient, lean_link: Callable[[], Awaitable[AppendLink | None]]
    ) -> None:
        self.nc = nc
        self._lean_link = lean_link

    async def pull(
        self, subject: str, request: dict[str, object], batch: int, timeout: float
    ) -> list[Delivery]:
        """One pull request; it ends at ``batch`` messages, at a closing status, or after
        ``timeout`` without any message (one wait per pull, not one per message)."""
        link = await self._lean_link()
        messages: list[Delivery] = []
        done = asyncio.Event()

        def take(status: str | None, delivery: Delivery) -> None:
            if done.is_set():
                return
            if status is None and delivery.reply:
                messages.append(delivery)
                if len(messages) >= batch:
                    done.set()
            elif status != IDLE_HEARTBEAT:  # anything else ends the pull
                done.set()

        def on_raw(reply: bytes, header: bytes, data: bytes) -> None:
            status, _seq, fields = read_header(header)
            take(status, Delivery(reply.decode(), fields, data))

        payload = json.dumps(request).encode()
        if link is not None:
            try:
                sid = await link.request(subject, payload, on_raw)
            except (ConnectionError, OSError):
                pass  # the link just ended: pull through nats-py
            else:
                try:
                    return await _gathered(messages, done, subject, timeout)
                finally:
                    link.forget(sid)

        async def on_msg(msg: Msg) -> None:
            headers = msg.headers or {}
            take(
                headers.get(STATUS_HEADER),
                Delivery(msg.reply, headers.get(FIELDS_HEADER), msg.data),
            )

        inbox = self.nc.new_inbox()
        subscription = await self.nc.subscribe(inbox, cb=on_msg)
        try:
            await self.nc.publish(subject, payload, inbox)
            return await _gathered(messages, done, subject, timeout)
        finally:
            await subscription.unsubscribe()


async def _gathered(
    messages: list[Delivery], done: asyncio.Event, subject: str, timeout: float
) -> list[Delivery]:
    while not done.is_set():
        received = len(messages)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            if len(messages) > received:
                continue  # still arriving: the timeout is per silence
            if messages:
                break
            raise StreamReadError(f"no answer to {subject} in {timeout}s") from None
    return messages


def _next_subject(stream: str, durable: str) -> str:
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"


async def pull_now(
    puller: Puller, stream: str, durable: str, batch: int, timeout: float
) -> list[Delivery]:
    """Whatever is available now, up to ``batch`` messages."""
    if batch <= 0:
        return []
    request: dict[str, object] = {"batch": batch, "no_wait": True}
    return await puller.pull(_next_subject(stream, durable), request, batch, timeout)


async def pull_one(
    puller: Puller, stream: str, durable: str, expires: float, timeout: float
) -> list[Delivery]:
    """Wait up to ``expires`` seconds for one message (plus ``timeout`` for the server's
    closing status)."""
    request: dict[str, object] = {"batch": 1, "expires": max(1, int(expires * 1e9))}
    return await puller.pull(_next_subject(stream, durable), request, 1, expires + timeout)


def pending_after(delivery: Delivery) -> int:
    """How many messages the consumer had left to deliver after this one."""
    return _ack_tokens(delivery.reply)[2]


def stream_seq_of(delivery: Delivery) -> tuple[int, int]:
    """(stream sequence, delivery count) from the ack subject of a pulled message."""
    delivered, stream_seq, _pending = _ack_tokens(delivery.reply)
    return stream_seq, delivered


ACK_V1_TOKENS = 9
ACK_V2_MIN_TOKENS = 11


def _ack_tokens(reply: str) -> tuple[int, int, int]:
    """(delivery count, stream sequence, pending) from an ack subject, read directly
    (nats-py's ``msg.metadata`` builds an object with a datetime for each message):
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``, or with
    ``<domain>.<account hash>`` before the stream (and a random token at the end)."""
    tokens = reply.split(".")
    if len(tokens) == ACK_V1_TOKENS:
        return int(tokens[4]), int(tokens[5]), int(tokens[8])
    if len(tokens) >= ACK_V2_MIN_TOKENS:
        return int(tokens[6]), int(tokens[7]), int(tokens[10])
    raise StreamReadError(f"unexpected JetStream ack subject {reply[:120]!r}")
