"""Bytes <-> events. Anything that cannot be understood becomes an :class:`Undecodable`
record with a reason, never an exception that ends a read (G6). JSON only (G7).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from eventstore.catalog import CATALOG, AnyEvent
from eventstore.envelope import Event
from eventstore.upcasting import UPCASTERS, UpcasterRegistry, UpcastError

EXCERPT_CHARS = 512
_ANY_EVENT: TypeAdapter[Event] = TypeAdapter(AnyEvent)
_VALIDATE_JSON = _ANY_EVENT.validator.validate_json
"""The schema validator itself: TypeAdapter's wrapper costs a few percent per event."""

StoredAt = datetime | str | Callable[[], datetime | None] | None
"""When the server stored a body: a time, the server's RFC 3339 stamp, or a function that
gives it (a reader in bulk defers the parse: only a body without its own time needs it)."""


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A stored message that is not a valid event, kept with the reason why."""

    seq: int
    subject: str
    reason: str
    body: bytes = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def excerpt(self) -> str:
        """The start of the body as text, safe to log or to put in an event."""
        return self.body[:EXCERPT_CHARS].decode("utf-8", errors="replace")


def encode(event: Event) -> bytes:
    """The stored body of ``event``."""
    return event.to_json()


def decode(
    body: bytes,
    *,
    seq: int = 0,
    subject: str = "",
    stored_at: StoredAt = None,
    max_size: int | None = None,
    headers: dict[str, str] | None = None,
    upcasters: UpcasterRegistry = UPCASTERS,
) -> Event | Undecodable:
    """Turn a stored body into an event of the current schema, or say why not.

    A foreign publisher may omit ``id`` and ``time``; they are filled deterministically
    from the stream position (``seq-<seq>`` and the stored timestamp) so every reader
    and every rebuild sees the same event.
    """

    def reject(reason: str) -> Undecodable:
        return Undecodable(
            seq=seq, subject=subject, reason=reason, body=body, headers=headers or {}
        )

    if max_size is not None and len(body) > max_size:
        return reject(f"body of {len(body)} bytes exceeds the {max_size}-byte limit")
    if b"\\u" in body and _has_unstorable_text(body):
        # JSON escapes can smuggle in text that no read model can store (PostgreSQL and
        # DuckDB refuse it): reject it here instead of blocking every projector behind it.
        return reject("contains a NUL character or a lone UTF-16 surrogate")
    if upcasters is UPCASTERS:
        event = _decode_current(body)
        if event is not None:
            return event
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return reject(f"not JSON: {exc}")
    if not isinstance(doc, dict):
        return reject(f"body is a JSON {type(doc).__name__}, expected an object")
    event_type = doc.get("type")
    if not isinstance(event_type, str):
        return reject("missing or non-string 'type'")
    event_class = CATALOG.get(event_type)
    if event_class is None:
        return reject(f"unknown event type {event_type[:100]!r}")
    doc = _fill_defaults(doc, seq=seq, stored_at=stored_at)
    try:
        doc = upcasters.upcast(doc, event_class.SCHEMA)
        return event_class.model_validate(doc)
    except UpcastError as exc:
        return reject(f"{event_type}: {exc}")
    except ValidationError as exc:
        return reject(f"{event_type}: {_summarize(exc)}")


def decode_stored(
    body: bytes, seq: int, subject: str, stored_at: StoredAt, max_size: int | None
) -> Event | Undecodable:
    """:func:`decode` with the default upcasters, for a reader's hot loop: a complete
    body at the current schema version (nearly every one) is validated straight away,
    without the careful path's plumbing; anything else goes through :func:`decode`."""
    if (max_size is None or len(body) <= max_size) and b"\\u" not in body:
        try:
            event: Event = _VALIDATE_JSON(body)
        except ValidationError:
            pass
        else:
            fields_set = event.__pydantic_fields_set__
            if "id" in fields_set and "time" in fields_set:
                return event
    return decode(body, seq=seq, subject=subject, stored_at=stored_at, max_size=max_size)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _has_unstorable_text(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False  # the careful path reports it as not JSON
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _decode_current(body: bytes) -> Event | None:
    """The fast path for the common case: a complete body at the current schema version,
    parsed and validated in one pass. ``None`` sends the body down the careful path
    (missing id or time, an old version to upcast, or anything invalid)."""
    try:
        event: Event = _ANY_EVENT.validate_json(body)
    except ValidationError:
        return None
    # Defaults for id/time would be random / the clock: those bodies need _fill_defaults.
    if "id" in event.model_fields_set and "time" in event.model_fields_set:
        return event
    return None


def _fill_defaults(doc: dict[str, Any], *, seq: int, stored_at: StoredAt) -> dict[str, Any]:
    if "id" in doc and "time" in doc:
        return doc
    filled = dict(doc)
    if "id" not in filled and seq:
        filled["id"] = f"seq-{seq}"
    if callable(stored_at):
        stored_at = stored_at()
    if "time" not in filled and stored_at is not None:
        # A string is the server's RFC 3339 stamp, parsed by pydantic only when needed.
        filled["time"] = stored_at if isinstance(stored_at, str) else stored_at.isoformat()
    return filled


def _summarize(exc: ValidationError) -> str:
    """One line per problem, as ``field.path: message``; short enough for an event."""
    problems = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{location}: {error['msg']}")
    more = exc.error_count() - len(problems)
    if more > 0:
        problems.append(f"... and {more} more")
    return "; ".join(problems)


__all__ = ["StoredAt", "Undecodable", "decode", "decode_stored", "encode"]
