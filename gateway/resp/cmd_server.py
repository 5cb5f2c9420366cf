"""Server commands: INFO, COMMAND (minimal), DBSIZE, FLUSHDB, TIME."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from gateway.resp.cmd_connection import SERVER_VERSION
from gateway.resp.registry import COMMANDS, command
from gateway.resp.replies import OK, SYNTAX_ERROR, CommandError, MapReply, Reply, SimpleString

if TYPE_CHECKING:
    from gateway.resp.connection import Connection

DEFAULT_SECTIONS = ("server", "clients", "keyspace")


@command("INFO", -1)
async def info(conn: Connection, args: list[bytes]) -> Reply:
    wanted = {arg.decode("utf-8", "replace").lower() for arg in args}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(DEFAULT_SECTIONS)
    lines: list[str] = []
    if "server" in wanted:
        lines += _server_section(conn)
    if "clients" in wanted:
        lines += ["# Clients", f"connected_clients:{len(conn.server.connections)}", ""]
    if "stats" in wanted:
        lines += _stats_section(conn)
    if "commandstats" in wanted:
        lines += _commandstats_section(conn)
    if "keyspace" in wanted:
        lines += await _keyspace_section(conn)
    return "\r\n".join(lines).encode()


def _server_section(conn: Connection) -> list[str]:
    server = conn.server
    uptime = int(time.time() - server.started_at)
    return [
        "# Server",
        f"redis_version:{SERVER_VERSION.decode()}",
        "redis_mode:standalone",
        "jetledger_adapter:1",
        f"os:{os.uname().sysname} {os.uname().release} {os.uname().machine}",
        "arch_bits:64",
        f"process_id:{os.getpid()}",
        f"tcp_port:{server.port}",
        f"uptime_in_seconds:{uptime}",
        f"uptime_in_days:{uptime // 86400}",
        f"kv_bucket:{server.settings.kv_bucket}",
        f"jetstream_stream:{server.store.settings.stream}",
        "",
    ]


def _stats_section(conn: Connection) -> list[str]:
    server = conn.server
    keyspace = server.keyspace
    return [
        "# Stats",
        f"total_connections_received:{server.total_connections}",
        f"total_commands_processed:{server.total_commands}",
        f"keyspace_hits:{keyspace.cache.hits}",
        f"keyspace_misses:{keyspace.cache.misses}",
        # What each command costs in round trips to JetStream (the cache saves reads,
        # queued changes of one key share a write).
        f"jetledger_kv_reads:{keyspace.kv.reads}",
        f"jetledger_kv_writes:{keyspace.kv.writes}",
        # Write-behind: replies sent before their write was acknowledged, and writes
        # that failed after such a reply (each reported to its client).
        f"jetledger_kv_early_replies:{keyspace.early_replies}",
        f"jetledger_kv_lost_writes:{keyspace.lost_writes}",
        f"jetledger_stream_appends:{server.streams.appends}",
        "",
    ]


def _commandstats_section(conn: Connection) -> list[str]:
    stats = conn.server.command_stats
    lines = ["# Commandstats"]
    for name in sorted(stats.calls):
        calls, usec = stats.calls[name], stats.seconds[name] * 1e6
        lines.append(
            f"cmdstat_{name.lower()}:calls={calls},usec={int(usec)},"
            f"usec_per_call={usec / calls:.2f},rejected_calls=0,failed_calls=0"
        )
    lines.append("")
    return lines


async def _keyspace_section(conn: Connection) -> list[str]:
    lines = ["# Keyspace"]
    for db in range(conn.server.settings.databases):
        keys = await conn.server.keyspace.keys(db) if db in (conn.db, 0) else []
        if keys:
            lines.append(f"db{db}:keys={len(keys)},expires=0,avg_ttl=0")
    lines.append("")
    return lines


def _command_entry(name: str) -> list[Reply]:
    spec = COMMANDS[name]
    flags: list[Reply] = [SimpleString("write" if spec.write else "readonly")]
    first_key = 0 if name in _KEYLESS else 1
    return [name.lower().encode(), spec.arity, flags, first_key, first_key, first_key]


_KEYLESS = frozenset(
    {
        "PING", "ECHO", "SELECT", "AUTH", "HELLO", "CLIENT", "QUIT", "INFO", "COMMAND",
        "DBSIZE", "FLUSHDB", "TIME", "MULTI", "EXEC", "DISCARD", "EVAL", "EVALSHA",
        "SCAN", "KEYS", "XREAD", "XREADGROUP", "SCRIPT", "WATCH", "UNWATCH",
    }
)  # fmt: skip


@command("COMMAND", -1)
async def command_(conn: Connection, args: list[bytes]) -> Reply:
    if not args:
        return [_command_entry(name) for name in sorted(COMMANDS)]
    sub = args[0].upper()
    if sub == b"COUNT":
        return len(COMMANDS)
    if sub == b"INFO":
        names = [arg.decode("utf-8", "replace").upper() for arg in args[1:]] or sorted(COMMANDS)
        return [_command_entry(name) if name in COMMANDS else None for name in names]
    if sub == b"DOCS":
        return MapReply([])
    if sub == b"LIST":
        return [name.lower().encode() for name in sorted(COMMANDS)]
    raise CommandError(
        f"ERR unknown subcommand '{args[0].decode('utf-8', 'replace')}'. Try COMMAND HELP."
    )


@command("DBSIZE", 1)
async def dbsize(conn: Connection, args: list[bytes]) -> Reply:
    return len(await conn.server.keyspace.keys(conn.db))


@command("FLUSHDB", -1, write=True)
async def flushdb(conn: Connection, args: list[bytes]) -> Reply:
    if len(args) > 1 or (args and args[0].upper() not in (b"SYNC", b"ASYNC")):
        raise CommandError(SYNTAX_ERROR)
    await conn.server.keyspace.flush(conn.db)
    return OK


@command("TIME", 1)
async def time_(conn: Connection, args: list[bytes]) -> Reply:
    now = time.time()
    return [str(int(now)).encode(), str(int((now % 1) * 1_000_000)).encode()]
