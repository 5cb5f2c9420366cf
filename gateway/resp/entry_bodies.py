"""The stored body of one ``XADD``, built without pydantic where its content is known.

Most appends go to keys by-framework does not define (anything but its control and
session streams): they are stored as ``state.updated`` whose content the adapter makes
itself (JSON-safe text fields, a fixed session, a run named after the key), so nothing
in them can fail validation. Building that JSON directly costs a fraction of a
validate-and-serialize round trip through the event model, and gives the same bytes
(``tests/test_resp_entry_bodies.py`` compares the two). Entries whose content comes from
the client (by-framework commands, data-stream entries, plugin-reload acks) still go
through :func:`~gateway.resp.byframework_events.entry_event` and its validation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from datetime import UTC, datetime
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


class EntryBody(NamedTuple):
    event_id: str
    run_id: str | None
    """Data-stream entries are stored on their run's subject."""
    body: bytes


def entry_body(target: StreamTarget, fields: Fields) -> EntryBody:
    """The event one ``XADD`` of ``fields`` to ``target`` stores."""
    if target.kind == "generic" and not target.name.endswith(":ack"):
        return generic_body(target, fields, os.urandom(16).hex(), datetime.now(UTC))
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
    run_id = generic_run_id(target)
    value = {json_safe(name): json_safe(raw) for name, raw in fields}
    key = state_key(target)
    body = (
        f'{{"id":{_TEXT.encode(event_id)},"type":"state.updated","schema":1,'
        f'"time":"{_utc_text(at)}","session_id":"{GENERIC_SESSION}",'
        f'"run_id":"{run_id}","data":{{"scope":"global","key":{_TEXT.encode(key)},'
        f'"value":{_TEXT.encode(value)}}}}}'
    )
    return EntryBody(event_id, run_id, body.encode())


def _utc_text(at: datetime) -> str:
    # RFC 3339 in UTC with a "Z", microseconds only when there are any (as pydantic).
    return at.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


__all__ = ["EntryBody", "entry_body", "generic_body", "generic_run_id"]
