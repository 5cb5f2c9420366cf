"""Generic key commands: DEL, UNLINK, EXISTS, EXPIRE, PEXPIRE, PERSIST, TTL, PTTL, TYPE,
KEYS, SCAN.

Stream keys answer too (through the stream space). A stream has no TTL here: its
entries are events of the immutable log, so ``EXPIRE`` on a stream is accepted and
not enforced (``TTL`` answers -1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.resp.arguments import NOT_INTEGER, parse_int
from gateway.resp.keyspace import UNCHANGED, Change, now_ms
from gateway.resp.registry import command
from gateway.resp.replies import SYNTAX_ERROR, CommandError, Reply, SimpleString
from gateway.resp.values import StoredValue

if TYPE_CHECKING:
    from gateway.resp.connection import Connection


@command("DEL", -2, write=True)
async def del_(conn: Connection, args: list[bytes]) -> Reply:
    removed = 0
    for key in args:
        removed += await conn.server.keyspace.delete(conn.db, key)
    return removed


@command("UNLINK", -2, write=True)
async def unlink(conn: Connection, args: list[bytes]) -> Reply:
    return await del_(conn, args)


@command("EXISTS", -2)
async def exists(conn: Connection, args: list[bytes]) -> Reply:
    count = 0
    for key in args:
        count += await conn.server.keyspace.type_of(key, conn.db) is not None
    return count


def _expire_flags(name: str, options: list[bytes]) -> set[bytes]:
    flags: set[bytes] = set()
    for option in options:
        upper = option.upper()
        if upper not in (b"NX", b"XX", b"GT", b"LT"):
            raise CommandError(f"ERR Unsupported option {option.decode('utf-8', 'replace')}")
        flags.add(upper)
    if b"NX" in flags and len(flags) > 1:
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if {b"GT", b"LT"} <= flags:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    return flags


def _allowed(flags: set[bytes], current: int | None, new: int) -> bool:
    # Redis: a key without TTL counts as an infinite TTL for GT/LT.
    if b"NX" in flags and current is not None:
        return False
    if b"XX" in flags and current is None:
        return False
    if b"GT" in flags and (current is None or new <= current):
        return False
    return not (b"LT" in flags and current is not None and new >= current)


async def _expire(conn: Connection, args: list[bytes], name: str, unit_ms: int) -> Reply:
    key = args[0]
    amount = parse_int(args[1])
    flags = _expire_flags(name, args[2:])
    if abs(amount) > (2**63 - 1) // unit_ms - now_ms():
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    expire_at = now_ms() + amount * unit_ms

    def apply(current: StoredValue | None) -> Change[int]:
        if current is None:
            return Change(UNCHANGED, 0)
        if not _allowed(flags, current.expire_at_ms, expire_at):
            return Change(UNCHANGED, 0)
        if amount <= 0:
            return Change(None, 1)
        return Change(StoredValue(current.kind, current.data, expire_at), 1)

    result = await conn.server.keyspace.mutate(conn.db, key, apply)
    if result == 0 and not flags and await conn.server.keyspace.is_stream(key):
        return 1
    return result


@command("EXPIRE", -3, write=True)
async def expire(conn: Connection, args: list[bytes]) -> Reply:
    return await _expire(conn, args, "expire", 1000)


@command("PEXPIRE", -3, write=True)
async def pexpire(conn: Connection, args: list[bytes]) -> Reply:
    return await _expire(conn, args, "pexpire", 1)


@command("PERSIST", 2, write=True)
async def persist(conn: Connection, args: list[bytes]) -> Reply:
    def apply(current: StoredValue | None) -> Change[int]:
        if current is None or current.expire_at_ms is None:
            return Change(UNCHANGED, 0)
        return Change(StoredValue(current.kind, current.data, None), 1)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)


async def _ttl_ms(conn: Connection, key: bytes) -> int:
    value = await conn.server.keyspace.read(conn.db, key)
    if value is None:
        return -1 if await conn.server.keyspace.is_stream(key) else -2
    if value.expire_at_ms is None:
        return -1
    return max(0, value.expire_at_ms - now_ms())


@command("TTL", 2)
async def ttl(conn: Connection, args: list[bytes]) -> Reply:
    remaining = await _ttl_ms(conn, args[0])
    return remaining if remaining < 0 else (remaining + 500) // 1000


@command("PTTL", 2)
async def pttl(conn: Connection, args: list[bytes]) -> Reply:
    return await _ttl_ms(conn, args[0])


@command("TYPE", 2)
async def type_(conn: Connection, args: list[bytes]) -> Reply:
    kind = await conn.server.keyspace.type_of(args[0], conn.db)
    return SimpleString(kind or "none")


@command("KEYS", 2)
async def keys(conn: Connection, args: list[bytes]) -> Reply:
    return list(await conn.server.keyspace.keys(conn.db, args[0]))


@command("SCAN", -2)
async def scan(conn: Connection, args: list[bytes]) -> Reply:
    try:
        cursor = int(args[0])
    except ValueError:
        raise CommandError("ERR invalid cursor") from None
    if cursor < 0 or not args[0].isdigit():
        raise CommandError("ERR invalid cursor")
    pattern: bytes | None = None
    count = 10
    kind: str | None = None
    options = args[1:]
    i = 0
    while i < len(options):
        option = options[i].upper()
        if i + 1 >= len(options):
            raise CommandError(SYNTAX_ERROR)
        if option == b"MATCH":
            pattern = options[i + 1]
        elif option == b"COUNT":
            count = parse_int(options[i + 1], NOT_INTEGER)
            if count < 1:
                raise CommandError(SYNTAX_ERROR)
        elif option == b"TYPE":
            kind = options[i + 1].decode("utf-8", "replace").lower()
        else:
            raise CommandError(SYNTAX_ERROR)
        i += 2
    next_cursor, found = await conn.server.keyspace.scan(conn.db, cursor, count, pattern, kind)
    return [str(next_cursor).encode(), list(found)]
