"""Reading stream entries straight from the log by sequence (batched direct gets).

One request returns up to ``count`` messages on a subject filter from a sequence on; the
server ends the batch with a 204 (end of batch) or 404 (nothing there) status message.
Each entry's Redis fields come from the ``Jl-Redis-Fields`` header (see
:mod:`gateway.resp.byframework_events`), from the body's ``data.value`` when that header
is ``=`` (:mod:`gateway.resp.entry_bodies`), or are the event body for native events.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.resp.append_link import AppendLink
from gateway.resp.byframework_events import (
    FIELDS_HEADER,
    FIELDS_IN_BODY,
    Fields,
    decode_fields,
    native_fields,
)
from gateway.resp.entry_bodies import fields_of_body
from gateway.resp.replies import CommandError

STATUS_HEADER = "Status"
END_STATUSES = frozenset({"204", "404", "408"})
MAX_BATCH = 10_000
"""Most messages one backwards window asks for."""


class StreamReadError(CommandError):
    """The server did not answer a read in time, or answered with an error status; the
    client gets it as an ``ERR`` reply."""

    def __init__(self, message: str) -> None:
        super().__init__(f"ERR {message}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: the log sequence it is stored at and its Redis fields."""

    seq: int
    fields: Fields


def entry_from(msg: Msg, seq: int) -> Entry:
    return entry_of((msg.headers or {}).get(FIELDS_HEADER), msg.data, seq)


def entry_of(fields_header: str | None, data: bytes, seq: int) -> Entry:
    """The entry of a message with this ``Jl-Redis-Fields`` header (or none) and body."""
    if fields_header is None:
        return Entry(seq, native_fields(data))
    if fields_header == FIELDS_IN_BODY:
        return Entry(seq, fields_of_body(data))
    return Entry(seq, decode_fields(fields_header))


async def read_entries(
    nc: NatsClient,
    stream: str,
    subject_filter: str,
    from_seq: int,
    count: int,
    *,
    timeout: float,
    until_seq: int | None = None,
    link: AppendLink | None = None,
) -> list[Entry]:
    """Up to ``count`` entries on ``subject_filter`` with ``from_seq <= seq [<= until_seq]``;
    through ``link`` when given (no subscription of nats-py's per read), else nats-py."""
    if count <= 0 or (until_seq is not None and until_seq < from_seq):
        return []
    request: dict[str, object] = {
        "seq": max(1, from_seq),
        "batch": count,
        "next_by_subj": subject_filter,
    }
    if until_seq is not None:
        request["up_to_seq"] = until_seq
    entries: list[Entry] = []
    done = asyncio.Event()
    failure: list[str] = []

    def take(status: str | None, seq: int, fields: str | None, data: bytes, bare: bool) -> None:
        if done.is_set():
            return
        if status in END_STATUSES or (status is None and bare and not data):
            done.set()
        elif status is not None:
            failure.append(f"direct get on {subject_filter} answered status {status}")
            done.set()
        elif until_seq is not None and seq > until_seq:
            done.set()
        else:
            entries.append(entry_of(fields, data, seq))
            if len(entries) >= count:
                done.set()

    subject = f"$JS.API.DIRECT.GET.{stream}"
    payload = json.dumps(request).encode()
    if link is not None:

        def on_raw(_reply: bytes, header: bytes, data: bytes) -> None:
            status, seq, fields = read_header(header)
            take(status, seq, fields, data, not header)

        try:
            sid = await link.request(subject, payload, on_raw)
        except (ConnectionError, OSError):
            pass  # the link just ended: read through nats-py
        else:
            try:
                await _answered(done, entries, subject_filter, timeout)
            finally:
                link.forget(sid)
            return _entries_or_failure(entries, failure)

    async def on_msg(msg: Msg) -> None:
        headers = msg.headers or {}
        seq = int(headers.get("Nats-Sequence", "0"))
        take(headers.get(STATUS_HEADER), seq, headers.get(FIELDS_HEADER), msg.data, not headers)

    subscription = await nc.subscribe(nc.new_inbox(), cb=on_msg)
    try:
        await nc.publish(subject, payload, subscription.subject)
        await _answered(done, entries, subject_filter, timeout)
    finally:
        await subscription.unsubscribe()
    return _entries_or_failure(entries, failure)


async def _answered(
    done: asyncio.Event, entries: list[Entry], subject_filter: str, timeout: float
) -> None:
    """Wait for the end of a batch; ``timeout`` counts from the last message."""
    while not done.is_set():
        received = len(entries)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            if len(entries) == received:
                raise StreamReadError(
                    f"no answer to a direct get on {subject_filter} within {timeout}s"
                ) from None


def _entries_or_failure(entries: list[Entry], failure: list[str]) -> list[Entry]:
    if failure:
        raise StreamReadError(failure[0])
    return entries


_SEQUENCE_LINE = b"\r\nNats-Sequence: "
_FIELDS_LINE = b"\r\n" + FIELDS_HEADER.encode() + b": "


def read_header(block: bytes) -> tuple[str | None, int, str | None]:
    """(status, ``Nats-Sequence`` or 0, ``Jl-Redis-Fields``) of a raw header block
    (``NATS/1.0 404 No Messages``, then ``Name: value`` lines)."""
    if not block:
        return None, 0, None
    first_end = block.find(b"\r\n")
    first = block[:first_end].split(b" ", 2)
    status = first[1].decode() if len(first) > 1 else None
    return (
        status,
        int(_header_value(block, _SEQUENCE_LINE) or 0),
        _header_value(block, _FIELDS_LINE),
    )


def _header_value(block: bytes, line: bytes) -> str | None:
    start = block.find(line)
    if start < 0:
        return None
    start += len(line)
    return block[start : block.find(b"\r\n", start)].decode()


async def read_backwards(
    nc: NatsClient,
    stream: str,
    subject_filter: str,
    floor_seq: int,
    until_seq: int,
    *,
    count: int,
    timeout: float,
    window: int = 256,
    link: AppendLink | None = None,
) -> list[Entry]:
    """Up to ``count`` entries, newest first, with ``floor_seq < seq <= until_seq``.

    Direct gets only read forwards, so this reads windows of sequences backwards from
    ``until_seq``; the window doubles while it comes back short.
    """
    found: list[Entry] = []
    upper = until_seq
    while upper > floor_seq and len(found) < count:
        lower = max(floor_seq + 1, upper - window + 1)
        size = min(upper - lower + 1, MAX_BATCH)
        chunk = await read_entries(
            nc, stream, subject_filter, lower, size, timeout=timeout, until_seq=upper, link=link
        )
        found.extend(reversed(chunk))
        upper = lower - 1
        window *= 2
    return found[:count]
