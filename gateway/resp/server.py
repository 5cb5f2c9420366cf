"""``RespServer``: the asyncio TCP server of ``jetledger redis``.

It owns the connections (bounded by ``max_clients``), the keyspace on KV and the
stream space, and the command table: every ``gateway.resp.cmd_*`` module in
:data:`COMMAND_MODULES` is imported at start so its handlers register themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import time
from typing import Any

from eventstore.store import EventStore
from gateway.resp.connection import Connection
from gateway.resp.keyspace import Keyspace
from gateway.resp.protocol import encode
from gateway.resp.replies import ErrorReply
from gateway.resp.settings import RespSettings
from gateway.resp.stream_space import StreamSpace

log = logging.getLogger(__name__)

COMMAND_MODULES = (
    "gateway.resp.cmd_connection",
    "gateway.resp.cmd_server",
    "gateway.resp.cmd_keys",
    "gateway.resp.cmd_strings",
    "gateway.resp.cmd_hashes",
    "gateway.resp.cmd_sets",
    "gateway.resp.cmd_zsets",
    "gateway.resp.cmd_lists",
    "gateway.resp.cmd_transactions",
    "gateway.resp.cmd_scripting",
    "gateway.resp.cmd_streams",
)

MAX_CLIENTS_REACHED = "ERR max number of clients reached"


class CommandStats:
    """Calls and time per command (``INFO commandstats``); EXEC counts its queue."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def record(self, name: str, seconds: float, calls: int = 1) -> None:
        """``calls`` calls of ``name`` that took ``seconds`` together."""
        self.calls[name] = self.calls.get(name, 0) + calls
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


class RespServerError(Exception):
    """The adapter could not start (port taken, NATS unreachable...)."""


def load_commands() -> None:
    """Import every command module once; their decorators fill the command table."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)


class RespServer:
    """Serve the Redis protocol over ``store``.

    >>> async def example(store: EventStore) -> None:  # doctest: +SKIP
    ...     server = RespServer(store, RespSettings(port=0))
    ...     await server.start()
    ...     print(server.port)
    ...     await server.close()
    """

    def __init__(self, store: EventStore, settings: RespSettings | None = None) -> None:
        self.store = store
        self.settings = settings or RespSettings()
        self.started_at = time.time()
        self.connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.streams: StreamSpace
        self.keyspace: Keyspace
        self.total_connections = 0
        self.total_commands = 0
        self.command_stats = CommandStats()

    async def start(self) -> None:
        """Load commands, start the stream space and the keyspace, then listen."""
        load_commands()
        self.streams = StreamSpace(self.store, self.settings.streams)
        await self.streams.start()
        self.keyspace = Keyspace(self.store, self.settings, self.streams)
        await self.keyspace.start()
        try:
            self._server = await asyncio.start_server(
                self._accept, self.settings.host, self.settings.port
            )
        except OSError as exc:
            await self.streams.close()
            raise RespServerError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        log.info("jetledger redis listening on %s:%d", self.host, self.port)

    @property
    def host(self) -> str:
        return str(self._socket_name()[0])

    @property
    def port(self) -> int:
        return int(self._socket_name()[1])

    def _socket_name(self) -> tuple[str, int]:
        if self._server is None or not self._server.sockets:
            raise RespServerError("the RESP server is not listening")
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    async def serve_forever(self) -> None:
        if self._server is None:
            raise RespServerError("call start() first")
        await self._server.serve_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= self.settings.max_clients:
            writer.write(encode(ErrorReply(MAX_CLIENTS_REACHED)))
            with contextlib.suppress(OSError, ConnectionError):
                await writer.drain()
            writer.close()
            return
        client_id = next(self._ids)
        conn = Connection(self, reader, writer, client_id)
        self.connections[client_id] = conn
        self.total_connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.serve()
        finally:
            self.connections.pop(client_id, None)
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening, end every connection, then stop the stream space."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            conn.shutdown()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self.settings.shutdown_timeout)
        if self._server is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.wait_closed()
            self._server = None
        if hasattr(self, "keyspace"):
            await self.keyspace.close()
        if hasattr(self, "streams"):
            await self.streams.close()


__all__ = ["COMMAND_MODULES", "CommandStats", "RespServer", "RespServerError", "load_commands"]
