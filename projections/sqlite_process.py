"""The projector's SQLite commits in a process of their own (:mod:`projections.sqlite_child`).

The projector process is bound by its one GIL: reading, decoding and folding the next
batch in the event loop, plus the per-row work of SQLite's driver thread. Measured on
2 cores with one of them mostly idle, the process sat at ~95% of one core. A separate
process writes with a GIL of its own: the batch goes over a pipe (the driver
parameters the SQLAlchemy path would bind, built the same way), and the reply says
committed, checkpoint refused, or which row failed (ops/bench/README.md, session 4).

Requests are ``marshal`` data, replies JSON. marshal is the interpreter's own format
for plain values (the parameters are str, int, float and None): both ends run the same
``sys.executable``, it refuses any other type instead of converting it, and it costs a
third of JSON's encode and decode (session 5). It is not for untrusted data; the child
reads only its parent's pipe.

G4 is unchanged: the child runs the whole batch and the checkpoint update as one
transaction; a request is applied whole or not at all, and a killed projector takes
its child with it (``PR_SET_PDEATHSIG``, and the end of the pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic_core import from_json
from sqlalchemy.exc import IntegrityError

_LENGTH = struct.Struct(">I")
_CHILD = Path(__file__).with_name("sqlite_child.py")

Write = tuple[str, Sequence[tuple[Any, ...]]]
"""(SQL, positional parameters of its rows) for one ``executemany``."""


class CheckpointNotAdvancedError(ValueError):
    """The guarded checkpoint update matched no row; ``current`` is what it holds and
    ``expected`` what a pipelined request required it to hold (``None``: any lower)."""

    def __init__(self, current: int | None, expected: int | None = None) -> None:
        super().__init__(current)
        self.current = current
        self.expected = expected


class SqliteWriterProcess:
    """A child process applying one transaction per :meth:`commit`, in call order.

    Commits may be pipelined: a second :meth:`commit` can be called while the first
    waits for its reply, so the child finds the next batch in its pipe when it finishes
    one instead of idling through the reply's trip to the event loop and the next
    request's trip back (ops/bench/README.md, session 5). Requests go out in the order
    of the calls (the part of :meth:`commit` before its first ``await`` queues the
    request) from one sender thread; one reader thread per child hands the replies,
    which come in request order, to the waiting calls.

    No gap is possible: a request sent while an earlier one is unanswered carries that
    one's ``last_seq``, and the child moves the checkpoint only from exactly there. If
    the earlier request failed (or its child died), the later one is refused as well.
    """

    def __init__(
        self, database: str, pragmas: list[str], advance: str, advance_after: str, current: str
    ) -> None:
        """``advance`` moves the checkpoint to its first parameter if it is below the
        second; ``advance_after`` only if it equals the second; ``current`` reads it."""
        self._opening = {
            "database": database,
            "pragmas": pragmas,
            "advance": advance,
            "advance_after": advance_after,
            "current": current,
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: deque[Future[dict[str, Any]]] = deque()
        """Replies the current child owes, oldest first (the sender appends, its reader
        thread pops)."""
        self._lock = threading.Lock()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-pipe")
        self._in_flight = 0
        self._last_sent: int | None = None
        """``last_seq`` of the newest request while any is unanswered (event loop only)."""

    async def commit(self, last_seq: int, writes: Sequence[Write]) -> None:
        """Raises :class:`CheckpointNotAdvancedError` or SQLAlchemy's ``IntegrityError``
        (nothing written, like the SQLAlchemy path). A caller cancelled meanwhile leaves
        its request to be applied or refused in order, so every request is paired with
        its own reply."""
        after = self._last_sent if self._in_flight else None
        self._last_sent = last_seq
        self._in_flight += 1
        reply_future: Future[dict[str, Any]] = Future()
        reply_future.set_running_or_notify_cancel()  # not cancellable: a reply is owed
        request = {"seq": last_seq, "after": after, "writes": writes}
        self._sender.submit(self._send_request, request, reply_future)
        # Counted as in flight until its reply comes, even if this caller is cancelled:
        # the next request must still follow it exactly.
        waiter = asyncio.wrap_future(reply_future)
        waiter.add_done_callback(self._answered)
        reply = await asyncio.shield(waiter)
        if reply.get("ok"):
            return
        if reply.get("error") == "checkpoint":
            current = reply.get("current")
            raise CheckpointNotAdvancedError(None if current is None else int(current), after)
        message = f"{reply.get('type')}: {reply.get('message')}"
        if reply.get("error") == "integrity":
            raise IntegrityError("commit", None, Exception(message))
        raise RuntimeError(f"SQLite write process: {message}")

    def _answered(self, waiter: asyncio.Future[dict[str, Any]]) -> None:
        self._in_flight -= 1
        if not waiter.cancelled():
            waiter.exception()  # retrieved here too, for a caller that was cancelled

    def _send_request(self, request: dict[str, Any], reply: Future[dict[str, Any]]) -> None:
        """In the sender thread: queue ``reply`` with the current child, then write."""
        try:
            body = marshal.dumps(request)
            process = self._started()
        except Exception as exc:  # noqa: BLE001 - any error must reach the waiting commit
            reply.set_exception(exc)
            return
        with self._lock:
            if self._process is not process:  # its reader saw it end meanwhile
                reply.set_exception(_ended(process))
                return
            self._replies.append(reply)
        try:
            _write(process, body)
        except RuntimeError:
            _close_input(process)  # its reader fails every reply it owes, this one too

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            process = subprocess.Popen(
                [sys.executable, str(_CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            _write(process, marshal.dumps(self._opening))
            reply = _read(process)
            if not reply.get("ok"):
                _stop(process)
                raise RuntimeError(f"SQLite write process could not open: {reply}")
            self._process = process
            threading.Thread(
                target=self._read_replies, args=(process,), name="sqlite-replies", daemon=True
            ).start()
        return self._process

    def _read_replies(self, process: subprocess.Popen[bytes]) -> None:
        """Hands the child's replies out in order; at its end, fails what it still owes
        and clears it, so the next request starts a new child."""
        while True:
            try:
                reply = _read(process)
            except RuntimeError as exc:
                with self._lock:
                    owed, self._replies = list(self._replies), deque()
                    if self._process is process:
                        self._process = None
                for future in owed:
                    future.set_exception(RuntimeError(str(exc)))
                _stop(process)
                return
            with self._lock:
                future = self._replies.popleft()
            future.set_result(reply)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._sender, self._close)
        finally:
            self._sender.shutdown(wait=False)  # its last job is done: the thread exits

    def _close(self) -> None:
        with self._lock:
            process = self._process
        if process is not None:
            _close_input(process)  # the child exits at end of input; its reader stops it
            process.wait()


def _ended(process: subprocess.Popen[bytes]) -> RuntimeError:
    return RuntimeError(f"SQLite write process ended (exit {process.poll()})")


def _write(process: subprocess.Popen[bytes], body: bytes) -> None:
    if process.stdin is None:
        raise RuntimeError("SQLite write process has no pipes")
    try:
        process.stdin.write(_LENGTH.pack(len(body)) + body)
        process.stdin.flush()
    except (BrokenPipeError, ValueError) as exc:  # ValueError: a closed pipe
        raise _ended(process) from exc


def _read(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    if process.stdout is None:
        raise RuntimeError("SQLite write process has no pipes")
    try:
        head = process.stdout.read(_LENGTH.size)
        (size,) = _LENGTH.unpack(head) if len(head) == _LENGTH.size else (-1,)
        body = process.stdout.read(size) if size >= 0 else b""
    except ValueError as exc:  # a closed pipe
        raise _ended(process) from exc
    if size < 0 or len(body) < size:
        raise _ended(process)
    reply: dict[str, Any] = from_json(body)
    return reply


def _close_input(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError, ValueError):
            process.stdin.close()  # the child commits nothing more and exits at end of input


def _stop(process: subprocess.Popen[bytes]) -> None:
    _close_input(process)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


__all__ = ["CheckpointNotAdvancedError", "SqliteWriterProcess", "Write"]
