"""Encoding large hashes field by field, so a write of one field encodes one field.

A key is stored whole (decision 17), so every ``HSET`` of a large hash writes all of it.
Measured on by-framework's echo run, JSON-encoding those values was ~14% of the
adapter's CPU: its session registry hash grows by two fields a run (~85 KB after 200
runs, ~280 us to encode on the shared benchmark machine) and is written five times a
run. The encoded text of each field (``"field":"value"``) is kept per key here; a new
value is encoded by joining the kept texts of the fields whose value is unchanged (the
same bytes object, or equal bytes) and encoding only the others: ~14 us for the same
hash. The bytes are exactly :meth:`StoredValue.encode`'s (tested).
"""

from __future__ import annotations

import json
from collections import OrderedDict

from gateway.resp.values import StoredValue, text

MIN_FIELDS = 32
"""Smaller hashes are encoded in one ``json.dumps`` (cheaper than keeping texts)."""
BUDGET_BYTES = 16 * 1024 * 1024
"""Kept texts of all keys together, at most (least recently written keys go first)."""

_Memo = dict[bytes, tuple[bytes, str]]
"""Field -> (the value its text was made from, ``"field":"value"`` as JSON)."""


def _field_text(field: bytes, value: bytes) -> str:
    return json.dumps(text(field)) + ":" + json.dumps(text(value))


class HashEncodings:
    """The JSON text of the fields of recently written large hashes, per KV key."""

    def __init__(self, min_fields: int = MIN_FIELDS, budget: int = BUDGET_BYTES) -> None:
        self._min_fields = min_fields
        self._budget = budget
        self._memos: OrderedDict[str, tuple[_Memo, int]] = OrderedDict()
        self._size = 0
        self.fields_encoded = 0
        """Fields whose text had to be made (the rest were reused): for tests."""

    def encode(self, kv_key: str, value: StoredValue) -> bytes:
        """``value.encode()``, reusing the texts of ``kv_key``'s unchanged fields."""
        if value.kind != "hash" or len(value.data) < self._min_fields:
            self.forget(kv_key)
            return value.encode()
        memo: _Memo = {}
        kept_before = self._memos.pop(kv_key, None)
        if kept_before is not None:
            memo = kept_before[0]
            self._size -= kept_before[1]
        data: dict[bytes, bytes] = value.data
        parts = []
        for field, item in data.items():
            kept = memo.get(field)
            if kept is None or (kept[0] is not item and kept[0] != item):
                kept = memo[field] = (item, _field_text(field, item))
                self.fields_encoded += 1
            parts.append(kept[1])
        if len(memo) > 2 * len(data):
            # Fields deleted since: drop their texts now and then, not on every write.
            for field in [field for field in memo if field not in data]:
                del memo[field]
        body = ",".join(parts)
        self._keep(kv_key, memo, len(body))
        return (
            '{"type":"hash","value":{'
            + body
            + '},"expire_at_ms":'
            + json.dumps(value.expire_at_ms)
            + "}"
        ).encode()

    def _keep(self, kv_key: str, memo: _Memo, size: int) -> None:
        self._memos[kv_key] = (memo, size)  # most recently written last
        self._size += size
        while self._size > self._budget and self._memos:
            _key, (_memo, dropped) = self._memos.popitem(last=False)
            self._size -= dropped

    def forget(self, kv_key: str) -> None:
        dropped = self._memos.pop(kv_key, None)
        if dropped is not None:
            self._size -= dropped[1]

    def clear(self) -> None:
        self._memos.clear()
        self._size = 0


__all__ = ["HashEncodings"]
