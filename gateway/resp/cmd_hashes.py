"""Hash commands: HSET, HMSET, HSETNX, HGET, HMGET, HGETALL, HDEL, HINCRBY, HEXISTS,
HLEN, HKEYS, HVALS. Fields keep insertion order, as Redis's small hashes do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.resp.arguments import parse_int
from gateway.resp.keyspace import UNCHANGED, Change
from gateway.resp.registry import command
from gateway.resp.replies import OK, CommandError, MapReply, Reply, wrong_args
from gateway.resp.values import StoredValue

if TYPE_CHECKING:
    from gateway.resp.connection import Connection


async def _hash(conn: Connection, key: bytes) -> dict[bytes, bytes]:
    data: dict[bytes, bytes] | None = await conn.server.keyspace.read_kind(conn.db, key, "hash")
    return data or {}


async def _set_fields(conn: Connection, args: list[bytes], name: str) -> int:
    if len(args) % 2 == 0:
        raise wrong_args(name)
    pairs = list(zip(args[1::2], args[2::2], strict=True))

    def apply(current: StoredValue | None) -> Change[int]:
        fields: dict[bytes, bytes] = dict(current.of_kind("hash")) if current else {}
        added = sum(field not in fields for field, _ in pairs)
        fields.update(pairs)
        expire_at = current.expire_at_ms if current else None
        return Change(StoredValue("hash", fields, expire_at), added)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)


@command("HSET", -4, write=True)
async def hset(conn: Connection, args: list[bytes]) -> Reply:
    return await _set_fields(conn, args, "hset")


@command("HMSET", -4, write=True)
async def hmset(conn: Connection, args: list[bytes]) -> Reply:
    await _set_fields(conn, args, "hmset")
    return OK


@command("HSETNX", 4, write=True)
async def hsetnx(conn: Connection, args: list[bytes]) -> Reply:
    key, field, value = args

    def apply(current: StoredValue | None) -> Change[int]:
        fields: dict[bytes, bytes] = dict(current.of_kind("hash")) if current else {}
        if field in fields:
            return Change(UNCHANGED, 0)
        fields[field] = value
        return Change(StoredValue("hash", fields, current.expire_at_ms if current else None), 1)

    return await conn.server.keyspace.mutate(conn.db, key, apply, confirm=True)  # set-if-absent


@command("HGET", 3)
async def hget(conn: Connection, args: list[bytes]) -> Reply:
    return (await _hash(conn, args[0])).get(args[1])


@command("HMGET", -3)
async def hmget(conn: Connection, args: list[bytes]) -> Reply:
    fields = await _hash(conn, args[0])
    return [fields.get(field) for field in args[1:]]


@command("HGETALL", 2)
async def hgetall(conn: Connection, args: list[bytes]) -> Reply:
    return MapReply(list((await _hash(conn, args[0])).items()))


@command("HKEYS", 2)
async def hkeys(conn: Connection, args: list[bytes]) -> Reply:
    return list((await _hash(conn, args[0])).keys())


@command("HVALS", 2)
async def hvals(conn: Connection, args: list[bytes]) -> Reply:
    return list((await _hash(conn, args[0])).values())


@command("HLEN", 2)
async def hlen(conn: Connection, args: list[bytes]) -> Reply:
    return len(await _hash(conn, args[0]))


@command("HEXISTS", 3)
async def hexists(conn: Connection, args: list[bytes]) -> Reply:
    return int(args[1] in await _hash(conn, args[0]))


@command("HDEL", -3, write=True)
async def hdel(conn: Connection, args: list[bytes]) -> Reply:
    doomed = set(args[1:])

    def apply(current: StoredValue | None) -> Change[int]:
        if current is None:
            return Change(UNCHANGED, 0)
        fields: dict[bytes, bytes] = current.of_kind("hash")
        kept = {field: value for field, value in fields.items() if field not in doomed}
        removed = len(fields) - len(kept)
        if not removed:
            return Change(UNCHANGED, 0)
        return Change(StoredValue("hash", kept, current.expire_at_ms) if kept else None, removed)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)


@command("HINCRBY", 4, write=True)
async def hincrby(conn: Connection, args: list[bytes]) -> Reply:
    key, field = args[0], args[1]
    delta = parse_int(args[2])

    def apply(current: StoredValue | None) -> Change[int]:
        fields: dict[bytes, bytes] = dict(current.of_kind("hash")) if current else {}
        number = parse_int(fields.get(field, b"0"), "ERR hash value is not an integer")
        result = number + delta
        if not -(2**63) <= result < 2**63:
            raise CommandError("ERR increment or decrement would overflow")
        fields[field] = str(result).encode()
        return Change(
            StoredValue("hash", fields, current.expire_at_ms if current else None), result
        )

    return await conn.server.keyspace.mutate(conn.db, key, apply)
