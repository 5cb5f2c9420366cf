"""Redis key names as KV key tokens, and Redis's glob patterns (KEYS, SCAN MATCH)."""

from __future__ import annotations

import re

from gateway.resp.replies import CommandError

_PLAIN = re.compile(rb"[A-Za-z0-9_-]")
_COMMON = re.compile(rb"[A-Za-z0-9_:-]+")
_TOKEN = [
    chr(byte) if _PLAIN.match(bytes([byte])) else "/" if byte == ord(":") else f"={byte:02X}"
    for byte in range(256)
]
"""What each byte becomes in a token."""
MAX_ENCODED_KEY = 1000
"""Longest encoded key (NATS subjects stay well below the server's limits)."""


def encode_key(key: bytes) -> str:
    """A reversible KV token: ``[A-Za-z0-9_-]`` kept, ``:`` as ``/``, other bytes ``=XX``.

    >>> encode_key(b"byai_gateway:session:{s1}:registry")
    'byai_gateway/session/=7Bs1=7D/registry'
    """
    if not key:
        return "="
    if _COMMON.fullmatch(key):  # every key by-framework writes: no byte to escape
        encoded = key.decode("ascii").replace(":", "/")
    else:
        encoded = "".join([_TOKEN[byte] for byte in key])
    if len(encoded) > MAX_ENCODED_KEY:
        raise CommandError(
            f"ERR key too long for jetledger redis ({len(key)} bytes; "
            f"at most {MAX_ENCODED_KEY} characters once encoded)"
        )
    return encoded


def decode_key(token: str) -> bytes:
    if token == "=":
        return b""
    out = bytearray()
    i = 0
    while i < len(token):
        char = token[i]
        if char == "=":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(ord(":") if char == "/" else ord(char))
        i += 1
    return bytes(out)


def glob_match(pattern: bytes, key: bytes) -> bool:
    """Redis's glob (``*``, ``?``, ``[...]``, ``[^...]``, ``\\`` escapes) on bytes."""
    return _glob_regex(pattern).match(key) is not None


def _glob_regex(pattern: bytes) -> re.Pattern[bytes]:
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i : i + 1]
        if char == b"*":
            out += b".*"
        elif char == b"?":
            out += b"."
        elif char == b"\\" and i + 1 < n:
            i += 1
            out += re.escape(pattern[i : i + 1])
        elif char == b"[":
            i, klass = _glob_class(pattern, i + 1)
            out += klass
        else:
            out += re.escape(char)
        i += 1
    return re.compile(bytes(out) + rb"\Z", re.DOTALL)


def _glob_class(pattern: bytes, i: int) -> tuple[int, bytes]:
    """A ``[...]`` class starting after ``[``; returns the index of ``]`` and the regex."""
    n = len(pattern)
    negate = i < n and pattern[i : i + 1] == b"^"
    if negate:
        i += 1
    members = bytearray()
    while i < n and pattern[i : i + 1] != b"]":
        if pattern[i : i + 1] == b"\\" and i + 1 < n:
            i += 1
            members += re.escape(pattern[i : i + 1])
        elif i + 2 < n and pattern[i + 1 : i + 2] == b"-" and pattern[i + 2 : i + 3] != b"]":
            low, high = sorted((pattern[i], pattern[i + 2]))
            members += re.escape(bytes([low])) + b"-" + re.escape(bytes([high]))
            i += 2
        else:
            members += re.escape(pattern[i : i + 1])
        i += 1
    if not members:
        return i, b"(?!)" if not negate else b"."
    return i, b"[" + (b"^" if negate else b"") + bytes(members) + b"]"


__all__ = ["MAX_ENCODED_KEY", "decode_key", "encode_key", "glob_match"]
