"""EVAL / EVALSHA / SCRIPT: only by-framework's lease scripts are run (see
:mod:`gateway.resp.lease_scripts`); any other script gets a clear error, never a
half-emulation."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from gateway.resp.arguments import parse_int
from gateway.resp.lease_scripts import SCRIPT_ARGS, lease_change
from gateway.resp.registry import command
from gateway.resp.replies import CommandError, Reply

if TYPE_CHECKING:
    from gateway.resp.connection import Connection


def unsupported(sha: str) -> CommandError:
    return CommandError(
        f"ERR jetledger redis does not run Lua scripts: only by-framework's worker-lease "
        f"scripts are recognised (this script's sha1 is {sha})"
    )


async def _run(conn: Connection, sha: str, args: list[bytes]) -> Reply:
    numkeys = parse_int(args[0])
    if numkeys > len(args) - 1:
        raise CommandError("ERR Number of keys can't be greater than number of args")
    if numkeys < 0:
        raise CommandError("ERR Number of keys can't be negative")
    keys, argv = args[1 : 1 + numkeys], args[1 + numkeys :]
    if len(keys) != 1:
        raise CommandError(f"ERR by-framework lease script {sha} takes 1 key, got {len(keys)}")
    change = lease_change(sha, argv)
    # The lease scripts are compare-and-set: a lease is granted once it is stored.
    return await conn.server.keyspace.mutate(conn.db, keys[0], change, confirm=True)


@command("EVAL", -3, write=True)
async def eval_(conn: Connection, args: list[bytes]) -> Reply:
    sha = hashlib.sha1(args[0]).hexdigest()
    if sha not in SCRIPT_ARGS:
        raise unsupported(sha)
    return await _run(conn, sha, args[1:])


@command("EVALSHA", -3, write=True)
async def evalsha(conn: Connection, args: list[bytes]) -> Reply:
    sha = args[0].decode("utf-8", "replace").lower()
    if sha not in SCRIPT_ARGS:
        raise CommandError("NOSCRIPT No matching script. Please use EVAL.")
    return await _run(conn, sha, args[1:])


@command("SCRIPT", -2)
async def script(conn: Connection, args: list[bytes]) -> Reply:
    sub = args[0].upper()
    if sub == b"LOAD" and len(args) == 2:
        sha = hashlib.sha1(args[1]).hexdigest()
        if sha not in SCRIPT_ARGS:
            raise unsupported(sha)
        return sha.encode()
    if sub == b"EXISTS" and len(args) >= 2:
        return [int(arg.decode("utf-8", "replace").lower() in SCRIPT_ARGS) for arg in args[1:]]
    raise CommandError(
        f"ERR unknown subcommand or wrong number of arguments for "
        f"'{args[0].decode('utf-8', 'replace')}'. Try SCRIPT HELP."
    )
