"""One client connection: its state (protocol, db, name, auth, transaction) and its
read -> execute -> reply loop.

Reading runs in a task of its own so that a client that disconnects during a blocking
command (``XREADGROUP ... BLOCK 0``) is noticed at once: ``closed`` is set and the
command returns. Input and output are bounded per client (``RespSettings``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError

from eventstore.errors import EventStoreError
from gateway.resp.change_queue import write_owner
from gateway.resp.cmd_streams import xadd_pipelined
from gateway.resp.protocol import ParserLimits, ProtocolError, RequestParser, encode
from gateway.resp.registry import COMMANDS, CommandSpec
from gateway.resp.replies import (
    CommandError,
    ErrorReply,
    Reply,
    SimpleString,
    jetstream_unavailable,
    wrong_args,
)

if TYPE_CHECKING:
    from gateway.resp.server import RespServer

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
QUEUED = SimpleString("QUEUED")
NOAUTH = "NOAUTH Authentication required."
# Commands a client may send before AUTH (Redis lets these through too).
NO_AUTH_NEEDED = frozenset({"AUTH", "HELLO", "QUIT"})
XADD_MIN_WORDS = 5
MAY_BLOCK = frozenset({b"XREAD", b"XREADGROUP"})
"""Commands that may wait for a long time: replies held back are sent before them."""
OUTPUT_FLUSH_BYTES = 64 * 1024
"""Held-back replies are sent once they reach this size."""


@dataclass(slots=True)
class Transaction:
    """What MULTI has queued so far; ``dirty`` once a queued command was refused."""

    commands: list[tuple[CommandSpec, list[bytes]]] = field(default_factory=list)
    dirty: bool = False
    queued_bytes: int = 0


class Connection:
    """Per-client state; handlers receive it as ``conn``."""

    def __init__(
        self,
        server: RespServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_id: int,
    ) -> None:
        settings = server.settings
        self.server = server
        self.client_id = client_id
        self.protocol = 2
        self.db = 0
        self.client_name: bytes | None = None
        self.lib_name: bytes | None = None
        self.lib_ver: bytes | None = None
        self.authenticated = settings.password is None
        self.transaction: Transaction | None = None
        self.closed = asyncio.Event()
        """Set when the client is gone (or is being closed): blocking commands end."""
        self.close_after_reply = False
        """Set by QUIT: the connection closes once the pending replies are written."""
        self.peer = str(writer.get_extra_info("peername"))
        self._reader = reader
        self._writer = writer
        self._input = asyncio.Event()
        self._progress = asyncio.Event()
        """Set when the command loop took a command or ran out of them (reader backpressure)."""
        self._starved = False
        """True while the command loop waits for input: the buffer holds no complete command."""
        self._parser = RequestParser(
            ParserLimits(
                max_bulk_len=settings.proto_max_bulk_len,
                max_multibulk_len=settings.max_multibulk_len,
                max_inline_len=settings.max_inline_len,
            )
        )
        self._parser.authenticated = self.authenticated
        self._carried: list[bytes] | None = None
        """A command read while gathering pipelined XADDs, run next."""
        self._carried_error: ProtocolError | None = None
        self._output: list[bytes] = []
        """Encoded replies not yet handed to the transport (see ``_write_all``)."""
        self._output_size = 0
        self._appending: deque[tuple[asyncio.Task[list[Reply]], int]] = deque()
        """Groups of pipelined XADDs in flight (their replies not yet written), oldest
        first, with their sizes."""
        self._appending_entries = 0
        self._published: asyncio.Future[None] | None = None
        """Set once the newest group in flight has published all its entries."""
        self._lost_writes: list[str] = []
        """Writes of this client answered early and then not stored: the next command
        answers with the error instead of running (see ``note_lost_write``)."""

    @property
    def in_transaction(self) -> bool:
        """Inside MULTI (and while EXEC runs the queue): blocking commands do not block."""
        return self.transaction is not None

    def shutdown(self) -> None:
        """Ask the connection to end: blocking commands return, the loop stops."""
        self.closed.set()
        self._input.set()

    def set_authenticated(self, value: bool) -> None:
        self.authenticated = value
        self._parser.authenticated = value

    def note_lost_write(self, key: bytes, exc: BaseException) -> None:
        """A change of this client was answered early and its write then failed."""
        cause = exc.message if isinstance(exc, CommandError) else type(exc).__name__
        log.error("write-behind of key %r from %s failed: %r", key, self.peer, exc)
        shown = key[:128].decode("utf-8", "replace")
        self._lost_writes.append(
            f"ERR jetledger redis: a write to '{shown}' was answered before JetStream "
            f"stored it and then failed ({cause}); it may be lost. This command was not run"
        )

    async def serve(self) -> None:
        """Serve until the client quits, disconnects or breaks the protocol."""
        # Each connection runs in a task of its own: changes it queues report here.
        write_owner.set(self.note_lost_write)
        reading = asyncio.create_task(self._read_loop(), name=f"resp-read-{self.client_id}")
        try:
            await self._command_loop()
        finally:
            self.closed.set()
            for task, _ in self._appending:  # the client is gone: they finish on their own
                task.add_done_callback(_forget)
            self._flush_output()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            await self._close_transport()

    async def _close_transport(self) -> None:
        # Pending replies get a bounded time to leave; a client that does not read
        # them is cut off instead of holding the connection open.
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(self._writer.drain(), self.server.settings.shutdown_timeout)
        self._writer.transport.abort()

    async def _read_loop(self) -> None:
        limit = self.server.settings.max_query_buffer
        try:
            while True:
                if self._parser.buffered > limit:
                    if self._starved:
                        # Not even one complete command fits in the limit: Redis closes too.
                        log.warning(
                            "closing client %s: query buffer over %d bytes", self.peer, limit
                        )
                        break
                    # A pipeline bigger than the limit: stop reading until commands ran.
                    self._progress.clear()
                    await self._progress.wait()
                    continue
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    break
                self._parser.feed(data)
                self._starved = False  # the new bytes may complete a command
                self._input.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            self._input.set()

    async def _command_loop(self) -> None:
        while not self.closed.is_set():
            try:
                words = self._next_command()
            except ProtocolError as exc:
                await self._finish_appends()  # the replies of what came before go first
                self._write(ErrorReply(f"ERR {exc.message}"))
                self._flush_output()
                return
            if words is None:
                if self._appending:
                    await self._finish_appends()
                    continue  # more input may have come meanwhile
                self._flush_output()
                self._input.clear()
                self._starved = True
                self._progress.set()
                await self._drain()
                if self.closed.is_set():
                    return
                await self._input.wait()
                self._starved = False
                continue
            self._progress.set()
            if self._pipelined_append(words):
                await self._append_pipeline(words)
                continue
            await self._finish_appends()  # replies in order; later commands see the entries
            if words[0].upper() in MAY_BLOCK:
                self._flush_output()  # the client may need them while this one waits
            self._write_all([await self.execute(words)])
            if self._output_over_limit():
                self._writer.transport.abort()
                return
            if self.close_after_reply:
                self._flush_output()
                return

    def _next_command(self) -> list[bytes] | None:
        if self._carried is not None:
            words, self._carried = self._carried, None
            return words
        if self._carried_error is not None:
            error, self._carried_error = self._carried_error, None
            raise error
        return self._parser.next_command()

    def _pipelined_append(self, words: list[bytes]) -> bool:
        """An XADD that may be appended together with the XADDs pipelined after it."""
        return (
            self.authenticated
            and self.transaction is None
            and not self._lost_writes
            and len(words) >= XADD_MIN_WORDS
            and words[0].upper() == b"XADD"
        )

    async def _append_pipeline(self, first: list[bytes]) -> None:
        """Take the XADDs already buffered after ``first`` and append them all at once.

        The appends run in a task: while the server stores them and acknowledges, the
        next XADDs of the pipeline are parsed and published (in order: each group
        publishes after the one before). Their replies are written in order by
        :meth:`_finish_appends`, before any other command runs."""
        batch = [first]
        while len(batch) < self.server.settings.max_pipelined_appends:
            try:
                words = self._parser.next_command()
            except ProtocolError as exc:
                self._carried_error = exc  # answered after the XADDs before it
                break
            if words is None:
                break
            if not self._pipelined_append(words):
                self._carried = words
                break
            batch.append(words)
        if self._appending and any(_has_options(words) for words in batch):
            await self._finish_appends()  # NOMKSTREAM must see earlier entries stored
        if len(batch) == 1 and not self._appending:
            self._write_all([await self.execute(first)])
            return
        published: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._append_group(batch, self._published, published))
        self._published = published
        self._appending.append((task, len(batch)))
        self._appending_entries += len(batch)
        while self._appending_entries > self.server.settings.max_pipelined_appends:
            await self._finish_appends(oldest_only=True)  # bounds memory per client

    async def _append_group(
        self,
        batch: list[list[bytes]],
        after: asyncio.Future[None] | None,
        published: asyncio.Future[None],
    ) -> list[Reply]:
        self.server.total_commands += len(batch)
        started = time.perf_counter()
        try:
            return await xadd_pipelined(self, batch, after=after, published=published)
        except (NatsError, EventStoreError, TimeoutError) as exc:
            log.warning("pipelined XADD from %s: JetStream unavailable: %r", self.peer, exc)
            return [unavailable(exc)] * len(batch)
        finally:
            if not published.done():
                published.set_result(None)
            elapsed = time.perf_counter() - started
            self.server.command_stats.record("XADD", elapsed, len(batch))

    async def _finish_appends(self, *, oldest_only: bool = False) -> None:
        """Wait for appends in flight, oldest first, and queue their replies."""
        while self._appending:
            task, size = self._appending[0]
            replies = await task
            self._appending.popleft()
            self._appending_entries -= size
            self._write_all(replies)
            if oldest_only:
                return

    def _write(self, reply: Reply) -> None:
        self._write_all([reply])

    def _write_all(self, replies: list[Reply]) -> None:
        # Replies wait in ``_output`` while more commands of the same pipeline are
        # buffered, as in Redis: one send per pipeline instead of one per reply (a send
        # on loopback costs tens of microseconds of CPU, more than most commands).
        for reply in replies:
            self._output.append(encode(reply, self.protocol))
            self._output_size += len(self._output[-1])
        if self._output_size >= OUTPUT_FLUSH_BYTES:
            self._flush_output()

    def _flush_output(self) -> None:
        if self._output and not self._writer.is_closing():
            self._writer.write(b"".join(self._output))
        self._output.clear()
        self._output_size = 0

    def _output_over_limit(self) -> bool:
        size = self._writer.transport.get_write_buffer_size() + self._output_size
        if size > self.server.settings.max_output_buffer:
            log.warning("closing client %s: %d bytes of replies unread", self.peer, size)
            return True
        return False

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()

    async def execute(self, words: list[bytes]) -> Reply:
        """Run one command (or queue it inside MULTI) and return its reply."""
        name = words[0].decode("utf-8", "replace").upper()
        spec = COMMANDS.get(name)
        self.server.total_commands += 1
        if self._lost_writes:
            if self.transaction is not None:
                self.transaction.dirty = True  # EXEC aborts, as after any refused command
            return ErrorReply(self._lost_writes.pop(0))
        refusal = self._refusal(name, spec, words)
        if refusal is not None:
            if self.transaction is not None:
                self.transaction.dirty = True
            return ErrorReply(refusal)
        assert spec is not None
        if self.transaction is not None and not spec.no_transaction:
            return self._queue(self.transaction, spec, words)
        started = time.perf_counter()
        try:
            return await self.run(spec, words[1:])
        finally:
            self.server.command_stats.record(spec.name, time.perf_counter() - started)

    def _queue(self, transaction: Transaction, spec: CommandSpec, words: list[bytes]) -> Reply:
        settings = self.server.settings
        transaction.queued_bytes += sum(len(word) for word in words)
        if (
            len(transaction.commands) >= settings.max_queued_commands
            or transaction.queued_bytes > settings.max_queued_bytes
        ):
            # Drop what is queued now: the transaction can only be aborted anyway.
            transaction.commands.clear()
            transaction.dirty = True
            return ErrorReply(
                f"ERR transaction too large for jetledger redis (at most "
                f"{settings.max_queued_commands} commands, {settings.max_queued_bytes} bytes)"
            )
        transaction.commands.append((spec, words[1:]))
        return QUEUED

    def _refusal(self, name: str, spec: CommandSpec | None, words: list[bytes]) -> str | None:
        if not self.authenticated and name not in NO_AUTH_NEEDED:
            return NOAUTH
        if spec is None:
            return unknown_command(words)
        if not spec.arity_ok(len(words)):
            return wrong_args(spec.name).message
        return None

    async def run(self, spec: CommandSpec, args: list[bytes]) -> Reply:
        """Call a handler, turning its errors into error replies."""
        try:
            return await spec.handler(self, args)
        except CommandError as exc:
            return ErrorReply(exc.message)
        except (NatsError, EventStoreError, TimeoutError) as exc:
            # The broker is away (restart, partition): this command fails, the
            # connection stays, and the next command tries again.
            log.warning(
                "RESP command %s from %s: JetStream unavailable: %r", spec.name, self.peer, exc
            )
            return unavailable(exc)
        except Exception:  # the connection must outlive any handler bug
            log.exception("RESP command %s from %s failed", spec.name, self.peer)
            return ErrorReply(f"ERR internal error in {spec.name.lower()}; see the adapter log")


def _forget(task: asyncio.Task[list[Reply]]) -> None:
    # Appends of a client that went away: nobody reads their replies or errors.
    if not task.cancelled():
        task.exception()


def _has_options(words: list[bytes]) -> bool:
    """An XADD with options (NOMKSTREAM, MAXLEN...) before its id."""
    return len(words) > 2 and words[2] != b"*"


def unavailable(exc: BaseException) -> ErrorReply:
    return ErrorReply(jetstream_unavailable(exc).message)


def unknown_command(words: list[bytes]) -> str:
    """Redis 7's text, byte for byte: args quoted, at most ~128 characters of them."""
    args = ""
    for word in words[1:]:
        if len(args) >= 128:
            break
        args += "'" + word.decode("utf-8", "replace")[: 128 - len(args)] + "' "
    name = words[0].decode("utf-8", "replace")[:128]
    return f"ERR unknown command '{name}', with args beginning with: {args}"


__all__ = ["Connection", "Transaction", "unavailable", "unknown_command"]
