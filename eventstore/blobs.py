"""KV and Object Store helpers: JSON values only (G7), objects checked by sha256."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from nats.js.client import JetStreamContext
from nats.js.errors import (
    APIError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
)
from nats.js.errors import ObjectNotFoundError as NatsObjectNotFoundError

from eventstore.errors import ConcurrencyError, EventStoreError, ObjectIntegrityError

_KV_KEY_RE = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


@dataclass(frozen=True, slots=True)
class KVEntry:
    value: Any
    revision: int


@dataclass(frozen=True, slots=True)
class StoredObject:
    """Where an object lives and how to check it (the shape of ``ObjectRef`` in events)."""

    bucket: str
    name: str
    size: int
    sha256: str


def check_kv_key(key: str) -> str:
    if not key or len(key) > 1024 or not _KV_KEY_RE.match(key) or key.startswith("."):
        raise ValueError(
            f"invalid KV key {key[:80]!r}: use 1-1024 characters from A-Z a-z 0-9 - / _ = . "
            "(encode other values with eventstore.subjects.encode_token)"
        )
    return key


class Blobs:
    """KV buckets and the object store of one deployment."""

    def __init__(self, js: JetStreamContext, object_bucket: str) -> None:
        self._js = js
        self._object_bucket = object_bucket

    async def kv_put(self, bucket: str, key: str, value: Any) -> int:
        kv = await self._js.key_value(bucket)
        return int(await kv.put(check_kv_key(key), json.dumps(value).encode()))

    async def kv_create(
        self, bucket: str, key: str, value: Any, *, ttl: float | None = None
    ) -> int:
        """Create ``key`` only if it does not exist (compare-and-set on revision 0).

        ``ttl`` (seconds, at least 1) makes this revision expire on its own (per-message
        TTL, nats-server 2.11+)."""
        kv = await self._js.key_value(bucket)
        try:
            return int(await kv.create(check_kv_key(key), json.dumps(value).encode(), msg_ttl=ttl))
        except KeyWrongLastSequenceError as exc:
            raise ConcurrencyError(f"{bucket}/{key}", 0, None) from exc

    async def kv_update(
        self, bucket: str, key: str, value: Any, last_revision: int, *, ttl: float | None = None
    ) -> int:
        """Replace ``key`` only if its revision is still ``last_revision``."""
        if ttl is None:
            kv = await self._js.key_value(bucket)
            try:
                return int(
                    await kv.update(
                        check_kv_key(key), json.dumps(value).encode(), last=last_revision
                    )
                )
            except KeyWrongLastSequenceError as exc:
                raise ConcurrencyError(f"{bucket}/{key}", last_revision, None) from exc
        # KeyValue.update takes no TTL; publish to the bucket's subject the same way it does.
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last_revision)}
        try:
            ack = await self._js.publish(
                f"$KV.{bucket}.{check_kv_key(key)}",
                json.dumps(value).encode(),
                headers=headers,
                msg_ttl=ttl,
            )
        except APIError as exc:
            if exc.err_code in (10071, 10164):  # wrong last sequence
                raise ConcurrencyError(f"{bucket}/{key}", last_revision, None) from exc
            raise
        return int(ack.seq)

    async def kv_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Live keys of ``bucket`` (below ``prefix``, a dot-terminated key prefix)."""
        kv = await self._js.key_value(bucket)
        try:
            # Filtered client-side: KeyValue.keys warns on every call that uses filters.
            keys = await kv.keys()
        except NoKeysError:
            return []
        return [key for key in keys if key.startswith(prefix)]

    async def kv_get(self, bucket: str, key: str) -> KVEntry | None:
        kv = await self._js.key_value(bucket)
        try:
            entry = await kv.get(check_kv_key(key))
        except (KeyNotFoundError, NotFoundError):
            return None
        if entry.value is None:
            return None
        return KVEntry(json.loads(entry.value), int(entry.revision or 0))

    async def kv_delete(self, bucket: str, key: str) -> None:
        kv = await self._js.key_value(bucket)
        await kv.delete(check_kv_key(key))

    async def put_object(self, name: str, data: bytes) -> StoredObject:
        store = await self._js.object_store(self._object_bucket)
        await store.put(name, data)
        return StoredObject(self._object_bucket, name, len(data), hashlib.sha256(data).hexdigest())

    async def get_object(self, ref: StoredObject) -> bytes:
        """Read an object back and check its size and sha256 against ``ref``."""
        store = await self._js.object_store(ref.bucket)
        try:
            result = await store.get(ref.name)
        except (NatsObjectNotFoundError, NotFoundError) as exc:
            raise EventStoreError(f"object {ref.bucket}/{ref.name} not found") from exc
        data = result.data or b""
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != ref.size or digest != ref.sha256:
            raise ObjectIntegrityError(
                f"object {ref.bucket}/{ref.name}: expected {ref.size} bytes sha256 {ref.sha256}, "
                f"got {len(data)} bytes sha256 {digest}"
            )
        return data


__all__ = ["Blobs", "KVEntry", "StoredObject", "check_kv_key"]
