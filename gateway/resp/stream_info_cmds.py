"""Stream introspection: XINFO GROUPS|CONSUMERS|STREAM and XPENDING (via cmd_streams)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.resp.registry import command
from gateway.resp.replies import SYNTAX_ERROR, CommandError, MapReply, Reply
from gateway.resp.stream_args import check_type, render_entries, streams_of, to_int
from gateway.resp.stream_group_cmds import nogroup
from gateway.resp.stream_groups import ConsumerGroup, PendingEntry
from gateway.resp.stream_ids import (
    MAX_PART,
    entry_id,
    first_seq_from,
    last_seq_upto,
    parse_range_end,
    parse_range_start,
)
from gateway.resp.stream_space import StreamSpace

if TYPE_CHECKING:
    from gateway.resp.connection import Connection

NO_SUCH_KEY = "ERR no such key"


def _ms_since(moment: float, now: float) -> int:
    return max(0, int((now - moment) * 1000))


@command("XINFO", -2)
async def xinfo(conn: Connection, args: list[bytes]) -> Reply:
    sub = args[0].upper()
    streams = streams_of(conn)
    if sub == b"HELP":
        return [b"XINFO CONSUMERS <key> <group> | GROUPS <key> | STREAM <key>"]
    if len(args) < 2:
        raise CommandError(
            f"ERR unknown subcommand or wrong number of arguments for "
            f"'{args[0].decode(errors='replace')}'. Try XINFO HELP."
        )
    key = args[1]
    await check_type(conn, key)
    if not await streams.exists(key):
        raise CommandError(NO_SUCH_KEY)
    if sub == b"GROUPS" and len(args) == 2:
        length = await streams.length(key)
        return [_group_info(group, length) for group in await streams.groups(key)]
    if sub == b"CONSUMERS" and len(args) == 3:
        group = await streams.group(key, args[2])
        if group is None:
            raise nogroup(key, args[2])
        now = time.time()
        return [
            MapReply(
                [
                    (b"name", member.name),
                    (b"pending", group.pending_of(member.name)),
                    (b"idle", _ms_since(member.seen_at, now)),
                    (b"inactive", _ms_since(member.active_at, now) if member.active_at else -1),
                ]
            )
            for member in group.consumers.values()
        ]
    if sub == b"STREAM" and len(args) == 2:
        return await _stream_info(streams, key)
    raise CommandError(SYNTAX_ERROR)


def _group_info(group: ConsumerGroup, length: int) -> Reply:
    return MapReply(
        [
            (b"name", group.name),
            (b"consumers", len(group.consumers)),
            (b"pending", len(group.pending)),
            (b"last-delivered-id", entry_id(group.last_delivered_seq)),
            (b"entries-read", group.entries_read or None),
            (b"lag", max(0, length - group.entries_read) if group.entries_read else None),
        ]
    )


async def _stream_info(streams: StreamSpace, key: bytes) -> Reply:
    first = await streams.range(key, 1, MAX_PART, 1)
    last = await streams.range_reverse(key, 1, MAX_PART, 1)
    length = await streams.length(key)
    last_id = entry_id(last[0].seq) if last else b"0-0"
    return MapReply(
        [
            (b"length", length),
            (b"radix-tree-keys", 1 if length else 0),
            (b"radix-tree-nodes", 2 if length else 1),
            (b"last-generated-id", last_id),
            (b"max-deleted-entry-id", b"0-0"),
            (b"entries-added", length),
            (b"recorded-first-entry-id", entry_id(first[0].seq) if first else b"0-0"),
            (b"groups", len(await streams.groups(key))),
            (b"first-entry", render_entries(first)[0] if first else None),
            (b"last-entry", render_entries(last)[0] if last else None),
        ]
    )


@command("XPENDING", -3)
async def xpending(conn: Connection, args: list[bytes]) -> Reply:
    key, group_name, rest = args[0], args[1], args[2:]
    await check_type(conn, key)
    group = await streams_of(conn).group(key, group_name)
    if group is None:
        raise nogroup(key, group_name)
    if not rest:
        return _summary(group)
    min_idle_ms = 0
    if rest[0].upper() == b"IDLE":
        if len(rest) < 2:
            raise CommandError(SYNTAX_ERROR)
        min_idle_ms, rest = to_int(rest[1]), rest[2:]
    if len(rest) not in (3, 4):
        raise CommandError(SYNTAX_ERROR)
    start, start_exclusive = parse_range_start(rest[0])
    end, end_exclusive = parse_range_end(rest[1])
    count = to_int(rest[2])
    consumer = rest[3] if len(rest) == 4 else None
    first, last = first_seq_from(start, start_exclusive), last_seq_upto(end, end_exclusive)
    now = time.time()
    chosen = sorted(
        (
            p
            for p in group.pending.values()
            if first <= p.seq <= last
            and (consumer is None or p.consumer == consumer)
            and _ms_since(p.delivered_at, now) >= min_idle_ms
        ),
        key=lambda p: p.seq,
    )[: max(0, count)]
    return [_extended(p, now) for p in chosen]


def _summary(group: ConsumerGroup) -> Reply:
    if not group.pending:
        return [0, None, None, None]
    seqs = sorted(group.pending)
    per_consumer: dict[bytes, int] = {}
    for entry in group.pending.values():
        per_consumer[entry.consumer] = per_consumer.get(entry.consumer, 0) + 1
    owners: list[Reply] = [[name, str(n).encode()] for name, n in sorted(per_consumer.items())]
    return [len(seqs), entry_id(seqs[0]), entry_id(seqs[-1]), owners]


def _extended(entry: PendingEntry, now: float) -> Reply:
    return [
        entry_id(entry.seq),
        entry.consumer,
        _ms_since(entry.delivered_at, now),
        entry.deliveries,
    ]
