"""A lean pull loop for one durable consumer: pull requests stay outstanding on a private
inbox and each command is handed to the runtime the moment it arrives.

nats-py's ``PullSubscription.fetch`` sends a request per call, waits for the batch (or a
status) and returns a list; between two calls nothing is requested, so a command that
arrives then waits for the next call, and every call pays for its request, a queue and
a ``wait_for`` per message. Here requests are sent ahead of need, like the Go client's
``Consume``: the consumer has a request outstanding for every slot the worker has free,
so the server pushes a command into a free slot as soon as it is stored.

Accounting (``Slots`` from ``runners.runtime``): a request for ``n`` messages reserves
``n`` slots; a message turns a reserved slot into a busy one; a request that ends (status
408 or 409) gives back the slots it did not fill, which the server reports in the
``Nats-Pending-Messages`` header. If no answer comes for a whole request period (a
server restart or a reconnect lost the request), the feed forgets its outstanding
requests and asks again: at worst one message more than the free slots arrives, and
it runs over capacity instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

log = logging.getLogger(__name__)

STATUS = "Status"
PENDING_MESSAGES = "Nats-Pending-Messages"
_NEVER = 1 << 30
"""A ``least`` no pool reaches: wait for a change instead."""
REQUEST_GRACE = 1.0
"""Seconds past a request's expiry after which its missing status counts as lost."""


class SlotPool(Protocol):
    """What the feed needs of the runtime's slots."""

    free: int

    async def reserve(
        self, most: int | Callable[[], int], least: Callable[[], int] | None = None
    ) -> int: ...

    async def release(self, count: int = 1) -> None: ...

    def take(self) -> None: ...

    async def poke(self) -> None: ...


class PullFeed:
    """Keeps pull requests outstanding on ``durable`` and hands each message to
    ``deliver`` (which must return soon: it starts a task). ``batch`` bounds one
    request; requests are re-sent every ``expires`` seconds while the worker is idle."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        stream: str,
        durable: str,
        slots: SlotPool,
        batch: int,
        expires: float,
        deliver: Callable[[Msg], Awaitable[None]],
        accepting: asyncio.Event | None = None,
        stopping: asyncio.Event,
    ) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._slots = slots
        self._batch = max(1, batch)
        self._expires = expires
        self._deliver = deliver
        self._accepting = accepting
        self._stopping = stopping
        self.pending = 0
        """Messages asked for and not yet received or given back."""
        self._cap = self._batch
        """Most messages asked for at once: halved after an idle request period, doubled
        when a request is used up (a quiet feed holds few of the shared slots)."""
        self._received = False
        """Whether a message arrived since the last expired request."""
        self._last_answer = 0.0
        """``loop.time()`` of the last message or status on the inbox (a sign of life)."""
        self._last_request = 0.0
        self._pause = False
        self._inbox = nc.new_inbox()
        self._subscription: Any = None

    async def run(self) -> None:
        """Request and receive until ``stopping`` is set; the inbox is closed on return,
        so commands still on their way are redelivered after the ack wait."""
        self._subscription = await self._nc.subscribe(self._inbox, cb=self._on_message)
        watchdog = asyncio.create_task(self._watch())
        try:
            await self._request_loop()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            with contextlib.suppress(NatsError):  # the connection may be gone already
                await self._subscription.unsubscribe()
            await self._slots.release(self.pending)
            self.pending = 0

    def _most(self) -> int:
        return self._cap - self.pending

    def _least(self) -> int:
        """Free slots worth a request: none while the cap is asked for; one when nothing
        is outstanding; else half a batch (not one request per finished run)."""
        if self.pending >= self._cap:
            return _NEVER
        if self.pending == 0:
            return 1
        return min(max(1, self._batch // 2), self._cap - self.pending)

    async def _request_loop(self) -> None:
        while not self._stopping.is_set():
            if self._accepting is not None and not self._accepting.is_set():
                await self._accepting.wait()  # suspended
                continue
            if self._pause:
                self._pause = False
                await asyncio.sleep(min(self._expires, 1.0))
                continue
            wanted = await self._slots.reserve(self._most, least=self._least)
            if wanted == 0 or self._stopping.is_set():
                await self._slots.release(wanted)
                return
            if self._accepting is not None and not self._accepting.is_set():
                await self._slots.release(wanted)
                continue
            self.pending += wanted
            await self._request(wanted)

    async def _request(self, count: int) -> None:
        self._last_request = asyncio.get_running_loop().time()
        body = {"batch": count, "expires": int(self._expires * 1_000_000_000)}
        try:
            await self._nc.publish(self._next_subject, json.dumps(body).encode(), reply=self._inbox)
        except NatsError as exc:
            # Not sent: give the slots back; the loop asks again once reconnected.
            log.warning("pull request on %s not sent: %s", self._next_subject, exc)
            self.pending -= count
            await self._slots.release(count)
            await asyncio.sleep(min(self._expires, 1.0))

    async def _on_message(self, msg: Msg) -> None:
        self._last_answer = asyncio.get_running_loop().time()
        headers = msg.headers
        status = headers.get(STATUS) if headers else None
        if status is None:
            self._received = True
            if self.pending > 0:
                self.pending -= 1  # its slot was reserved by the request
                if self.pending == 0:
                    # All it asked for came: ask for more next time (up to a batch).
                    self._cap = min(self._batch, self._cap * 2)
                    await self._slots.poke()  # the next request need not wait for a batch
            else:
                self._slots.take()  # from a request given up for lost: run over capacity
            await self._deliver(msg)
            return
        if status == "100":  # idle heartbeat (not asked for, but harmless)
            return
        # 408 request expired, 409 request or consumer ended: the rest is given back.
        left = _int_header(headers, PENDING_MESSAGES)
        unfilled = self.pending if left is None else min(left, self.pending)
        if status != "408":
            # Anything but an expiry (consumer deleted, leadership change, not found):
            # pause before asking again rather than spin on the same answer.
            self._pause = True
            log.info(
                "pull request on %s ended: %s %s",
                self._next_subject,
                status,
                (headers or {}).get("Description", ""),
            )
        if status == "408" and not self._received:
            # A whole request period without work: hold fewer slots, so a quiet feed
            # does not keep them from the worker's other agent types.
            self._cap = max(1, self._cap // 2)
        self._received = False
        self.pending -= unfilled
        await self._slots.release(unfilled)

    async def _watch(self) -> None:
        """Forget outstanding requests that got no answer for a whole request period."""
        period = self._expires + REQUEST_GRACE
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period / 2)
            quiet = loop.time() - max(self._last_answer, self._last_request)
            if self.pending > 0 and quiet >= period:
                log.info(
                    "no answer to %d requested messages on %s in %.1fs; asking again",
                    self.pending,
                    self._next_subject,
                    quiet,
                )
                lost, self.pending = self.pending, 0
                await self._slots.release(lost)


def _int_header(headers: dict[str, str] | None, name: str) -> int | None:
    if not headers or name not in headers:
        return None
    try:
        return int(headers[name])
    except ValueError:
        return None


__all__ = ["PullFeed", "SlotPool"]
