"""Redis stream ids on the log: ``<stream sequence>-0``.

An entry's id is derived from the JetStream sequence it is stored at (docs/decisions.md):
sequences are strictly increasing and never reused, so ids are strictly increasing per
key, identical after an adapter restart and the same for every adapter instance. The
``ms`` half therefore is not a time; the ``seq`` half of a stored entry is always 0.

Ids given by clients (``XREAD`` positions, ``XRANGE`` bounds, ``XGROUP CREATE`` start
ids, ``XACK``) are parsed with Redis's own rules and error texts, then mapped to
sequences with :func:`first_seq_after` / :func:`first_seq_from` / :func:`last_seq_upto`.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.resp.replies import CommandError

MAX_PART = 2**64 - 1
INVALID_ID = "ERR Invalid stream ID specified as stream command argument"


class StreamId(NamedTuple):
    """A parsed id; ordering is Redis's (``ms`` first, then ``seq``)."""

    ms: int
    seq: int

    def render(self) -> bytes:
        return f"{self.ms}-{self.seq}".encode()


MIN_ID = StreamId(0, 0)
MAX_ID = StreamId(MAX_PART, MAX_PART)


def entry_id(stream_seq: int) -> bytes:
    """The Redis id of the entry stored at ``stream_seq``."""
    return b"%d-0" % stream_seq


def parse_id(raw: bytes, *, missing_seq: int = 0) -> StreamId:
    """``<ms>-<seq>`` or ``<ms>`` (its seq is ``missing_seq``: 0 for a start, max for an end)."""
    text = raw.decode("ascii", errors="replace")
    ms_text, dash, seq_text = text.partition("-")
    try:
        ms = _part(ms_text)
        seq = _part(seq_text) if dash else missing_seq
    except ValueError:
        raise CommandError(INVALID_ID) from None
    return StreamId(ms, seq)


def _part(text: str) -> int:
    if not text.isdigit():  # no sign, no spaces: Redis's strict unsigned parse
        raise ValueError(text)
    value = int(text)
    if value > MAX_PART:
        raise ValueError(text)
    return value


def parse_range_start(raw: bytes) -> tuple[StreamId, bool]:
    """An ``XRANGE`` start: ``-``, an id, or ``(id`` (exclusive); returns (id, exclusive)."""
    if raw == b"-":
        return MIN_ID, False
    if raw.startswith(b"("):
        return parse_id(raw[1:]), True
    return parse_id(raw), False


def parse_range_end(raw: bytes) -> tuple[StreamId, bool]:
    """An ``XRANGE`` end: ``+``, an id (a bare ms means its last seq), or ``(id``."""
    if raw == b"+":
        return MAX_ID, False
    if raw.startswith(b"("):
        return parse_id(raw[1:], missing_seq=MAX_PART), True
    return parse_id(raw, missing_seq=MAX_PART), False


def first_seq_after(position: StreamId) -> int:
    """The first stream sequence whose id is greater than ``position``."""
    return position.ms + 1


def first_seq_from(start: StreamId, exclusive: bool) -> int:
    """The first sequence whose id is ``>= start`` (``> start`` when exclusive)."""
    if exclusive or start.seq > 0:
        return start.ms + 1
    return max(start.ms, 1)


def last_seq_upto(end: StreamId, exclusive: bool) -> int:
    """The last sequence whose id is ``<= end`` (``< end`` when exclusive); 0: none."""
    if exclusive and end.seq == 0:
        return end.ms - 1
    return min(end.ms, MAX_PART)
