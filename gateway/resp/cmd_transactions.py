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
QUEUE_FIRST = frozenset(
    {
        "HSET",
        "HMSET",
        "HINCRBY",
        "HDEL",
        "EXPIRE",
        "PEXPIRE",
        "ZADD",
        "ZREM",
        "SADD",
        "SREM",
        "RPUSH",
        "LPUSH",
    }
)
"""Commands whose handler queues its change before it first waits (or decides it at
once): consecutive ones are started together (``_start_together``)."""
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
        index = 0
        while index < len(commands):
            spec = commands[index][0]
            if spec.name in QUEUE_FIRST:
                run = [commands[index]]
                while index + len(run) < len(commands) and (
                    commands[index + len(run)][0].name in QUEUE_FIRST
                ):
                    run.append(commands[index + len(run)])
                index += len(run)
                await _start_together(conn, run, gate, running)
                continue
            index += 1
            if spec.name in RUN_ALONE and running:
                _open(gate)
                await asyncio.wait(running)  # nothing earlier may still be changing its keys
            task, queued = _start(conn, spec, commands[index - 1][1], gate)
            running.append(task)
            await asyncio.sleep(0)  # one turn: the task runs up to its first wait
            await _until_queued(gate, [(task, queued)])
            if spec.name in RUN_ALONE:
                await task
    finally:
        _open(gate)
    return [await task for task in running]


def _start(
    conn: Connection, spec: CommandSpec, args: list[bytes], gate: asyncio.Future[None]
) -> tuple[asyncio.Task[Reply], asyncio.Future[None]]:
    queued: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    context = contextvars.copy_context()
    context.run(change_queued.set, queued)
    context.run(flush_gate.set, gate)
    return asyncio.create_task(conn.run(spec, args), context=context), queued


async def _start_together(
    conn: Connection,
    run: list[tuple[CommandSpec, list[bytes]]],
    gate: asyncio.Future[None],
    running: list[asyncio.Task[Reply]],
) -> None:
    """Start a run of commands that queue their change in their first step: the loop
    runs their first steps in the order they were created, all in one turn, so their
    changes still queue in command order (one turn, not one per command)."""
    started = [_start(conn, spec, args, gate) for spec, args in run]
    running.extend(task for task, _ in started)
    await asyncio.sleep(0)
    await _until_queued(gate, started)


async def _until_queued(
    gate: asyncio.Future[None], started: list[tuple[asyncio.Task[Reply], asyncio.Future[None]]]
) -> None:
    for task, queued in started:
        if not (queued.done() or task.done()):
            # It waits for I/O (or for a held write): hold nothing back any more.
            _open(gate)
            await asyncio.wait((task, queued), return_when=asyncio.FIRST_COMPLETED)


@command("DISCARD", 1, no_transaction=True)
async def discard(conn: Connection, args: list[bytes]) -> Reply:
    if conn.transaction is None:
        raise CommandError("ERR DISCARD without MULTI")
    conn.transaction = None
    return OK
