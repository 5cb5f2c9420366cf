"""Reading stream entries straight from the log by sequence (batched direct gets).

One request returns up to ``count`` messages on a subject filter from a sequence on; the
server ends the batch with a 204 (end of batch) or 404 (nothing there) status message.
Each entry's Redis fields come from the ``Jl-Redis-Fields`` header (see
:mod:`gateway.resp.byframework_events`), or are the event body for native events.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.resp.byframework_events import FIELDS_HEADER, Fields, decode_fields, native_fields
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
    headers = msg.headers or {}
    raw = headers.get(FIELDS_HEADER)
    fields = decode_fields(raw) if raw is not None else native_fields(msg.data)
    return Entry(seq, fields)


async def read_entries(
    nc: NatsClient,
    stream: str,
    subject_filter: str,
    from_seq: int,
    count: int,
    *,
    timeout: float,
    until_seq: int | None = None,
) -> list[Entry]:
    """Up to ``count`` entries on ``subject_filter`` with ``from_seq <= seq [<= until_seq]``."""
    if count <= 0 or (until_seq is not None and until_seq < from_seq):
        return []
    request: dict[str, object] = {
        "seq": max(1, from_seq),
        "batch": count,
        "next_by_subj": subject_filter,
    }
    if until_seq is not None:
        request["up_to_seq"] = until_seq
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    subscription = await nc.subscribe(inbox, cb=queue.put)
    entries: list[Entry] = []
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), inbox)
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                raise StreamReadError(
                    f"no answer to a direct get on {subject_filter} within {timeout}s"
                ) from None
            headers = msg.headers or {}
            status = headers.get(STATUS_HEADER)
            if status in END_STATUSES or (status is None and not headers and not msg.data):
                return entries
            if status is not None:
                raise StreamReadError(f"direct get on {subject_filter} answered status {status}")
            seq = int(headers.get("Nats-Sequence", "0"))
            if until_seq is not None and seq > until_seq:
                return entries
            entries.append(entry_from(msg, seq))
            if len(entries) >= count:
                return entries
    finally:
        await subscription.unsubscribe()


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
            nc, stream, subject_filter, lower, size, timeout=timeout, until_seq=upper
        )
        found.extend(reversed(chunk))
        upper = lower - 1
        window *= 2
    return found[:count]
