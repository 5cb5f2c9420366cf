"""Sorted-set commands: ZADD (NX XX GT LT CH INCR), ZREM, ZCARD, ZSCORE, ZCOUNT, ZRANGE,
ZREVRANGE, ZRANGEBYSCORE, ZREVRANGEBYSCORE, ZREMRANGEBYSCORE."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.resp.arguments import index_range, parse_float, parse_int
from gateway.resp.keyspace import UNCHANGED, Change
from gateway.resp.registry import command
from gateway.resp.replies import SYNTAX_ERROR, CommandError, Reply
from gateway.resp.values import StoredValue, zset_ordered

if TYPE_CHECKING:
    from gateway.resp.connection import Connection

MIN_MAX_NOT_FLOAT = "ERR min or max is not a float"


async def _scores(conn: Connection, key: bytes) -> dict[bytes, float]:
    data: dict[bytes, float] | None = await conn.server.keyspace.read_kind(conn.db, key, "zset")
    return data or {}


@dataclass(slots=True)
class ZaddFlags:
    nx: bool = False
    xx: bool = False
    gt: bool = False
    lt: bool = False
    ch: bool = False
    incr: bool = False


def _parse_zadd(args: list[bytes]) -> tuple[ZaddFlags, list[tuple[float, bytes]]]:
    flags = ZaddFlags()
    i = 1
    names = {b"NX": "nx", b"XX": "xx", b"GT": "gt", b"LT": "lt", b"CH": "ch", b"INCR": "incr"}
    while i < len(args) and args[i].upper() in names:
        setattr(flags, names[args[i].upper()], True)
        i += 1
    rest = args[i:]
    if not rest or len(rest) % 2:
        raise CommandError(SYNTAX_ERROR)
    if flags.nx and flags.xx:
        raise CommandError("ERR XX and NX options at the same time are not compatible")
    if (flags.gt and flags.nx) or (flags.lt and flags.nx) or (flags.gt and flags.lt):
        raise CommandError("ERR GT, LT, and/or NX options at the same time are not compatible")
    if flags.incr and len(rest) > 2:
        raise CommandError("ERR INCR option supports a single increment-element pair")
    pairs = [(parse_float(rest[j]), rest[j + 1]) for j in range(0, len(rest), 2)]
    return flags, pairs


@command("ZADD", -4, write=True)
async def zadd(conn: Connection, args: list[bytes]) -> Reply:
    flags, pairs = _parse_zadd(args)

    def apply(current: StoredValue | None) -> Change[Reply]:
        scores: dict[bytes, float] = dict(current.of_kind("zset")) if current else {}
        added = changed = 0
        result: Reply = None
        for score, member in pairs:
            old = scores.get(member)
            if (flags.nx and old is not None) or (flags.xx and old is None):
                continue
            new = old + score if flags.incr and old is not None else score
            if math.isnan(new):
                raise CommandError("ERR resulting score is not a number (NaN)")
            if old is not None and ((flags.gt and new <= old) or (flags.lt and new >= old)):
                continue
            result = new
            if old is None:
                added += 1
            elif new != old:
                changed += 1
            scores[member] = new
        reply: Reply = result if flags.incr else added + (changed if flags.ch else 0)
        if not added and not changed:
            return Change(UNCHANGED, reply)
        return Change(StoredValue("zset", scores, current.expire_at_ms if current else None), reply)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)


@command("ZREM", -3, write=True)
async def zrem(conn: Connection, args: list[bytes]) -> Reply:
    doomed = set(args[1:])

    def apply(current: StoredValue | None) -> Change[int]:
        if current is None:
            return Change(UNCHANGED, 0)
        scores: dict[bytes, float] = current.of_kind("zset")
        kept = {member: score for member, score in scores.items() if member not in doomed}
        removed = len(scores) - len(kept)
        if not removed:
            return Change(UNCHANGED, 0)
        return Change(StoredValue("zset", kept, current.expire_at_ms) if kept else None, removed)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)


@command("ZCARD", 2)
async def zcard(conn: Connection, args: list[bytes]) -> Reply:
    return len(await _scores(conn, args[0]))


@command("ZSCORE", 3)
async def zscore(conn: Connection, args: list[bytes]) -> Reply:
    return (await _scores(conn, args[0])).get(args[1])


def _with_scores(conn: Connection, items: list[tuple[bytes, float]], scores: bool) -> Reply:
    if not scores:
        return [member for member, _ in items]
    if conn.protocol == 3:
        return [[member, score] for member, score in items]
    flat: list[Reply] = []
    for member, score in items:
        flat += [member, score]
    return flat


def _rank_range(
    conn: Connection, args: list[bytes], reverse: bool, name: str
) -> tuple[int, int, bool]:
    scores = False
    if len(args) == 4:
        if args[3].upper() != b"WITHSCORES":
            raise CommandError(SYNTAX_ERROR)
        scores = True
    elif len(args) > 4:
        raise CommandError(SYNTAX_ERROR)
    return parse_int(args[1]), parse_int(args[2]), scores


async def _by_rank(conn: Connection, args: list[bytes], reverse: bool, name: str) -> Reply:
    start, stop, scores = _rank_range(conn, args, reverse, name)
    ordered = zset_ordered(await _scores(conn, args[0]))
    if reverse:
        ordered.reverse()
    window = index_range(start, stop, len(ordered))
    return _with_scores(conn, [] if window is None else ordered[window[0] : window[1]], scores)


@command("ZRANGE", -4)
async def zrange(conn: Connection, args: list[bytes]) -> Reply:
    return await _by_rank(conn, args, reverse=False, name="zrange")


@command("ZREVRANGE", -4)
async def zrevrange(conn: Connection, args: list[bytes]) -> Reply:
    return await _by_rank(conn, args, reverse=True, name="zrevrange")


def _score_bound(raw: bytes) -> tuple[float, bool]:
    """``(value, exclusive)`` from ``1.5``, ``(1.5``, ``-inf``, ``+inf``."""
    exclusive = raw.startswith(b"(")
    return parse_float(raw[1:] if exclusive else raw, MIN_MAX_NOT_FLOAT), exclusive


def _in_range(score: float, low: tuple[float, bool], high: tuple[float, bool]) -> bool:
    above = score > low[0] if low[1] else score >= low[0]
    below = score < high[0] if high[1] else score <= high[0]
    return above and below


async def _by_score(conn: Connection, args: list[bytes], reverse: bool) -> Reply:
    key = args[0]
    low, high = (args[2], args[1]) if reverse else (args[1], args[2])
    low_bound, high_bound = _score_bound(low), _score_bound(high)
    scores = False
    offset, count = 0, -1
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"WITHSCORES":
            scores = True
            i += 1
        elif option == b"LIMIT" and i + 2 < len(args):
            offset, count = parse_int(args[i + 1]), parse_int(args[i + 2])
            i += 3
        else:
            raise CommandError(SYNTAX_ERROR)
    ordered = zset_ordered(await _scores(conn, key))
    if reverse:
        ordered.reverse()
    hits = [item for item in ordered if _in_range(item[1], low_bound, high_bound)]
    if offset < 0:
        return []
    hits = hits[offset:] if count < 0 else hits[offset : offset + count]
    return _with_scores(conn, hits, scores)


@command("ZRANGEBYSCORE", -4)
async def zrangebyscore(conn: Connection, args: list[bytes]) -> Reply:
    return await _by_score(conn, args, reverse=False)


@command("ZREVRANGEBYSCORE", -4)
async def zrevrangebyscore(conn: Connection, args: list[bytes]) -> Reply:
    return await _by_score(conn, args, reverse=True)


@command("ZCOUNT", 4)
async def zcount(conn: Connection, args: list[bytes]) -> Reply:
    low, high = _score_bound(args[1]), _score_bound(args[2])
    return sum(_in_range(score, low, high) for score in (await _scores(conn, args[0])).values())


@command("ZREMRANGEBYSCORE", 4, write=True)
async def zremrangebyscore(conn: Connection, args: list[bytes]) -> Reply:
    low, high = _score_bound(args[1]), _score_bound(args[2])

    def apply(current: StoredValue | None) -> Change[int]:
        if current is None:
            return Change(UNCHANGED, 0)
        scores: dict[bytes, float] = current.of_kind("zset")
        kept = {m: s for m, s in scores.items() if not _in_range(s, low, high)}
        removed = len(scores) - len(kept)
        if not removed:
            return Change(UNCHANGED, 0)
        return Change(StoredValue("zset", kept, current.expire_at_ms) if kept else None, removed)

    return await conn.server.keyspace.mutate(conn.db, args[0], apply)
