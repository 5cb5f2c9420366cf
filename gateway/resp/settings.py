"""Settings of the RESP adapter: where it listens, its limits and its timeouts.

Every limit mirrors a Redis configuration directive where one exists (named in the
docstring), so operators can reason about it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.resp.stream_space import StreamSpaceSettings


@dataclass(frozen=True, slots=True)
class RespSettings:
    """How ``jetledger redis`` serves clients (defaults: loopback, no password)."""

    host: str = "127.0.0.1"
    """Interface to listen on; loopback by default so nothing is exposed by accident."""

    port: int = 6380
    """TCP port; 0 picks a free one (tests)."""

    password: str | None = None
    """When set, every client must ``AUTH`` first (Redis ``requirepass``)."""

    username: str = "default"
    """The only user name ``AUTH user pass`` accepts (Redis's default user)."""

    max_clients: int = 1000
    """Connections served at once; more are refused (Redis ``maxclients``)."""

    proto_max_bulk_len: int = 16 * 1024 * 1024
    """Largest bulk string a client may send (Redis ``proto-max-bulk-len``)."""

    max_multibulk_len: int = 1024 * 1024
    """Most words in one command (Redis's fixed limit)."""

    max_inline_len: int = 64 * 1024
    """Longest inline command or length line (Redis ``PROTO_INLINE_MAX_SIZE``)."""

    max_query_buffer: int = 64 * 1024 * 1024
    """Unparsed input kept per client; beyond it the client is closed
    (Redis ``client-query-buffer-limit``)."""

    max_output_buffer: int = 64 * 1024 * 1024
    """Unsent replies kept per client; a client that reads slower is closed
    (``client-output-buffer-limit``)."""

    max_queued_commands: int = 10_000
    """Commands queued in one MULTI; more abort the transaction (bounds memory)."""

    max_queued_bytes: int = 64 * 1024 * 1024
    """Bytes of arguments queued in one MULTI; more abort the transaction."""

    max_pipelined_appends: int = 1000
    """Consecutive pipelined XADD commands appended together (published before any
    acknowledgement is awaited); more are taken in the next group."""

    databases: int = 16
    """Number of logical databases ``SELECT`` accepts (Redis ``databases``)."""

    kv_bucket: str = "jl_redis"
    """JetStream KV bucket holding strings, hashes, sets, sorted sets and lists."""

    kv_replicas: int = 1
    """Replicas of the KV bucket (3 on a cluster)."""

    cas_retries: int = 50
    """Attempts of one batch of changes to a key before answering an error: only writes
    through other adapters can make an attempt fail (this adapter queues its own)."""

    cas_backoff: float = 0.002
    """Seconds; after the n-th failed attempt a batch waits a random 0..n times this."""

    kv_cache_size: int = 10_000
    """Keys whose last known value this adapter keeps; a watch on the bucket drops a key
    that another adapter writes (writes are revision-checked by the server anyway)."""

    kv_cache_sync: bool = False
    """Make every cached read wait for a PING round trip to NATS first, so a write that
    another adapter had acknowledged is never missed (costs a round trip per read; not
    needed with a single adapter per bucket)."""

    kv_write_behind: bool = True
    """Answer a write once it is decided and in line in its key's change queue (and
    visible to this adapter's reads), with the JetStream acknowledgement awaited behind
    the reply, as Redis answers before its disk does. Compare-and-set style commands
    (SET NX/XX/GET, SETNX, HSETNX, INCR/DECR, GETDEL, pops, the lease scripts, DEL)
    always wait for the acknowledgement. A write that then fails is reported to the
    client's next command (decision 27). Off while ``kv_cache_sync`` is set."""

    kv_own_connection: bool = True
    """Talk to the KV bucket (reads, writes and the cache's watch) over a NATS connection
    of the keyspace's own, opened with ``no_echo`` so that this adapter's writes do not
    come back to its watch (the store must have been opened with connect options)."""

    kv_write_linger: float = 0.02
    """With write-behind, seconds a write whose replies are all sent waits before it goes
    out, so that the key's next changes (answered at once meanwhile) join it: by-framework
    rewrites its session registry hash five times a run, a few ms apart. Cut short when a
    change that needs the write arrives. 0: write at once (decision 29)."""

    kv_write_behind_quiet_seconds: float = 30.0
    """Write-behind pauses while another adapter serves the same bucket (it announces
    itself) or writes to it, and resumes once neither was seen for this long: a value
    decided on this adapter's view could be stale then, and a client answered here
    before the write is stored could write the key there first; so each reply waits for
    the stored write."""

    tombstone_ttl_seconds: int = 1
    """How long a delete marker stays in the KV stream (it only guards compare-and-set)."""

    request_timeout: float = 5.0
    """Seconds to wait for one KV read or write."""

    shutdown_timeout: float = 2.0
    """Seconds connections get to finish their command when the server stops."""

    streams: StreamSpaceSettings = field(default_factory=StreamSpaceSettings)
    """Settings of the stream space (:class:`~gateway.resp.stream_space.StreamSpaceSettings`)."""


__all__ = ["RespSettings"]
