"""Opaque cursors and keyset pages that stay stable under concurrent writes.

A cursor is base64url JSON naming the list it belongs to and the keyset position of the
last row scanned, always on immutable columns: ``(first_seq, run_id)`` for runs, the
event ``seq`` for events, and ``(as_of_seq, position)`` for sessions (see
:meth:`projections.contract.ReadModelBackend.sessions_as_of`). New rows land before the
first page, never inside a later one, so paging never repeats or skips a row.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from gateway.api.errors import ApiError
from projections.contract import ReadModelBackend, RunFilter
from projections.rows import RunRow, SessionRow

CURSOR_VERSION = 1
MAX_SEQ = 2**63 - 1
"""Largest stream sequence (JetStream's are uint64; databases store int64)."""


class InvalidCursor(ApiError):
    def __init__(self, reason: str) -> None:
        super().__init__(
            400,
            "invalid_cursor",
            f"the cursor is not valid here ({reason}): use the next_cursor of this list",
        )


def encode_cursor(kind: str, position: Sequence[int | str]) -> str:
    raw = json.dumps({"v": CURSOR_VERSION, "k": kind, "p": list(position)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, types: Sequence[type]) -> list[Any]:
    """The position in ``cursor``, checked to be a ``kind`` cursor with values of ``types``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("not decodable") from exc
    if not isinstance(document, dict) or document.get("v") != CURSOR_VERSION:
        raise InvalidCursor("unknown version")
    if document.get("k") != kind:
        raise InvalidCursor(f"it belongs to another list than {kind}")
    position = document.get("p")
    if (
        not isinstance(position, list)
        or len(position) != len(types)
        or not all(type(value) is wanted for value, wanted in zip(position, types, strict=True))
        or not all(0 <= value <= MAX_SEQ for value in position if isinstance(value, int))
    ):
        raise InvalidCursor("malformed position")
    return position


async def runs_page(
    backend: ReadModelBackend,
    *,
    query: RunFilter,
    after: tuple[int, str] | None,
    limit: int,
    visible: Callable[[RunRow], Awaitable[bool]],
    scan_rows: int,
) -> tuple[list[RunRow], tuple[int, str] | None]:
    """Up to ``limit`` visible runs after keyset ``after`` (newest first), and the position
    to continue from (``None`` at the end). Runs may share a ``first_seq`` (one event can
    start several), so the page is read inclusively and rows at or before ``after`` dropped.
    """
    page: list[RunRow] = []
    scanned = 0
    batch = limit + 1
    while True:
        before_seq = after[0] + 1 if after is not None else None
        rows = await backend.list_runs(replace(query, limit=batch, before_seq=before_seq))
        fresh = [row for row in rows if after is None or (row.first_seq, row.run_id) < after]
        exhausted = len(rows) < batch
        if not fresh:
            if exhausted:
                return page, None
            batch *= 2  # a long run of ties at after[0]: read further
            continue
        for index, row in enumerate(fresh):
            after = (row.first_seq, row.run_id)
            scanned += 1
            if await visible(row):
                page.append(row)
            more_here = index + 1 < len(fresh)
            if len(page) == limit or scanned >= scan_rows:
                return page, after if (more_here or not exhausted) else None
        if exhausted:
            return page, None


async def sessions_page(
    backend: ReadModelBackend,
    *,
    as_of: int,
    before: int | None,
    limit: int,
    visible: Callable[[SessionRow], Awaitable[bool]],
    scan_rows: int,
) -> tuple[list[SessionRow], int | None]:
    """Up to ``limit`` visible sessions as of ``as_of`` below position ``before``, and the
    position to continue from (``None`` at the end)."""
    page: list[SessionRow] = []
    scanned = 0
    while True:
        rows = await backend.sessions_as_of(as_of, before, limit + 1)
        for index, (position, row) in enumerate(rows):
            before = position
            scanned += 1
            if await visible(row):
                page.append(row)
            if len(page) == limit or scanned >= scan_rows:
                more = index + 1 < len(rows) or len(rows) > limit
                return page, before if more else None
        if len(rows) <= limit:
            return page, None


def clamp_limit(limit: int | None, default: int, maximum: int) -> int:
    if limit is None:
        return default
    if limit < 1 or limit > maximum:
        raise ApiError(
            400,
            "invalid_limit",
            f"limit must be between 1 and {maximum}",
            {"limit": limit, "max": maximum},
        )
    return limit


__all__ = [
    "MAX_SEQ",
    "InvalidCursor",
    "clamp_limit",
    "decode_cursor",
    "encode_cursor",
    "runs_page",
    "sessions_page",
]
