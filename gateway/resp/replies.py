"""What a command handler returns, before it is encoded as RESP2 or RESP3.

Handlers return plain Python values; :mod:`gateway.resp.protocol` encodes them:

* ``None`` -> null bulk string (``$-1``; RESP3 ``_``)
* ``int`` -> integer (``:n``)
* ``bytes`` -> bulk string
* :class:`SimpleString` -> simple string (``+OK``)
* :class:`ErrorReply` -> error (``-ERR ...``); raising :class:`CommandError` does the same
* ``list`` -> array of replies (``NullArray`` -> ``*-1``)
* :class:`MapReply` -> RESP3 map, flattened to an array under RESP2
"""

from __future__ import annotations

from dataclasses import dataclass


class SimpleString(str):
    """A RESP simple string such as ``OK`` or ``QUEUED``."""


OK = SimpleString("OK")


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A RESP error; ``message`` starts with its code, e.g. ``ERR syntax error``."""

    message: str


class CommandError(Exception):
    """Raised by a handler to answer with a RESP error; the text is Redis's own wording
    (e.g. ``WRONGTYPE Operation against a key holding the wrong kind of value``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NullArray:
    """The null array (``*-1``): e.g. ``XREADGROUP ... BLOCK`` that timed out."""


NULL_ARRAY = NullArray()


@dataclass(frozen=True, slots=True)
class MapReply:
    """Key/value pairs: a RESP3 map, or a flat array under RESP2."""

    items: list[tuple[Reply, Reply]]


Reply = (
    None | int | float | bytes | SimpleString | ErrorReply | NullArray | MapReply | list["Reply"]
)

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


def jetstream_unavailable(exc: BaseException) -> CommandError:
    """The error of a command that could not reach JetStream (retrying it is safe)."""
    return CommandError(
        f"ERR jetledger redis: JetStream unavailable ({type(exc).__name__}); try again"
    )


def wrong_args(command: str) -> CommandError:
    """Redis's arity error for ``command``."""
    return CommandError(f"ERR wrong number of arguments for '{command.lower()}' command")


SYNTAX_ERROR = "ERR syntax error"
