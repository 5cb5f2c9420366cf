"""MULTI / EXEC / DISCARD: redis-py pipelines are transactions.

Queued commands are checked (name, arity, auth) as they arrive; a refused one makes
EXEC answer ``EXECABORT``, as in Redis. EXEC starts the queued commands in order, and
starts the next one as soon as the previous one has either finished or queued its
change of a key (:mod:`change_queue`): changes of one key still apply in queue order,
changes of different keys are written concurrently, and changes of one key are written
together. Commands of other clients may interleave (each command is atomic on its own,
the batch is not isolated: decision 17).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING

from gateway.resp.change_queue import change_queued, flush_gate
from gateway.resp.connection import Transaction
from gateway.resp.registry import CommandSpec, command
from gateway.resp.replies import OK, CommandError, Reply

if TYPE_CHECKING:
    from gateway.resp.connection import Connection

EXECABORT = "EXECABORT Transaction discarded because of previous errors."
RUN_ALONE = frozenset({"DEL", "UNLINK"})
"""Commands that change several keys one after the other (or a stream after a key):
the next command waits until they are done."""


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
        return await run_queue(conn, transaction.commands)
    finally:
        conn.transaction = None


def _open(gate: asyncio.Future[None]) -> None:
    if not gate.done():
        gate.set_result(None)


async def run_queue(conn: Connection, commands: list[tuple[CommandSpec, list[bytes]]]) -> Reply:
    """Run ``commands`` in order, overlapping their KV writes; one reply each, in order."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    running: list[asyncio.Task[Reply]] = []
    try:
        for spec, args in commands:
            if spec.name in RUN_ALONE and running:
                _open(gate)
                await asyncio.wait(running)  # nothing earlier may still be changing its keys
            queued: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            context = contextvars.copy_context()
            context.run(change_queued.set, queued)
            context.run(flush_gate.set, gate)
            task = asyncio.create_task(conn.run(spec, args), context=context)
            running.append(task)
            await asyncio.sleep(0)  # one turn: the task runs up to its first wait
            if not (queued.done() or task.done()):
                # It waits for I/O (or for a held write): hold nothing back any more.
                _open(gate)
                await asyncio.wait((task, queued), return_when=asyncio.FIRST_COMPLETED)
            if spec.name in RUN_ALONE:
                await task
    finally:
        _open(gate)
    return [await task for task in running]


@command("DISCARD", 1, no_transaction=True)
async def discard(conn: Connection, args: list[bytes]) -> Reply:
    if conn.transaction is None:
        raise CommandError("ERR DISCARD without MULTI")
    conn.transaction = None
    return OK
