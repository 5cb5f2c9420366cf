"""What the adapter knows about each stream key's appends in flight, so that an entry
whose acknowledgement did not come is never stored after a later entry of its key.

Every pipelined entry has a send token (:mod:`gateway.resp.stream_appends`); tokens
follow the order in which entries go out, so for one key a larger token is a later
``XADD``. A :class:`KeyAppends` keeps, while any ``add_many`` of the key is in flight,
the highest token acknowledged as stored and the entries still waiting for an answer.
An unacknowledged entry is answered in token order; if a later entry of its key is
stored, it is only probed (:mod:`gateway.resp.append_recovery`), never stored anew.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from eventstore.publish import Outgoing

STORED_ACK = b'{"stream"'
"""How an acknowledgement of a stored entry starts (a refusal starts with ``{"error"``)."""

Unanswered = tuple[Outgoing, str]
"""A sent entry without acknowledgement: its event and its ``Jl-Redis-Fields`` value."""


@dataclass(slots=True, eq=False)
class KeyAppends:
    """One key's appends in flight through this adapter."""

    stored: int = -1
    """The highest send token known stored (acknowledged, or found by a probe)."""
    users: int = 0
    """``add_many`` calls in flight with entries of the key: the record goes at zero."""
    unanswered: dict[int, Unanswered] = field(default_factory=dict)
    """Sent entries whose acknowledgement did not come and that are not answered yet."""
    found: dict[int, int] = field(default_factory=dict)
    """Unanswered entries a probe found stored, with their sequence."""
    absent: set[int] = field(default_factory=set)
    """Unanswered entries a probe found not stored."""
    changed: asyncio.Event | None = None
    """Set when an unanswered entry is answered (waiters for their turn look again)."""

    def note_stored(self, token: int) -> None:
        self.stored = max(self.stored, token)

    def unanswered_later(self, token: int) -> list[int]:
        """Unanswered entries sent after ``token`` whose fate no probe has told yet."""
        return sorted(
            later
            for later in self.unanswered
            if later > token and later not in self.found and later not in self.absent
        )

    async def turn(self, token: int) -> None:
        """Wait until every unanswered entry of the key sent before ``token`` is answered:
        entries are answered in the order they were sent."""
        while any(earlier < token for earlier in self.unanswered):
            if self.changed is None:
                self.changed = asyncio.Event()
            await self.changed.wait()

    def answered(self, token: int) -> None:
        self.unanswered.pop(token, None)
        self.found.pop(token, None)
        self.absent.discard(token)
        changed, self.changed = self.changed, None
        if changed is not None:
            changed.set()


class AppendOrders:
    """The :class:`KeyAppends` of every key with appends in flight, by stream identity."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyAppends] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def enter(self, identity: str) -> KeyAppends:
        record = self._keys.get(identity)
        if record is None:
            record = self._keys[identity] = KeyAppends()
        record.users += 1
        return record

    def leave(self, identity: str, record: KeyAppends) -> None:
        record.users -= 1
        if record.users <= 0 and self._keys.get(identity) is record:
            del self._keys[identity]


__all__ = ["STORED_ACK", "AppendOrders", "KeyAppends", "Unanswered"]
