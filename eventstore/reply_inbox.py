"""One wildcard inbox subscription whose replies are routed by their last subject token.

Bulk appends expect thousands of replies; one subscription with a dict lookup per reply
costs far less than a request (and its future and subscription bookkeeping) per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

ReplyHandler = Callable[[str, bytes], None]
"""Called with the reply subject's tail (after the inbox prefix) and the reply body."""


class ReplyInbox:
    def __init__(self, nc: NatsClient, handler: ReplyHandler, prefix: str | None = None) -> None:
        self._nc = nc
        self._handler = handler
        self.prefix = prefix or nc.new_inbox()
        self._subscription: Subscription | None = None
        self.activity = asyncio.Event()
        """Set on every reply; waiters clear it and wait again."""

    async def __aenter__(self) -> ReplyInbox:
        self._subscription = await self._nc.subscribe(f"{self.prefix}.>", cb=self._on_reply)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._subscription is not None and not self._nc.is_closed:
            await self._subscription.unsubscribe()
        self._subscription = None

    async def _on_reply(self, msg: Msg) -> None:
        self._handler(msg.subject[len(self.prefix) + 1 :], msg.data)
        self.activity.set()

    def reply_subject(self, tail: str) -> str:
        return f"{self.prefix}.{tail}"


__all__ = ["ReplyHandler", "ReplyInbox"]
