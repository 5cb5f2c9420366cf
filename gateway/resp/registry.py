"""The command table: handlers register themselves by name with Redis's arity rule.

A handler is ``async def handler(conn: Connection, args: list[bytes]) -> Reply`` where
``args`` excludes the command name. ``arity`` follows Redis's ``COMMAND`` convention and
counts the name: ``n`` means exactly ``n`` words, ``-n`` at least ``n``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.resp.replies import Reply

if TYPE_CHECKING:
    from gateway.resp.connection import Connection

Handler = Callable[["Connection", list[bytes]], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    handler: Handler
    arity: int
    write: bool = False
    """Writes are refused inside nothing today; kept for ``COMMAND`` output."""
    no_transaction: bool = False
    """Executed at once even inside MULTI (MULTI, EXEC, DISCARD, WATCH, QUIT...)."""

    def arity_ok(self, word_count: int) -> bool:
        return word_count == self.arity if self.arity > 0 else word_count >= -self.arity


COMMANDS: dict[str, CommandSpec] = {}


def command(
    name: str, arity: int, *, write: bool = False, no_transaction: bool = False
) -> Callable[[Handler], Handler]:
    """Register ``handler`` for the (case-insensitive) command ``name``."""

    def register(handler: Handler) -> Handler:
        key = name.upper()
        if key in COMMANDS:
            raise ValueError(f"RESP command {key} registered twice")
        COMMANDS[key] = CommandSpec(key, handler, arity, write, no_transaction)
        return handler

    return register
