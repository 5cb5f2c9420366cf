"""The small shared vocabulary of the event store (results, records, the store protocol)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from eventstore.codec import Undecodable
from eventstore.envelope import Event

Record = tuple[int, Event | Undecodable]
"""``(stream sequence, event)``; an event that cannot be decoded comes as Undecodable."""


class StoredRecord(NamedTuple):
    """A record with the subject it is stored on (projectors keep the actual subject)."""

    seq: int
    subject: str
    item: Event | Undecodable


class AppendResult(NamedTuple):
    """What became of one appended event.

    ``seq`` is the stream sequence the event is stored at. It is ``None`` only for events
    of a fast-ingest ``append_many`` batch other than its last one: the server confirms
    them by count, not one by one. ``duplicate`` is ``True`` when the server already held
    an event with this id (G3) and ``None`` when the batch mode cannot tell. ``error`` is
    set when the event was not stored; the caller may retry it with the same id.

    A NamedTuple rather than a dataclass: bulk appends build one per event.
    """

    event_id: str
    subject: str
    seq: int | None = None
    duplicate: bool | None = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class EventLog(Protocol):
    """What readers and writers of the log depend on (implemented by ``EventStore``)."""

    async def append(
        self, event: Event, expected_last_subject_seq: int | None = None
    ) -> AppendResult: ...

    async def append_many(self, events: Sequence[Event]) -> list[AppendResult]: ...

    def read(
        self,
        from_seq: int = 1,
        *,
        until_seq: int | None = None,
        subject_filter: str | None = None,
        start_time: datetime | None = None,
    ) -> AsyncIterator[Record]: ...

    def subscribe(
        self, from_seq: int = 1, subject_filter: str | None = None
    ) -> AsyncIterator[Record]: ...


__all__ = ["AppendResult", "EventLog", "Record", "StoredRecord"]
