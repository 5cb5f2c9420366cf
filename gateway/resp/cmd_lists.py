"""List commands: RPUSH, LPUSH, LRANGE, LLEN, LPOP, RPOP, LINDEX, LTRIM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.resp.arguments import index_range, parse_int
from gateway.resp.keyspace import UNCHANGED, Change
from gateway.resp.registry import command
from gateway.resp.replies import OK, Reply
from gateway.resp.values import StoredValue

if TYPE_CHECKING:
    from gateway.resp.connection import Connection


async def _items(conn: Connection, key: bytes) -> list[bytes]:
    data: list[bytes] | None = await conn.server.keyspace.read_kind(conn.db, key, "list")
    return data or []


async def _push(conn: Connection, args: list[bytes], left: bool) -> int:
    new = list(reversed(args[1:])) if left else args[1:]

    def apply(current: StoredValue | None) -> Change[int]:
        items: list[bytes] = list(current.of_kind("list")) if current else []
        items = new + items if left else items + new
        return Change(
            StoredValue("list", items, current.expire_at_ms if current else None), len(items)
        )

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)


@command("RPUSH", -3, write=True)
async def rpush(conn: Connection, args: list[bytes]) -> Reply:
    return await _push(conn, args, left=False)


@command("LPUSH", -3, write=True)
async def lpush(conn: Connection, args: list[bytes]) -> Reply:
    return await _push(conn, args, left=True)


@command("LRANGE", 4)
async def lrange(conn: Connection, args: list[bytes]) -> Reply:
    start, stop = parse_int(args[1]), parse_int(args[2])
    items = await _items(conn, args[0])
    window = index_range(start, stop, len(items))
    return [] if window is None else list(items[window[0] : window[1]])


@command("LLEN", 2)
async def llen(conn: Connection, args: list[bytes]) -> Reply:
    return len(await _items(conn, args[0]))


@command("LINDEX", 3)
async def lindex(conn: Connection, args: list[bytes]) -> Reply:
    index = parse_int(args[1])
    items = await _items(conn, args[0])
    if index < 0:
        index += len(items)
    return items[index] if 0 <= index < len(items) else None


async def _pop(conn: Connection, key: bytes, left: bool) -> Reply:
    def apply(current: StoredValue | None) -> Change[Reply]:
        if current is None:
            return Change(UNCHANGED, None)
        items: list[bytes] = list(current.of_kind("list"))
        item = items.pop(0 if left else -1)
        return Change(StoredValue("list", items, current.expire_at_ms) if items else None, item)

    # A popped item is handed out once its removal is stored: never twice.
    return await conn.server.keyspace.mutate(conn.db, key, apply, confirm=True)


@command("LPOP", 2, write=True)
async def lpop(conn: Connection, args: list[bytes]) -> Reply:
    return await _pop(conn, args[0], left=True)


@command("RPOP", 2, write=True)
async def rpop(conn: Connection, args: list[bytes]) -> Reply:
    return await _pop(conn, args[0], left=False)


@command("LTRIM", 4, write=True)
async def ltrim(conn: Connection, args: list[bytes]) -> Reply:
    start, stop = parse_int(args[1]), parse_int(args[2])

    def apply(current: StoredValue | None) -> Change[Reply]:
        if current is None:
            return Change(UNCHANGED, OK)
        items: list[bytes] = current.of_kind("list")
        window = index_range(start, stop, len(items))
        kept = [] if window is None else items[window[0] : window[1]]
        if kept == items:
            return Change(UNCHANGED, OK)
        return Change(StoredValue("list", kept, current.expire_at_ms) if kept else None, OK)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)
