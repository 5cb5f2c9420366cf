"""The projector's SQLite commits in a process of their own (:mod:`projections.sqlite_child`).

The projector process is bound by its one GIL: reading, decoding and folding the next
batch in the event loop, plus the per-row work of SQLite's driver thread. Measured on
2 cores with one of them mostly idle, the process sat at ~95% of one core. A separate
process writes with a GIL of its own: the batch goes over a pipe as JSON (the driver
parameters the SQLAlchemy path would bind, built the same way), and the reply says
committed, checkpoint refused, or which row failed (ops/bench/README.md, session 4).

G4 is unchanged: the child runs the whole batch and the checkpoint update as one
transaction; a request is applied whole or not at all, and a killed projector takes
its child with it (``PR_SET_PDEATHSIG``, and the end of the pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic_core import from_json, to_json
from sqlalchemy.exc import IntegrityError

_LENGTH = struct.Struct(">I")
_CHILD = Path(__file__).with_name("sqlite_child.py")

Write = tuple[str, Sequence[tuple[Any, ...]]]
"""(SQL, positional parameters of its rows) for one ``executemany``."""


class CheckpointNotAdvancedError(ValueError):
    """The guarded checkpoint update matched no row; ``current`` is what it holds."""

    def __init__(self, current: int | None) -> None:
        super().__init__(current)
        self.current = current


class SqliteWriterProcess:
    """A child process applying one transaction per :meth:`commit`, in order.

    The pipe is driven with blocking I/O from one thread of its own, not from the event
    loop: a batch is a megabyte or two of JSON, and through the loop every 64 KiB the
    pipe takes would wait for the projector's next turn of the loop (it is busy folding
    the next batch), which made a commit's transfer take longer than its SQL.
    """

    def __init__(self, database: str, pragmas: list[str], advance: str, current: str) -> None:
        self._opening = {
            "database": database,
            "pragmas": pragmas,
            "advance": advance,
            "current": current,
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-pipe")

    async def commit(self, last_seq: int, writes: Sequence[Write]) -> None:
        """Raises :class:`CheckpointNotAdvancedError` or SQLAlchemy's ``IntegrityError``
        (nothing written, like the SQLAlchemy path). Exchanges run in order in one
        thread; a caller cancelled meanwhile leaves its exchange to finish there, so
        every request is paired with its own reply."""
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(self._executor, self._exchange, last_seq, writes)
        if reply.get("ok"):
            return
        if reply.get("error") == "checkpoint":
            current = reply.get("current")
            raise CheckpointNotAdvancedError(None if current is None else int(current))
        message = f"{reply.get('type')}: {reply.get('message')}"
        if reply.get("error") == "integrity":
            raise IntegrityError("commit", None, Exception(message))
        raise RuntimeError(f"SQLite write process: {message}")

    def _exchange(self, last_seq: int, writes: Sequence[Write]) -> dict[str, Any]:
        process = self._started()
        try:
            return _send(process, to_json({"seq": last_seq, "writes": writes}))
        except RuntimeError:
            self._process = None  # the next commit starts a new child
            _stop(process)
            raise

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            process = subprocess.Popen(
                [sys.executable, str(_CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            reply = _send(process, to_json(self._opening))
            if not reply.get("ok"):
                _stop(process)
                raise RuntimeError(f"SQLite write process could not open: {reply}")
            self._process = process
        return self._process

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)  # its last job is done: the thread exits

    def _close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _stop(process)


def _send(process: subprocess.Popen[bytes], request: bytes) -> dict[str, Any]:
    if process.stdin is None or process.stdout is None:
        raise RuntimeError("SQLite write process has no pipes")
    try:
        process.stdin.write(_LENGTH.pack(len(request)) + request)
        process.stdin.flush()
        head = process.stdout.read(_LENGTH.size)
        (size,) = _LENGTH.unpack(head) if len(head) == _LENGTH.size else (-1,)
        body = process.stdout.read(size) if size >= 0 else b""
    except (BrokenPipeError, ValueError) as exc:  # ValueError: a closed pipe
        raise RuntimeError(f"SQLite write process ended (exit {process.poll()})") from exc
    if size < 0 or len(body) < size:
        raise RuntimeError(f"SQLite write process ended (exit {process.poll()})")
    reply: dict[str, Any] = from_json(body)
    return reply


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()  # the child commits nothing more and exits at end of input
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


__all__ = ["CheckpointNotAdvancedError", "SqliteWriterProcess", "Write"]
