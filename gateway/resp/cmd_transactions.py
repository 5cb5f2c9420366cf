"""MULTI / EXEC / DISCARD: redis-py pipelines are transactions.

Queued commands are checked (name, arity, auth) as they arrive; a refused one makes
EXEC answer ``EXECABORT``, as in Redis. EXEC runs the queue in order on this
connection; commands of other clients may interleave between the queued commands
(each command is atomic on its own, the batch is not isolated: decision 17).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.resp.connection import Transaction
from gateway.resp.registry import command
from gateway.resp.replies import OK, CommandError, Reply

if TYPE_CHECKING:
    from gateway.resp.connection import Connection

EXECABORT = "EXECABORT Transaction discarded because of previous errors."


@command("MULTI", 1, no_transaction=True)
async def multi(conn: Connection, args: list[bytes]) -> Reply:
    if conn.transaction is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    conn.transaction = Transaction()
    return OK


@command("EXEC", 1, no_transaction=True)
async def exec_(conn: Connection, args: list[bytes]) -> Reply:
    transaction = conn.transaction
    if transaction is None:
        raise CommandError("ERR EXEC without MULTI")
    try:
        if transaction.dirty:
            raise CommandError(EXECABORT)
        # conn.in_transaction stays true while the queue runs: blocking commands
        # inside EXEC answer at once, as in Redis.
        return [await conn.run(spec, args) for spec, args in transaction.commands]
    finally:
        conn.transaction = None


@command("DISCARD", 1, no_transaction=True)
async def discard(conn: Connection, args: list[bytes]) -> Reply:
    if conn.transaction is None:
        raise CommandError("ERR DISCARD without MULTI")
    conn.transaction = None
    return OK
