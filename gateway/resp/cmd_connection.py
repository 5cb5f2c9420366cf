"""Connection commands: PING, ECHO, SELECT, AUTH, HELLO, CLIENT, QUIT."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from gateway.resp.arguments import parse_int
from gateway.resp.registry import command
from gateway.resp.replies import (
    OK,
    SYNTAX_ERROR,
    CommandError,
    MapReply,
    Reply,
    SimpleString,
    wrong_args,
)

if TYPE_CHECKING:
    from gateway.resp.connection import Connection

SERVER_VERSION = b"7.0.0"
"""The Redis version we answer as: the command surface and error texts of Redis 7.0."""

WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
HELLO_NOAUTH = (
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
    "select the RESP protocol version at the same time"
)


@command("PING", -1)
async def ping(conn: Connection, args: list[bytes]) -> Reply:
    if len(args) > 1:
        raise wrong_args("ping")
    return args[0] if args else SimpleString("PONG")


@command("ECHO", 2)
async def echo(conn: Connection, args: list[bytes]) -> Reply:
    return args[0]


@command("SELECT", 2)
async def select(conn: Connection, args: list[bytes]) -> Reply:
    db = parse_int(args[0])
    if not 0 <= db < conn.server.settings.databases:
        raise CommandError("ERR DB index is out of range")
    conn.db = db
    return OK


def _check_credentials(conn: Connection, username: bytes, password: bytes) -> bool:
    settings = conn.server.settings
    if settings.password is None:
        # Redis's default user without a password accepts any password.
        return username == settings.username.encode()
    return hmac.compare_digest(username, settings.username.encode()) and hmac.compare_digest(
        password, settings.password.encode()
    )


@command("AUTH", -2)
async def auth(conn: Connection, args: list[bytes]) -> Reply:
    if len(args) > 2:
        raise CommandError(SYNTAX_ERROR)
    settings = conn.server.settings
    if len(args) == 1:
        if settings.password is None:
            raise CommandError(
                "ERR AUTH <password> called without any password configured for the "
                "default user. Are you sure your configuration is correct?"
            )
        username, password = settings.username.encode(), args[0]
    else:
        username, password = args
    if not _check_credentials(conn, username, password):
        raise CommandError(WRONGPASS)
    conn.set_authenticated(True)
    return OK


@command("HELLO", -1)
async def hello(conn: Connection, args: list[bytes]) -> Reply:
    protocol = conn.protocol
    if args:
        try:
            protocol = parse_int(args[0])
        except CommandError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
    rest = args[1:]
    credentials: tuple[bytes, bytes] | None = None
    name: bytes | None = None
    i = 0
    while i < len(rest):
        option = rest[i].upper()
        if option == b"AUTH" and i + 2 < len(rest):
            credentials = (rest[i + 1], rest[i + 2])
            i += 3
        elif option == b"SETNAME" and i + 1 < len(rest):
            name = rest[i + 1]
            i += 2
        else:
            raise CommandError(
                f"ERR Syntax error in HELLO option '{rest[i].decode('utf-8', 'replace')}'"
            )
    if protocol not in (2, 3):
        raise CommandError("NOPROTO unsupported protocol version")
    if credentials is not None:
        if not _check_credentials(conn, *credentials):
            raise CommandError(WRONGPASS)
        conn.set_authenticated(True)
    elif not conn.authenticated:
        raise CommandError(HELLO_NOAUTH)
    if name is not None:
        conn.client_name = _valid_name(name) or None
    conn.protocol = protocol
    return MapReply(
        [
            (b"server", b"redis"),
            (b"version", SERVER_VERSION),
            (b"proto", protocol),
            (b"id", conn.client_id),
            (b"mode", b"standalone"),
            (b"role", b"master"),
            (b"modules", []),
        ]
    )


def _valid_name(name: bytes) -> bytes:
    if any(byte < 33 or byte > 126 for byte in name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters."
        )
    return name


@command("CLIENT", -2)
async def client(conn: Connection, args: list[bytes]) -> Reply:
    sub = args[0].upper()
    arity = {b"SETNAME": 2, b"GETNAME": 1, b"SETINFO": 3, b"ID": 1}
    if sub not in arity:
        raise CommandError(
            f"ERR unknown subcommand '{args[0].decode('utf-8', 'replace')}'. Try CLIENT HELP."
        )
    if len(args) != arity[sub]:
        raise wrong_args(f"client|{sub.decode().lower()}")
    if sub == b"SETNAME":
        conn.client_name = _valid_name(args[1]) or None
        return OK
    if sub == b"GETNAME":
        return conn.client_name
    if sub == b"ID":
        return conn.client_id
    attribute = args[1].upper()
    if attribute == b"LIB-NAME":
        conn.lib_name = _valid_name(args[2])
    elif attribute == b"LIB-VER":
        conn.lib_ver = _valid_name(args[2])
    else:
        raise CommandError(f"ERR Unrecognized option '{args[1].decode('utf-8', 'replace')}'")
    return OK


@command("QUIT", -1, no_transaction=True)
async def quit_(conn: Connection, args: list[bytes]) -> Reply:
    conn.close_after_reply = True
    return OK
