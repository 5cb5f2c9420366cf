"""The stored body of one ``XADD``, built without pydantic where its content is known.

Most appends go to keys by-framework does not define (anything but its control and
session streams): they are stored as ``state.updated`` whose content the adapter makes
itself (JSON-safe text fields, a fixed session, a run named after the key), so nothing
in them can fail validation. Building that JSON directly costs a fraction of a
validate-and-serialize round trip through the event model, and gives the same bytes
(``tests/test_resp_entry_bodies.py`` compares the two). Entries whose content comes from
the client (by-framework commands, data-stream entries, plugin-reload acks) still go
through :func:`~gateway.resp.byframework_events.entry_event` and its validation.

A generic body whose ``value`` gives the fields back exactly (every name and value UTF-8
text without NUL, not starting with ``base64:``, names distinct) says so
(``fields_in_body``): its entry then needs no copy of the fields in a header
(decision 31).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import NamedTuple

from eventstore.codec import encode
from gateway.resp.byframework_events import (
    GENERIC_SESSION,
    Fields,
    entry_event,
    json_safe,
    state_key,
)
from gateway.resp.stream_keys import StreamTarget

_TEXT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Encodes like the event serializer: UTF-8 as is, control characters escaped."""
_quote = encode_basestring
"""What ``_TEXT`` does to one str (the C function itself, without the method call)."""
BASE64_PREFIX = "base64:"
ID_BYTES_PER_DRAW = 16 * 256
TAIL_CACHE_SIZE = 4096


class EntryBody(NamedTuple):
    event_id: str
    run_id: str | None
    """Data-stream entries are stored on their run's subject."""
    body: bytes
    fields_in_body: bool = False
    """The body's ``data.value`` gives back the fields exactly (see the module doc)."""


def _event_ids() -> Iterator[str]:
    """Random 128-bit event ids (32 hex digits, as ``uuid4().hex``), drawn from the OS
    256 at a time: one ``getrandom`` call per id cost ~0.5 us of a ~20 us append. They
    are the entries' ``Nats-Msg-Id`` too, so they must never repeat: all are OS
    randomness."""
    while True:
        digits = os.urandom(ID_BYTES_PER_DRAW).hex()
        yield from [digits[start : start + 32] for start in range(0, len(digits), 32)]


new_entry_id = _event_ids().__next__


def entry_body(target: StreamTarget, fields: Fields) -> EntryBody:
    """The event one ``XADD`` of ``fields`` to ``target`` stores."""
    if target.kind == "generic" and not target.name.endswith(":ack"):
        event_id = new_entry_id()
        return _generic(target, fields, event_id, '"' + event_id + '"', _now_text())
    event = entry_event(target, fields)
    return EntryBody(event.id, event.run_id, encode(event))


def generic_run_id(target: StreamTarget) -> str:
    return _run_id_of(target.key)


@functools.lru_cache(maxsize=4096)
def _run_id_of(key: bytes) -> str:
    return "stream-" + hashlib.sha256(key).hexdigest()[:16]


def generic_body(target: StreamTarget, fields: Fields, event_id: str, at: datetime) -> EntryBody:
    """``state.updated`` (scope ``global``, key = the stream key, value = the fields), as
    :func:`~gateway.resp.byframework_events.entry_event` would store it."""
    return _generic(target, fields, event_id, _TEXT.encode(event_id), _utc_text(at))


_tails: dict[bytes, tuple[str, str]] = {}


def _tail_of(target: StreamTarget) -> tuple[str, str]:
    """The run id of ``target``'s generic entries and what follows the time in their
    body, up to the value (both depend on the key alone; cached by key, which hashes
    faster than the target)."""
    tail = _tails.get(target.key)
    if tail is None:
        if len(_tails) >= TAIL_CACHE_SIZE:
            _tails.clear()
        run_id = generic_run_id(target)
        tail = _tails[target.key] = (
            run_id,
            f'","session_id":"{GENERIC_SESSION}","run_id":"{run_id}",'
            f'"data":{{"scope":"global","key":{_TEXT.encode(state_key(target))},"value":',
        )
    return tail


def _generic(
    target: StreamTarget, fields: Fields, event_id: str, quoted_id: str, time_text: str
) -> EntryBody:
    run_id, tail = _tail_of(target)
    value, exact = _value_json(fields)
    body = (
        '{"id":' + quoted_id + ',"type":"state.updated","schema":1,"time":"' + time_text
        + tail + value + "}}"
    )  # fmt: skip
    return EntryBody(event_id, run_id, body.encode(), exact)


_names: dict[bytes, str | None] = {}
"""Field name -> its JSON string, or None if it cannot be exact (see ``_value_json``)."""


def _name_json(name: bytes) -> str | None:
    quoted = _names.get(name, "")
    if quoted == "":
        text = _exact_text(name)
        quoted = None if text is None else _quote(text)
        if len(_names) >= TAIL_CACHE_SIZE:
            _names.clear()
        _names[name] = quoted
    return quoted


def _exact_text(raw: bytes) -> str | None:
    """``raw`` as text when ``json_safe`` keeps it as it is and it reads back the same."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    if "\x00" in text or text.startswith(BASE64_PREFIX):
        return None
    return text


def _value_json(fields: Fields) -> tuple[str, bool]:
    """The JSON of ``{json_safe(name): json_safe(value)}`` and whether it is exact: it
    decodes back to ``fields`` (see the module doc)."""
    if len(fields) == 1:  # the usual entry: one pair, no repeated name possible
        name, raw = fields[0]
        quoted = _name_json(name)
        text = _exact_text(raw)
        if quoted is not None and text is not None:
            return "{" + quoted + ":" + _quote(text) + "}", True
    else:
        parts: list[str] = []
        seen: set[bytes] = set()
        for name, raw in fields:
            quoted, text = _name_json(name), _exact_text(raw)
            if quoted is None or text is None or name in seen:
                break
            seen.add(name)
            parts.append(quoted + ":" + _quote(text))
        else:
            return "{" + ",".join(parts) + "}", True
    # Binary text or repeated names: the dict the event model would build (base64 for
    # what is not text, the last value of a repeated name at its first place).
    return _TEXT.encode({json_safe(name): json_safe(raw) for name, raw in fields}), False


VALUE_MARK = b',"value":{'


def fields_of_body(body: bytes) -> Fields:
    """The fields of an entry whose body holds them exactly (``fields_in_body``).

    Only the value is parsed: it is the body's last member, and its mark cannot occur
    earlier (inside a JSON string a quote is escaped, so it never follows a comma)."""
    start = body.find(VALUE_MARK)
    # Decoded first: json.loads of bytes runs a Python-level encoding detection.
    if start >= 0 and body.endswith(b"}}"):
        value = json.loads(body[start + len(VALUE_MARK) - 1 : -2].decode())
    else:  # not the shape this module writes: read it whole
        value = json.loads(body.decode())["data"]["value"]
    return [(name.encode(), raw.encode()) for name, raw in value.items()]


_second_text: tuple[int, str] = (-1, "")


def _now_text() -> str:
    """``_utc_text(datetime.now(UTC))`` without building a datetime: the date and time
    of day are formatted once per second."""
    global _second_text  # noqa: PLW0603 - a one-entry cache of the current second
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    if _second_text[0] != second:
        _second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return _second_text[1] + (f".{micro:06d}Z" if micro else "Z")


def _utc_text(at: datetime) -> str:
    # RFC 3339 in UTC with a "Z", microseconds only when there are any (as pydantic).
    return at.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


__all__ = [
    "EntryBody",
    "entry_body",
    "fields_of_body",
    "generic_body",
    "generic_run_id",
    "new_entry_id",
]
