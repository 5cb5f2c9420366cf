"""The value of one Redis key as stored in the KV bucket: JSON only (G7).

Redis values are arbitrary bytes. They are stored as JSON strings through
``surrogateescape``: valid UTF-8 (everything by-framework writes) reads as itself in
the bucket, and any other byte still round-trips exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from gateway.resp.replies import WRONGTYPE, CommandError

Kind = Literal["string", "hash", "set", "zset", "list"]
Data = bytes | dict[bytes, bytes] | set[bytes] | dict[bytes, float] | list[bytes]


class CorruptValueError(Exception):
    """A KV entry that is not a value this adapter wrote."""


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def raw(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class StoredValue:
    """One key: its type, its data and when it expires (Unix ms, ``None``: never)."""

    kind: Kind
    data: Any
    expire_at_ms: int | None = None

    def expired(self, now_ms: int) -> bool:
        return self.expire_at_ms is not None and self.expire_at_ms <= now_ms

    def of_kind(self, kind: Kind) -> Any:
        """The data if this key holds ``kind``, else Redis's WRONGTYPE error."""
        if self.kind != kind:
            raise CommandError(WRONGTYPE)
        return self.data

    def encode(self) -> bytes:
        return json.dumps(
            {
                "type": self.kind,
                "value": _to_json(self.kind, self.data),
                "expire_at_ms": self.expire_at_ms,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> StoredValue:
        try:
            doc = json.loads(body)
            kind = doc["type"]
            return cls(kind, _from_json(kind, doc["value"]), doc.get("expire_at_ms"))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptValueError(f"not a RESP adapter value: {body[:80]!r}") from exc


def _to_json(kind: Kind, data: Any) -> Any:
    if kind == "string":
        return text(data)
    if kind == "hash":
        return {text(field): text(value) for field, value in data.items()}
    if kind == "set":
        return sorted(text(member) for member in data)
    if kind == "zset":
        # Scores as text: JSON has no infinity.
        return [[text(member), repr(score)] for member, score in data.items()]
    if kind == "list":
        return [text(item) for item in data]
    raise TypeError(f"unknown kind {kind}")


def _from_json(kind: str, value: Any) -> Any:
    if kind == "string":
        return raw(value)
    if kind == "hash":
        return {raw(field): raw(item) for field, item in value.items()}
    if kind == "set":
        return {raw(member) for member in value}
    if kind == "zset":
        return {raw(member): float(score) for member, score in value}
    if kind == "list":
        return [raw(item) for item in value]
    raise TypeError(f"unknown kind {kind}")


def zset_ordered(scores: dict[bytes, float]) -> list[tuple[bytes, float]]:
    """Members by score, then by member bytes (Redis's order)."""
    return sorted(scores.items(), key=lambda item: (item[1], item[0]))


def is_nan(value: float) -> bool:
    return math.isnan(value)


__all__ = ["CorruptValueError", "Data", "Kind", "StoredValue", "raw", "text", "zset_ordered"]
