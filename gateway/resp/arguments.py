"""Argument parsing shared by the command modules, with Redis's exact error texts."""

from __future__ import annotations

import re

from gateway.resp.replies import CommandError

NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"

# What Redis's strtod-based parser accepts: no spaces, no underscores, no "nan".
_FLOAT = re.compile(rb"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|infinity)", re.I)


def parse_int(raw: bytes, message: str = NOT_INTEGER) -> int:
    """An integer argument as Redis's ``string2ll`` reads it (no spaces, '+' or leading 0)."""
    digits = raw[1:] if raw.startswith(b"-") else raw
    if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
        raise CommandError(message)
    value = int(raw)
    if not -(2**63) <= value < 2**63:
        raise CommandError(message)
    return value


def parse_float(raw: bytes, message: str = NOT_FLOAT) -> float:
    if not _FLOAT.fullmatch(raw):
        raise CommandError(message)
    return float(raw)


def index_range(start: int, stop: int, length: int) -> tuple[int, int] | None:
    """LRANGE/ZRANGE indexes (negative from the end) as a Python slice, ``None`` if empty."""
    if start < 0:
        start = max(0, start + length)
    if stop < 0:
        stop += length
    stop = min(stop, length - 1)
    if start > stop or start >= length:
        return None
    return start, stop + 1


__all__ = ["NOT_FLOAT", "NOT_INTEGER", "index_range", "parse_float", "parse_int"]
