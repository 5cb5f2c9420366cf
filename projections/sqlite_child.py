"""The SQLite write process of a projector (run as a script by
:mod:`projections.sqlite_process`; stdlib and pydantic-core only, so it starts fast).

It owns one connection and applies one transaction per request: the checkpoint guard,
then every write, then COMMIT; or nothing. Requests (``marshal`` data) and replies
(JSON) are frames (a 4-byte big-endian length, then the document) on stdin / stdout.
It exits at the end of stdin, and on Linux also when its parent dies
(``PR_SET_PDEATHSIG``): a killed projector leaves no writer behind to commit after a
new projector has started.
"""

from __future__ import annotations

import contextlib
import ctypes
import marshal
import signal
import sqlite3
import struct
import sys
from typing import Any, BinaryIO

from pydantic_core import to_json

_LENGTH = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def read_frame(stream: BinaryIO) -> Any:
    """The next request (``marshal`` data from the parent), or ``None`` at the end of
    the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return marshal.loads(body)


def write_frame(stream: BinaryIO, document: Any) -> None:
    body = to_json(document)
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


class Writer:
    def __init__(
        self, database: str, pragmas: list[str], advance: str, advance_after: str, current: str
    ) -> None:
        # autocommit mode: the transaction is the explicit BEGIN ... COMMIT in commit()
        self.connection = sqlite3.connect(database, isolation_level=None)
        for pragma in pragmas:
            self.connection.execute(pragma)
        self.advance = advance
        self.advance_after = advance_after
        self.current = current

    def commit(
        self, seq: int, after: int | None, writes: list[tuple[str, list[list[Any]]]]
    ) -> dict[str, Any]:
        """Apply one batch. ``after`` (a pipelined request): the checkpoint must be
        exactly there, so a batch never lands after an earlier one that failed."""
        connection = self.connection
        # IMMEDIATE: take the write lock first, so a rival projector waits here (busy
        # timeout) and then fails on the checkpoint before writing anything.
        connection.execute("BEGIN IMMEDIATE")
        try:
            if after is None:
                moved = connection.execute(self.advance, (seq, seq))
            else:
                moved = connection.execute(self.advance_after, (seq, after))
            if moved.rowcount != 1:
                row = connection.execute(self.current).fetchone()
                connection.execute("ROLLBACK")
                return {"error": "checkpoint", "current": None if row is None else row[0]}
            for sql, rows in writes:
                connection.executemany(sql, rows)
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            connection.execute("ROLLBACK")
            kind = "integrity" if isinstance(error, sqlite3.IntegrityError) else "database"
            return {"error": kind, "message": str(error), "type": type(error).__name__}
        return {"ok": True}


def main() -> None:
    _die_with_parent()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    opening = read_frame(requests)
    if opening is None:
        return
    try:
        writer = Writer(
            opening["database"],
            opening["pragmas"],
            opening["advance"],
            opening["advance_after"],
            opening["current"],
        )
    except sqlite3.Error as error:
        write_frame(replies, {"error": "database", "message": str(error), "type": "open"})
        return
    write_frame(replies, {"ok": True})
    while (request := read_frame(requests)) is not None:
        write_frame(replies, writer.commit(request["seq"], request.get("after"), request["writes"]))
    writer.connection.close()


if __name__ == "__main__":
    main()
