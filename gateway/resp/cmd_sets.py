"""Set commands: SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.resp.keyspace import UNCHANGED, Change
from gateway.resp.registry import command
from gateway.resp.replies import Reply
from gateway.resp.values import StoredValue

if TYPE_CHECKING:
    from gateway.resp.connection import Connection


async def _members(conn: Connection, key: bytes) -> set[bytes]:
    data: set[bytes] | None = await conn.server.keyspace.read_kind(conn.db, key, "set")
    return data or set()


@command("SADD", -3, write=True)
async def sadd(conn: Connection, args: list[bytes]) -> Reply:
    new = set(args[1:])

    def apply(current: StoredValue | None) -> Change[int]:
        members: set[bytes] = set(current.of_kind("set")) if current else set()
        added = len(new - members)
        if not added:
            return Change(UNCHANGED, 0)
        members |= new
        return Change(StoredValue("set", members, current.expire_at_ms if current else None), added)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)


@command("SREM", -3, write=True)
async def srem(conn: Connection, args: list[bytes]) -> Reply:
    doomed = set(args[1:])

    def apply(current: StoredValue | None) -> Change[int]:
        if current is None:
            return Change(UNCHANGED, 0)
        members: set[bytes] = current.of_kind("set")
        removed = len(members & doomed)
        if not removed:
            return Change(UNCHANGED, 0)
        kept = members - doomed
        return Change(StoredValue("set", kept, current.expire_at_ms) if kept else None, removed)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)


@command("SMEMBERS", 2)
async def smembers(conn: Connection, args: list[bytes]) -> Reply:
    return list(sorted(await _members(conn, args[0])))


@command("SISMEMBER", 3)
async def sismember(conn: Connection, args: list[bytes]) -> Reply:
    return int(args[1] in await _members(conn, args[0]))


@command("SMISMEMBER", -3)
async def smismember(conn: Connection, args: list[bytes]) -> Reply:
    members = await _members(conn, args[0])
    return [int(member in members) for member in args[1:]]


@command("SCARD", 2)
async def scard(conn: Connection, args: list[bytes]) -> Reply:
    return len(await _members(conn, args[0]))
