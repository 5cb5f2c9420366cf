"""String commands: SET (NX XX GET EX PX EXAT PXAT KEEPTTL), GET, SETNX, SETEX, MGET,
GETDEL, INCR, INCRBY, DECR, DECRBY."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.resp.arguments import NOT_INTEGER, parse_int
from gateway.resp.keyspace import UNCHANGED, Change, now_ms
from gateway.resp.registry import command
from gateway.resp.replies import OK, SYNTAX_ERROR, WRONGTYPE, CommandError, Reply
from gateway.resp.values import StoredValue

if TYPE_CHECKING:
    from gateway.resp.connection import Connection


@dataclass(slots=True)
class SetOptions:
    condition: bytes | None = None  # b"NX" / b"XX"
    get: bool = False
    keep_ttl: bool = False
    expire_at_ms: int | None = None


_EXPIRE_UNITS = {b"EX": (1000, False), b"PX": (1, False), b"EXAT": (1000, True), b"PXAT": (1, True)}


def _parse_set(args: list[bytes]) -> SetOptions:
    options = SetOptions()
    expiry: tuple[bytes, bytes] | None = None
    i = 0
    while i < len(args):
        word = args[i].upper()
        if word in (b"NX", b"XX") and options.condition in (None, word):
            options.condition = word
        elif word == b"GET":
            options.get = True
        elif word == b"KEEPTTL" and expiry is None:
            options.keep_ttl = True
        elif word in _EXPIRE_UNITS and expiry is None and not options.keep_ttl:
            if i + 1 >= len(args):
                raise CommandError(SYNTAX_ERROR)
            expiry = (word, args[i + 1])
            i += 1
        else:
            raise CommandError(SYNTAX_ERROR)
        i += 1
    if expiry is not None:
        unit, absolute = _EXPIRE_UNITS[expiry[0]]
        amount = parse_int(expiry[1])
        if amount <= 0 or amount > (2**63 - 1) // unit - (0 if absolute else now_ms()):
            raise CommandError("ERR invalid expire time in 'set' command")
        options.expire_at_ms = amount * unit if absolute else now_ms() + amount * unit
    return options


async def set_value(conn: Connection, key: bytes, value: bytes, options: SetOptions) -> Reply:
    def apply(current: StoredValue | None) -> Change[Reply]:
        old = None
        if current is not None and options.get:
            old = current.of_kind("string")
        if (options.condition == b"NX" and current is not None) or (
            options.condition == b"XX" and current is None
        ):
            return Change(UNCHANGED, old if options.get else None)
        expire_at = options.expire_at_ms
        if options.keep_ttl and current is not None:
            expire_at = current.expire_at_ms
        return Change(StoredValue("string", value, expire_at), old if options.get else OK)

    if options.get and await conn.server.keyspace.is_stream(key):
        raise CommandError(WRONGTYPE)
    # A condition or GET makes SET a compare-and-set: answered once stored.
    confirm = options.condition is not None or options.get
    # Without a condition, GET or KEEPTTL the new value ignores the old one.
    blind = not confirm and not options.keep_ttl
    return await conn.server.keyspace.mutate(
        conn.db, key, apply, replaces_stream=True, confirm=confirm, blind=blind
    )


@command("SET", -3, write=True)
async def set_(conn: Connection, args: list[bytes]) -> Reply:
    return await set_value(conn, args[0], args[1], _parse_set(args[2:]))


@command("SETNX", 3, write=True)
async def setnx(conn: Connection, args: list[bytes]) -> Reply:
    reply = await set_value(conn, args[0], args[1], SetOptions(condition=b"NX"))
    return 1 if reply == OK else 0


@command("SETEX", 4, write=True)
async def setex(conn: Connection, args: list[bytes]) -> Reply:
    seconds = parse_int(args[1])
    if seconds <= 0:
        raise CommandError("ERR invalid expire time in 'setex' command")
    return await set_value(
        conn, args[0], args[2], SetOptions(expire_at_ms=now_ms() + seconds * 1000)
    )


@command("GET", 2)
async def get(conn: Connection, args: list[bytes]) -> Reply:
    value: bytes | None = await conn.server.keyspace.read_kind(conn.db, args[0], "string")
    return value


@command("MGET", -2)
async def mget(conn: Connection, args: list[bytes]) -> Reply:
    values: list[Reply] = []
    for key in args:
        value = await conn.server.keyspace.read(conn.db, key)
        values.append(value.data if value is not None and value.kind == "string" else None)
    return values


@command("GETDEL", 2, write=True)
async def getdel(conn: Connection, args: list[bytes]) -> Reply:
    def apply(current: StoredValue | None) -> Change[Reply]:
        if current is None:
            return Change(UNCHANGED, None)
        return Change(None, current.of_kind("string"))

    return await conn.server.keyspace.mutate(conn.db, args[0], apply, confirm=True)


async def _incr(conn: Connection, key: bytes, delta: int) -> Reply:
    def apply(current: StoredValue | None) -> Change[Reply]:
        number = 0
        expire_at = None
        if current is not None:
            raw = current.of_kind("string")
            number = parse_int(raw, NOT_INTEGER)
            expire_at = current.expire_at_ms
        result = number + delta
        if not -(2**63) <= result < 2**63:
            raise CommandError("ERR increment or decrement would overflow")
        return Change(StoredValue("string", str(result).encode(), expire_at), result)

    # Counters hand out numbers (ids, tickets): a number is given once it is stored.
    return await conn.server.keyspace.mutate(conn.db, key, apply, confirm=True)


@command("INCR", 2, write=True)
async def incr(conn: Connection, args: list[bytes]) -> Reply:
    return await _incr(conn, args[0], 1)


@command("DECR", 2, write=True)
async def decr(conn: Connection, args: list[bytes]) -> Reply:
    return await _incr(conn, args[0], -1)


@command("INCRBY", 3, write=True)
async def incrby(conn: Connection, args: list[bytes]) -> Reply:
    return await _incr(conn, args[0], parse_int(args[1]))


@command("DECRBY", 3, write=True)
async def decrby(conn: Connection, args: list[bytes]) -> Reply:
    return await _incr(conn, args[0], -parse_int(args[1]))
