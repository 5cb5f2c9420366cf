"""What a change of one key decided, and the small helpers of :mod:`keyspace`.

Split from :mod:`keyspace` to keep modules small; command modules import ``Change``,
``UNCHANGED`` and ``now_ms`` from :mod:`keyspace`, which re-exports them.
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

from gateway.resp.change_queue import QueuedChange
from gateway.resp.kvstore import KVRecord
from gateway.resp.replies import CommandError
from gateway.resp.values import StoredValue

R = TypeVar("R")


class Unchanged:
    """Returned by a change function that leaves the key as it is."""


UNCHANGED = Unchanged()
NOTHING = object()


class Change(Generic[R]):
    """What a change function decided: the new value (``None`` deletes) and the reply."""

    __slots__ = ("reply", "value")

    def __init__(self, value: StoredValue | Unchanged | None, reply: R) -> None:
        self.value = value
        self.reply = reply


def utf8(key: bytes) -> bool:
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def now_ms() -> int:
    return int(time.time() * 1000)


class ValueTooLarge(Exception):
    """A key's new value does not fit in one NATS message."""


def live(record: KVRecord | None) -> StoredValue | None:
    if record is None or record.body is None:
        return None
    value: StoredValue | None = record.decoded
    if value is None:
        # Decoded once per record: change functions never modify a value in place.
        value = record.decoded = StoredValue.decode(record.body)
    return None if value.expired(now_ms()) else value


def peek(current: StoredValue | None) -> Change[StoredValue | None]:
    return Change(UNCHANGED, current)


def alive(value: StoredValue | None) -> StoredValue | None:
    return None if value is None or value.expired(now_ms()) else value


def maybe_too_large(value: StoredValue, limit: int) -> bool:
    """Whether the encoded value could exceed ``limit`` (a cheap bound: every byte
    escaped as ``\\u00XX``, every item with room for its punctuation and score)."""
    data = value.data
    if isinstance(data, bytes):
        size, items = len(data), 1
    elif isinstance(data, dict):
        size = sum(len(k) + (len(v) if isinstance(v, bytes) else 0) for k, v in data.items())
        items = len(data)
    else:
        size, items = sum(len(item) for item in data), len(data)
    return 6 * size + 32 * items + 128 > limit


class Outcome:
    """What a batch of changes decided: the final value and one reply (or error) each."""

    __slots__ = ("changed", "delete_stream", "replies", "value", "wrote")

    def __init__(self, value: StoredValue | None) -> None:
        self.value = value
        self.changed = False
        self.delete_stream = False
        self.replies: list[Any] = []
        self.wrote: list[bool] = []
        """Per change: whether it changed the value (a read or a no-op did not)."""

    def settle(self, batch: list[QueuedChange], *, early: bool = False) -> int:
        """Hand out the replies; ``early``: only those of changes that need no
        confirmation, before the write is acknowledged. How many were handed out."""
        settled = 0
        for item, reply, wrote in zip(batch, self.replies, self.wrote, strict=True):
            if item.reply.done():  # the caller went away; its change still counted
                continue
            if early and item.confirm:
                continue
            if isinstance(reply, CommandError):
                item.reply.set_exception(reply)
            else:
                item.reply.set_result(reply)
                item.answered_early = early and wrote
            settled += 1
        return settled


__all__ = [
    "NOTHING",
    "UNCHANGED",
    "Change",
    "Outcome",
    "Unchanged",
    "ValueTooLarge",
    "alive",
    "live",
    "maybe_too_large",
    "now_ms",
    "peek",
    "utf8",
]
