"""Events prepared for the wire on first use.

Bulk appends encode chunk *k+1* while the server stores chunk *k*: encoding everything
up front would leave the server idle for the whole encoding time. An event too large to
publish is refused here, before it could reach the connection (a frame above the
server's ``max_payload`` would make the server drop the connection).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eventstore.envelope import Event
from eventstore.publish import Outgoing
from eventstore.types import AppendResult

HEADER_ALLOWANCE = 512
"""Bytes kept free under ``max_payload`` for the headers of a frame."""


class PreparedEvents:
    def __init__(
        self, events: Sequence[Event], encode: Callable[[Event], Outgoing], size_limit: int
    ) -> None:
        self._events = events
        self._encode = encode
        self._size_limit = size_limit
        self._items: list[Outgoing | None] = [None] * len(events)

    def __len__(self) -> int:
        return len(self._events)

    def item(self, index: int) -> Outgoing:
        item = self._items[index]
        if item is None:
            item = self._items[index] = self._encode(self._events[index])
        return item

    def sendable(self, index: int) -> Outgoing | None:
        """The encoded event, or ``None`` if it is too large to send."""
        item = self.item(index)
        return item if len(item.body) <= self._size_limit else None

    def refusal(self, index: int) -> AppendResult | None:
        """The result for an event that must not be sent, or ``None`` if it may be."""
        item = self.item(index)
        if len(item.body) <= self._size_limit:
            return None
        return AppendResult(
            item.event_id,
            item.subject,
            error=f"{len(item.body)} bytes exceeds the {self._size_limit}-byte event limit; "
            "put large content in the Object Store and reference it",
        )


__all__ = ["HEADER_ALLOWANCE", "PreparedEvents"]
