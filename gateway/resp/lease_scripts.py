"""by-framework's three worker-lease Lua scripts, recognised by the SHA1 of their text
and run as one atomic compare-and-set on the lease key instead of by a Lua VM.

The scripts (by-framework ``core/registry.py``) store a JSON lease value whose
``token`` names the owner; each returns 1, 0 or -1. Only their observable behaviour is
reproduced here, from their documented contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.resp.arguments import parse_int
from gateway.resp.keyspace import UNCHANGED, Change, now_ms
from gateway.resp.replies import CommandError
from gateway.resp.values import StoredValue

# by-framework core/registry.py _HEARTBEAT_CAS_SCRIPT: renew the lease if we own it.
HEARTBEAT_CAS_SHA = "0b14a6b2ee8f949e2f37359870366eaf87462fa8"
# by-framework core/registry.py _REFRESH_LOCK_SCRIPT: extend the TTL if we own it.
REFRESH_LOCK_SHA = "bd818146d8cff0a498698b3413ea1b7c34679af7"
# by-framework core/registry.py _RELEASE_LOCK_SCRIPT: delete the lease if we own it.
RELEASE_LOCK_SHA = "38ee25b272cfe93d6c528e2213baaaa44294017d"

LeaseChange = Callable[[StoredValue | None], Change[int]]


class _Unparsed:
    """The lease value is not JSON."""


UNPARSED = _Unparsed()


def _lua_tostring(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def lease_owner(raw: bytes) -> str | _Unparsed | None:
    """The owner token of a lease value; ``None`` for an unowned (legacy) lease."""
    try:
        data = json.loads(raw)
    except ValueError:
        return UNPARSED
    if isinstance(data, (dict, list)):
        token = data.get("token") if isinstance(data, dict) else None
        return None if token is None else _lua_tostring(token)
    if data == 1 and not isinstance(data, bool):
        return None
    return _lua_tostring(data)


def _string(current: StoredValue | None) -> bytes | None:
    if current is None:
        return None
    data: bytes = current.of_kind("string")
    return data


def _ttl_ms(raw: bytes) -> int:
    seconds = parse_int(raw, "ERR invalid expire time in 'set' command")
    if seconds <= 0:
        raise CommandError("ERR invalid expire time in 'set' command")
    return seconds * 1000


def heartbeat_cas(token: bytes, new_value: bytes, ttl: bytes) -> LeaseChange:
    ttl_ms = _ttl_ms(ttl)

    def apply(current: StoredValue | None) -> Change[int]:
        raw = _string(current)
        renewed = StoredValue("string", new_value, now_ms() + ttl_ms)
        owner = None if raw is None else lease_owner(raw)
        if token:
            if raw is None:
                return Change(renewed, 1)
            if isinstance(owner, _Unparsed):
                return Change(UNCHANGED, -1)
            if owner is None or owner != token.decode("utf-8", "surrogateescape"):
                return Change(UNCHANGED, 0)
            return Change(renewed, 1)
        if raw is not None and owner is not None:
            return Change(UNCHANGED, 0)  # owned, or not JSON: never taken over without a token
        return Change(renewed, 1)

    return apply


def refresh_lock(token: bytes, ttl: bytes) -> LeaseChange:
    seconds = parse_int(ttl)

    def apply(current: StoredValue | None) -> Change[int]:
        raw = _string(current)
        if raw is None or current is None:
            return Change(UNCHANGED, 0)
        owner = lease_owner(raw)
        if not isinstance(owner, str) or owner != token.decode("utf-8", "surrogateescape"):
            return Change(UNCHANGED, 0)
        if seconds <= 0:
            return Change(None, 1)
        return Change(StoredValue("string", raw, now_ms() + seconds * 1000), 1)

    return apply


def release_lock(token: bytes) -> LeaseChange:
    def apply(current: StoredValue | None) -> Change[int]:
        raw = _string(current)
        if raw is None:
            return Change(UNCHANGED, 0 if token else 1)
        if not token:
            return Change(None, 1)
        owner = lease_owner(raw)
        if not isinstance(owner, str) or owner != token.decode("utf-8", "surrogateescape"):
            return Change(UNCHANGED, 0)
        return Change(None, 1)

    return apply


SCRIPT_ARGS = {HEARTBEAT_CAS_SHA: 3, REFRESH_LOCK_SHA: 2, RELEASE_LOCK_SHA: 1}
_BUILDERS: dict[str, Callable[..., LeaseChange]] = {
    HEARTBEAT_CAS_SHA: heartbeat_cas,
    REFRESH_LOCK_SHA: refresh_lock,
    RELEASE_LOCK_SHA: release_lock,
}


def lease_change(sha: str, argv: list[bytes]) -> LeaseChange:
    """The atomic change a known script makes, for its ``ARGV``."""
    if len(argv) != SCRIPT_ARGS[sha]:
        raise CommandError(
            f"ERR by-framework lease script {sha} takes {SCRIPT_ARGS[sha]} arguments, "
            f"got {len(argv)}"
        )
    return _BUILDERS[sha](*argv)


__all__ = [
    "HEARTBEAT_CAS_SHA",
    "REFRESH_LOCK_SHA",
    "RELEASE_LOCK_SHA",
    "SCRIPT_ARGS",
    "lease_change",
    "lease_owner",
]
