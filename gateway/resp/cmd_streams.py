"""Stream commands: XADD, XLEN, XRANGE, XREVRANGE, XREAD (and, by import, the rest).

Parsing and Redis's reply shapes and error texts live here; the log behind them is
:class:`gateway.resp.stream_space.StreamSpace` (``conn.server.streams``). The server
imports this module only, so it imports the group commands (XGROUP, XREADGROUP, XACK)
and the introspection commands (XINFO, XPENDING) to register them too.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, NamedTuple

from gateway.resp import stream_group_cmds, stream_info_cmds
from gateway.resp.byframework_events import Fields
from gateway.resp.registry import command
from gateway.resp.replies import (
    NULL_ARRAY,
    SYNTAX_ERROR,
    CommandError,
    ErrorReply,
    Reply,
    wrong_args,
)
from gateway.resp.stream_args import (
    EXPLICIT_ID,
    MAX_READ_BATCH,
    UNLIMITED,
    check_type,
    no_blocking,
    parse_read_options,
    render_entries,
    stream_reply,
    streams_of,
    to_int,
)
from gateway.resp.stream_ids import (
    MAX_PART,
    entry_id,
    first_seq_after,
    first_seq_from,
    last_seq_upto,
    parse_id,
    parse_range_end,
    parse_range_start,
)
from gateway.resp.stream_space import StreamSpace

if TYPE_CHECKING:
    from gateway.resp.connection import Connection

REGISTERED_WITH_THIS_MODULE = (stream_group_cmds, stream_info_cmds)
PLAIN_XADD_WORDS = 5


# -- XADD / XLEN / XRANGE -------------------------------------------------------------


class XaddRequest(NamedTuple):
    """A NamedTuple: one is built per entry of a pipeline."""

    key: bytes
    nomkstream: bool
    fields: Fields


def parse_xadd(args: list[bytes]) -> XaddRequest:
    if len(args) > 1 and args[1] == b"*":  # the usual form: no options
        pairs = args[2:]
        if not pairs or len(pairs) % 2:
            raise wrong_args("xadd")
        return XaddRequest(args[0], False, list(zip(pairs[::2], pairs[1::2], strict=True)))
    key, rest = args[0], args[1:]
    nomkstream = False
    while rest and rest[0].upper() in (b"NOMKSTREAM", b"MAXLEN", b"MINID", b"LIMIT"):
        option = rest[0].upper()
        if option == b"NOMKSTREAM":
            nomkstream, rest = True, rest[1:]
            continue
        # MAXLEN / MINID [=|~] threshold, LIMIT count: accepted; an immutable log trims
        # nothing (docs/decisions.md), the log's retention bounds it.
        rest = rest[1:]
        if rest and rest[0] in (b"=", b"~"):
            rest = rest[1:]
        if not rest:
            raise CommandError(SYNTAX_ERROR)
        to_int(rest[0]) if option != b"MINID" else parse_id(rest[0])
        rest = rest[1:]
    if not rest:
        raise CommandError(SYNTAX_ERROR)
    if rest[0] != b"*":
        parse_id(rest[0])
        raise CommandError(EXPLICIT_ID)
    pairs = rest[1:]
    if not pairs or len(pairs) % 2:
        raise wrong_args("xadd")
    return XaddRequest(key, nomkstream, list(zip(pairs[::2], pairs[1::2], strict=True)))


@command("XADD", -5, write=True)
async def xadd(conn: Connection, args: list[bytes]) -> Reply:
    request = parse_xadd(args)
    await check_type(conn, request.key)
    streams = streams_of(conn)
    if request.nomkstream and not await streams.exists(request.key):
        return None
    return entry_id(await streams.add(request.key, request.fields))


def _plain_xadd(words: list[bytes]) -> tuple[bytes, Fields] | None:
    """``XADD key * field value [field value ...]`` (whole command words), the form
    pipelines are made of, parsed without the option loop: (key, fields), or None for
    anything else."""
    size = len(words)
    if size == PLAIN_XADD_WORDS and words[2] == b"*":
        return words[1], [(words[3], words[4])]
    if size > PLAIN_XADD_WORDS and size % 2 and words[2] == b"*":
        return words[1], list(zip(words[3::2], words[4::2], strict=True))
    return None


async def xadd_pipelined(
    conn: Connection,
    commands: list[list[bytes]],
    *,
    after: asyncio.Future[None] | None = None,
    published: asyncio.Future[None] | None = None,
) -> list[Reply]:
    """Consecutive XADD commands a client pipelined, appended together (one reply each,
    in order; a refused one gets its own error and the others go on). ``commands`` are
    whole command words (``XADD`` first). ``after`` and ``published``: see
    :meth:`StreamSpace.add_many`."""
    streams = streams_of(conn)
    replies: list[Reply] = [None] * len(commands)
    positions: list[int] = []
    entries: list[tuple[bytes, Fields]] = []
    # Keys this group checked and appends to: an earlier XADD of the group creates the
    # key before a later one (NOMKSTREAM too) is stored.
    known: set[bytes] = set()
    for index, words in enumerate(commands):
        try:
            plain = _plain_xadd(words)
            if plain is None:
                key, nomkstream, fields = parse_xadd(words[1:])
            else:
                (key, fields), nomkstream = plain, False
            if key not in known:
                await check_type(conn, key)
                if nomkstream and not await streams.exists(key):
                    continue  # its reply stays None
                known.add(key)
        except CommandError as error:
            replies[index] = ErrorReply(error.message)
            continue
        positions.append(index)
        entries.append((key, fields))
    outcomes = await streams.add_many(entries, after=after, published=published)
    for index, outcome in zip(positions, outcomes, strict=True):
        replies[index] = (
            ErrorReply(outcome.message) if isinstance(outcome, CommandError) else entry_id(outcome)
        )
    return replies


@command("XLEN", 2)
async def xlen(conn: Connection, args: list[bytes]) -> Reply:
    await check_type(conn, args[0])
    return await streams_of(conn).length(args[0])


def _range_count(args: list[bytes]) -> int:
    if not args:
        return UNLIMITED
    if len(args) != 2 or args[0].upper() != b"COUNT":
        raise CommandError(SYNTAX_ERROR)
    count = to_int(args[1])
    return UNLIMITED if count < 0 else count


@command("XRANGE", -4)
async def xrange(conn: Connection, args: list[bytes]) -> Reply:
    key = args[0]
    start, start_exclusive = parse_range_start(args[1])
    end, end_exclusive = parse_range_end(args[2])
    count = _range_count(args[3:])
    await check_type(conn, key)
    if count == 0:
        return []
    first, last = first_seq_from(start, start_exclusive), last_seq_upto(end, end_exclusive)
    streams = streams_of(conn)
    if not await streams.exists(key):
        return []
    last = min(last, await streams.last_seq())
    return render_entries(await streams.range(key, first, last, count))


@command("XREVRANGE", -4)
async def xrevrange(conn: Connection, args: list[bytes]) -> Reply:
    key = args[0]
    end, end_exclusive = parse_range_end(args[1])
    start, start_exclusive = parse_range_start(args[2])
    count = _range_count(args[3:])
    await check_type(conn, key)
    streams = streams_of(conn)
    if count == 0 or not await streams.exists(key):
        return []
    first, last = first_seq_from(start, start_exclusive), last_seq_upto(end, end_exclusive)
    return render_entries(await streams.range_reverse(key, first, min(last, MAX_PART), count))


# -- XREAD ------------------------------------------------------------------------------


@command("XREAD", -4)
async def xread(conn: Connection, args: list[bytes]) -> Reply:
    count, block, _noack, keys, ids = parse_read_options(args, "xread", group_mode=False)
    streams = streams_of(conn)
    starts: list[int] = []
    needs_last = any(raw == b"$" for raw in ids)
    last = await streams.last_seq() if needs_last else 0
    for key, raw in zip(keys, ids, strict=True):
        await check_type(conn, key)
        if raw == b">":
            raise CommandError(
                "ERR The > ID can be specified only when calling XREADGROUP using the "
                "GROUP <group> <consumer> option."
            )
        starts.append(last + 1 if raw == b"$" else first_seq_after(parse_id(raw)))
    if no_blocking(conn):
        block = None
    if block is None:
        return stream_reply(conn, await _read_now(streams, keys, starts, count))
    return await _read_blocking(conn, streams, keys, starts, count=count, block=block)


async def _read_now(
    streams: StreamSpace, keys: list[bytes], starts: list[int], count: int
) -> list[tuple[bytes, list[Reply]]]:
    found = await asyncio.gather(
        *(
            streams.range(key, start, MAX_PART, min(count, MAX_READ_BATCH))
            for key, start in zip(keys, starts, strict=True)
        )
    )
    return [
        (key, render_entries(entries)) for key, entries in zip(keys, found, strict=True) if entries
    ]


async def _read_blocking(
    conn: Connection,
    streams: StreamSpace,
    keys: list[bytes],
    starts: list[int],
    *,
    count: int,
    block: float,
) -> Reply:
    """Wait (``block`` seconds, 0: forever) until any key has entries past its start.

    The subscription is made before the first read, so an entry stored between the read
    and the wait still wakes the reader.
    """
    loop = asyncio.get_running_loop()
    deadline = None if block == 0 else loop.time() + block
    async with streams.notifications(keys) as woken:
        while not conn.closed.is_set():
            woken.clear()
            results = await _read_now(streams, keys, starts, count)
            if results:
                return stream_reply(conn, results)
            wait = streams.settings.block_poll_seconds
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), wait)
    return NULL_ARRAY
