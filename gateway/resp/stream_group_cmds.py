"""Consumer-group commands: XGROUP, XREADGROUP, XACK (registered via cmd_streams)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway.resp.registry import command
from gateway.resp.replies import NULL_ARRAY, OK, SYNTAX_ERROR, CommandError, Reply
from gateway.resp.stream_args import (
    check_type,
    no_blocking,
    parse_read_options,
    render_entries,
    stream_reply,
    streams_of,
)
from gateway.resp.stream_groups import ConsumerGroup
from gateway.resp.stream_ids import MAX_PART, entry_id, first_seq_after, parse_id
from gateway.resp.stream_space import StreamSpace

if TYPE_CHECKING:
    from gateway.resp.connection import Connection


def nogroup(key: bytes, group: bytes, suffix: str = "") -> CommandError:
    return CommandError(
        f"NOGROUP No such key '{key.decode(errors='replace')}' or consumer group "
        f"'{group.decode(errors='replace')}'{suffix}"
    )


@command("XGROUP", -2, write=True)
async def xgroup(conn: Connection, args: list[bytes]) -> Reply:
    sub = args[0].upper()
    streams = streams_of(conn)
    if sub == b"CREATE" and len(args) >= 4:
        key, group, raw_id, options = args[1], args[2], args[3], args[4:]
        mkstream = False
        while options:
            if options[0].upper() == b"MKSTREAM":
                mkstream, options = True, options[1:]
            elif options[0].upper() == b"ENTRIESREAD" and len(options) > 1:
                options = options[2:]
            else:
                raise CommandError(SYNTAX_ERROR)
        await check_type(conn, key)
        if raw_id == b"$":
            start = await streams.last_seq() + 1
        else:
            start = first_seq_after(parse_id(raw_id))
        await streams.create_group(key, group, start, mkstream)
        return OK
    if sub == b"DESTROY" and len(args) == 3:
        await check_type(conn, args[1])
        return await streams.destroy_group(args[1], args[2])
    if sub in (b"CREATECONSUMER", b"DELCONSUMER") and len(args) == 4:
        return await _member_command(streams, sub, args[1], args[2], args[3])
    if sub == b"HELP":
        return [b"XGROUP CREATE|DESTROY|CREATECONSUMER|DELCONSUMER (SETID is not supported)"]
    name = args[0].decode(errors="replace")
    raise CommandError(
        f"ERR unknown subcommand or wrong number of arguments for '{name}'. Try XGROUP HELP."
    )


async def _member_command(
    streams: StreamSpace, sub: bytes, key: bytes, group_name: bytes, consumer: bytes
) -> Reply:
    group = await streams.group(key, group_name)
    if group is None:
        raise nogroup(key, group_name)
    if sub == b"CREATECONSUMER":
        if consumer in group.consumers:
            return 0
        group.consumer(consumer)
        return 1
    pending = group.pending_of(consumer)
    if consumer in group.consumers:
        # Redis drops the consumer's pending entries; here they stay unacked on the log
        # and are delivered again after the ack wait, so no work is lost.
        for entry in [p for p in group.pending.values() if p.consumer == consumer]:
            del group.pending[entry.seq]
        del group.consumers[consumer]
    return pending


@command("XREADGROUP", -7, write=True)
async def xreadgroup(conn: Connection, args: list[bytes]) -> Reply:
    if args[0].upper() != b"GROUP" or len(args) < 3:
        raise CommandError(SYNTAX_ERROR)
    group_name, consumer_name = args[1], args[2]
    count, block, _noack, keys, ids = parse_read_options(args[3:], "xreadgroup", True)
    streams = streams_of(conn)
    groups: list[ConsumerGroup] = []
    for key, raw in zip(keys, ids, strict=True):
        await check_type(conn, key)
        group = await streams.group(key, group_name)
        if group is None:
            raise nogroup(key, group_name, " in XREADGROUP with GROUP option")
        if raw == b"$":
            raise CommandError(
                "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read "
                "the history of this consumer by specifying a proper ID, or use the > ID to "
                "get new messages. The $ ID would just return an empty result set."
            )
        if raw != b">":
            parse_id(raw)
        groups.append(group)
    if no_blocking(conn) or any(raw != b">" for raw in ids):
        block = None
    results: list[tuple[bytes, list[Reply]]] = []
    for key, raw, group in zip(keys, ids, groups, strict=True):
        member = group.consumer(consumer_name, conn)
        if raw == b">":
            # Several keys with BLOCK wait on the first key only; by-framework reads one.
            wait = block if len(keys) == 1 else None
            entries = await group.read_new(member, count, wait, conn.closed)
            if entries:
                results.append((key, render_entries(entries)))
        else:
            history = group.history(member, parse_id(raw).ms, count)
            results.append((key, await _history_reply(streams, key, [p.seq for p in history])))
    if not results and block is not None:
        return NULL_ARRAY
    return stream_reply(conn, results) if results else NULL_ARRAY


async def _history_reply(streams: StreamSpace, key: bytes, seqs: list[int]) -> list[Reply]:
    """Pending entries by sequence; an entry gone from the key reads as ``[id, nil]``."""
    replies: list[Reply] = []
    found = await asyncio.gather(*(streams.entry_at(key, seq) for seq in seqs))
    for seq, entry in zip(seqs, found, strict=True):
        replies.append(render_entries([entry])[0] if entry else [entry_id(seq), None])
    return replies


@command("XACK", -4, write=True)
async def xack(conn: Connection, args: list[bytes]) -> Reply:
    key, group_name, raw_ids = args[0], args[1], args[2:]
    seqs = []
    for raw in raw_ids:
        parsed = parse_id(raw)
        # Only ``<seq>-0`` ids exist here; any other id names no entry.
        seqs.append(parsed.ms if parsed.seq == 0 and parsed.ms <= MAX_PART else 0)
    await check_type(conn, key)
    group = await streams_of(conn).group(key, group_name)
    if group is None:
        return 0
    return await group.ack([seq for seq in seqs if seq > 0])
