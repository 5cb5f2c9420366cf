"""Shared parsing and reply helpers of the stream commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.resp.replies import NULL_ARRAY, SYNTAX_ERROR, WRONGTYPE, CommandError, MapReply, Reply
from gateway.resp.stream_ids import entry_id
from gateway.resp.stream_reads import Entry

if TYPE_CHECKING:
    from gateway.resp.connection import Connection
    from gateway.resp.stream_space import StreamSpace

NOT_INTEGER = "ERR value is not an integer or out of range"
EXPLICIT_ID = (
    "ERR jetledger derives stream ids from the log sequence: XADD takes '*' only "
    "(see docs/decisions.md)"
)
UNLIMITED = 2**31
MAX_READ_BATCH = 10_000
"""Most entries one read fetches per key (COUNT caps it further)."""


def streams_of(conn: Connection) -> StreamSpace:
    streams: StreamSpace = conn.server.streams
    return streams


async def check_type(conn: Connection, key: bytes) -> None:
    """WRONGTYPE when ``key`` holds another type, as every stream command does.

    A key known as a stream needs no KV read: the keyspace refuses other types on it."""
    if await streams_of(conn).exists(key):
        return
    kind = await conn.server.keyspace.type_of(key, db=conn.db)
    if kind is not None and kind != "stream":
        raise CommandError(WRONGTYPE)


def to_int(raw: bytes, error: str = NOT_INTEGER) -> int:
    try:
        return int(raw)
    except ValueError:
        raise CommandError(error) from None


def render_entry(entry: Entry) -> Reply:
    flat: list[Reply] = [part for pair in entry.fields for part in pair]
    return [entry_id(entry.seq), flat]


def render_entries(entries: list[Entry]) -> list[Reply]:
    return [render_entry(entry) for entry in entries]


def parse_read_options(
    args: list[bytes], command_name: str, group_mode: bool
) -> tuple[int, float | None, bool, list[bytes], list[bytes]]:
    """(count, block seconds or None, noack, keys, ids) of XREAD / XREADGROUP."""
    count, block, noack = UNLIMITED, None, False
    index = 0
    while index < len(args):
        word = args[index].upper()
        if word == b"STREAMS":
            rest = args[index + 1 :]
            if not rest or len(rest) % 2:
                raise CommandError(
                    f"ERR Unbalanced {command_name.upper()} list of streams: for each stream "
                    "key an ID or '$' must be specified."
                )
            half = len(rest) // 2
            return count, block, noack, rest[:half], rest[half:]
        if word == b"COUNT" and index + 1 < len(args):
            count = to_int(args[index + 1])
            count = UNLIMITED if count <= 0 else count
            index += 2
        elif word == b"BLOCK" and index + 1 < len(args):
            block_ms = to_int(args[index + 1], "ERR timeout is not an integer or out of range")
            if block_ms < 0:
                raise CommandError("ERR timeout is negative")
            block = block_ms / 1000
            index += 2
        elif word == b"NOACK" and group_mode:
            noack, index = True, index + 1
        else:
            raise CommandError(SYNTAX_ERROR)
    raise CommandError(SYNTAX_ERROR)


def stream_reply(conn: Connection, results: list[tuple[bytes, list[Reply]]]) -> Reply:
    if not results:
        return NULL_ARRAY
    if conn.protocol == 3:
        return MapReply([(key, entries) for key, entries in results])
    return [[key, entries] for key, entries in results]


def no_blocking(conn: Connection) -> bool:
    """Inside MULTI a blocking read answers at once, as in Redis."""
    return bool(getattr(conn, "in_transaction", False))
