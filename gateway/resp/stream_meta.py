"""What the adapter keeps about a Redis stream key beyond its entries: that it exists,
its groups, and where a ``DEL`` cut it off (one JSON value per key in the KV bucket of
:class:`~gateway.resp.stream_space.StreamSpace`)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field


@dataclass(slots=True)
class StreamMeta:
    key: bytes
    exists: bool = False
    floor_seq: int = 0
    """Entries at or below this sequence were removed by DEL."""
    floor_count: int = 0
    """How many entries the key's subjects held at the floor (XLEN subtracts it)."""
    groups: dict[bytes, str] = field(default_factory=dict)
    """Group name -> durable consumer name."""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "key": b64(self.key),
                "exists": self.exists,
                "floor_seq": self.floor_seq,
                "floor_count": self.floor_count,
                "groups": {b64(name): durable for name, durable in self.groups.items()},
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> StreamMeta:
        value = json.loads(raw)
        groups = {unb64(name): str(durable) for name, durable in value["groups"].items()}
        return cls(unb64(value["key"]), bool(value["exists"]), int(value["floor_seq"]),
                   int(value["floor_count"]), groups)  # fmt: skip


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def durable_name(identity: str, group: bytes) -> str:
    """A valid, collision-free durable name; the mapping itself is kept in the meta."""
    return "redis_" + hashlib.sha256(identity.encode() + b"\0" + group).hexdigest()[:40]


__all__ = ["StreamMeta", "b64", "durable_name", "unb64"]
