"""Compare-and-set access to the adapter's JetStream KV bucket.

Speaks to the bucket's stream directly (direct get, publish with
``Nats-Expected-Last-Subject-Sequence``) rather than through nats-py's ``KeyValue`` so
that every write can carry both a revision check and a per-message TTL, and every
read returns the revision to check against, including that of a delete marker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig
from nats.js.errors import APIError, NotFoundError

from eventstore.jsapi import api_request

KV_OPERATION = "KV-Operation"
WRONG_LAST_SEQUENCE = (10071, 10164)
HEADER_ROOM = 1024


class RevisionConflict(Exception):
    """Someone else wrote the key since it was read: read again and retry."""


@dataclass(slots=True)
class KVRecord:
    """The last message of a key: ``body`` is ``None`` for a delete marker."""

    body: bytes | None
    revision: int
    decoded: Any = field(default=None, compare=False, repr=False)
    """The body's value once decoded (by the keyspace): a cached record is read far
    more often than it changes, and a big hash is costly to decode every time."""


def _expecting(headers: dict[str, str], revision: int | None) -> dict[str, str]:
    if revision is None:
        return dict(headers)
    return {**headers, "Nats-Expected-Last-Subject-Sequence": str(revision)}


class KVStore:
    """One KV bucket (stream ``KV_<bucket>``) with revision-checked writes."""

    def __init__(
        self,
        nc: NatsClient,
        bucket: str,
        *,
        timeout: float,
        replicas: int,
        writer_headers: dict[str, str] | None = None,
    ) -> None:
        self._nc = nc
        self._writer_headers = writer_headers or {}
        self.reads = 0
        """Round trips to the server, for ``INFO stats`` (what the cache saves)."""
        self.writes = 0
        self._js = nc.jetstream(timeout=timeout)
        self._timeout = timeout
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._replicas = replicas

    def use(self, nc: NatsClient) -> None:
        """Talk to the bucket over ``nc`` from now on (before the first request)."""
        self._nc = nc
        self._js = nc.jetstream(timeout=self._timeout)

    async def ensure(self) -> None:
        """Create the bucket (idempotent); per-message TTLs are enabled by nats-py."""
        await self._js.create_key_value(
            KeyValueConfig(bucket=self.bucket, history=1, replicas=self._replicas, direct=True)
        )

    async def get(self, key: str) -> KVRecord | None:
        self.reads += 1
        try:
            msg = await self._js.get_msg(self.stream, subject=self._prefix + key, direct=True)
        except NotFoundError:
            return None
        headers = msg.headers or {}
        if headers.get(KV_OPERATION) in ("DEL", "PURGE"):
            return KVRecord(None, int(msg.seq or 0))
        return KVRecord(msg.data or b"", int(msg.seq or 0))

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up (a write now can be stored at all)."""
        return bool(self._nc.is_connected)

    @property
    def max_value_size(self) -> int:
        """Largest body the server accepts in one message (headers need a little room)."""
        return int(self._nc.max_payload or 1024 * 1024) - HEADER_ROOM

    async def put(
        self, key: str, body: bytes, expected_revision: int | None, ttl_seconds: float | None
    ) -> int:
        """Write ``body`` if the key's last revision is still ``expected_revision`` (0: none;
        ``None``: whatever it is, for a value that does not depend on the old one).

        ``ttl_seconds`` lets the server drop the message on its own after expiry, so
        expired keys do not pile up even if nobody reads them again."""
        headers = _expecting(self._writer_headers, expected_revision)
        self.writes += 1
        ttl = None if ttl_seconds is None else max(1, math.ceil(ttl_seconds))
        try:
            ack = await self._js.publish(self._prefix + key, body, headers=headers, msg_ttl=ttl)
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise RevisionConflict(key) from exc
            raise
        return int(ack.seq)

    async def delete(self, key: str, expected_revision: int | None, marker_ttl: int) -> int:
        """Replace the key by a purge marker that itself disappears after ``marker_ttl`` s."""
        self.writes += 1
        headers = {
            **_expecting(self._writer_headers, expected_revision),
            KV_OPERATION: "PURGE",
            "Nats-Rollup": "sub",
        }
        try:
            ack = await self._js.publish(
                self._prefix + key, b"", headers=headers, msg_ttl=marker_ttl
            )
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise RevisionConflict(key) from exc
            raise
        return int(ack.seq)

    async def keys(self, prefix: str) -> list[str]:
        """Keys below ``prefix`` that have a message (values and recent delete markers)."""
        keys: list[str] = []
        offset = 0
        subject_filter = f"{self._prefix}{prefix}>"
        while True:
            info = await api_request(
                self._nc,
                f"$JS.API.STREAM.INFO.{self.stream}",
                {"subjects_filter": subject_filter, "offset": offset},
                timeout=self._timeout,
            )
            subjects = info.get("state", {}).get("subjects") or {}
            keys.extend(subject[len(self._prefix) :] for subject in subjects)
            total = int(info.get("total", 0) or 0)
            offset += len(subjects)
            if not subjects or offset >= total:
                return keys

    async def purge_all(self, prefix: str, notify_subject: str | None = None) -> None:
        """Remove every key below ``prefix`` at once (FLUSHDB); a purge is no publish on
        the keys' subjects, so caches learn of it from a message on ``notify_subject``."""
        await api_request(
            self._nc,
            f"$JS.API.STREAM.PURGE.{self.stream}",
            {"filter": f"{self._prefix}{prefix}>"},
            timeout=self._timeout,
        )
        if notify_subject is not None:
            await self._nc.publish(notify_subject, prefix.encode())
            await self._nc.flush(max(1, math.ceil(self._timeout)))


__all__ = ["KVRecord", "KVStore", "RevisionConflict"]
