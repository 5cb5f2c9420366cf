"""The worker registry: one lease per worker id in a KV bucket.

Creating the lease claims the id, so a second process with the same id is refused at
start. Each write carries a per-message TTL: a worker that dies stops refreshing and its
lease disappears on its own, while a live worker refreshes it every third of the TTL,
including while it drains (by-framework stopped its heartbeat at the start of a drain,
so the id could be claimed twice while runs were still finishing). The lease is
released only after the drain ends.

The live leases are the registry clients read: :func:`get_active_workers`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext

from eventstore.blobs import Blobs
from eventstore.errors import ConcurrencyError, EventStoreError
from eventstore.subjects import encode_token

log = logging.getLogger(__name__)

LEASE_PREFIX = "worker."


class DuplicateWorkerError(RuntimeError):
    """Another live process holds this worker id."""


class LeaseLostError(RuntimeError):
    """This worker's lease was taken over by another process."""


@dataclass(frozen=True, slots=True)
class ActiveWorker:
    """One live lease: a worker that is running (or draining) now."""

    worker_id: str
    agent_types: tuple[str, ...]
    pid: int
    host: str
    started: str
    suspended: bool = False

    @classmethod
    def from_lease(cls, value: dict[str, Any]) -> ActiveWorker:
        return cls(
            worker_id=str(value["worker_id"]),
            agent_types=tuple(str(t) for t in value.get("agent_types", ())),
            pid=int(value.get("pid", 0)),
            host=str(value.get("host", "")),
            started=str(value.get("started", "")),
            suspended=bool(value.get("suspended", False)),
        )


def lease_key(worker_id: str) -> str:
    """The KV key of a worker's lease (``~`` is not a KV key character; ``=`` is)."""
    return LEASE_PREFIX + encode_token(worker_id).replace("~", "=")


def describe_holder(value: dict[str, Any]) -> str:
    return (
        f"pid {value.get('pid', '?')} on host {value.get('host', '?')} "
        f"(started {value.get('started', '?')})"
    )


class Lease:
    """This process's claim on ``worker_id``; every write is compare-and-set."""

    def __init__(
        self,
        blobs: Blobs,
        bucket: str,
        worker_id: str,
        agent_types: list[str],
        *,
        ttl: float,
    ) -> None:
        self.blobs = blobs
        self.bucket = bucket
        self.key = lease_key(worker_id)
        self.ttl = max(1.0, ttl)  # the server's per-message TTL has a one-second floor
        self.value: dict[str, Any] = {
            "worker_id": worker_id,
            "agent_types": list(agent_types),
            "pid": os.getpid(),
            "host": socket.gethostname()[:255],
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex,
            "suspended": False,
        }
        self.revision = 0
        self.lost = False
        self._writes = asyncio.Lock()

    @property
    def refresh_interval(self) -> float:
        return self.ttl / 3

    async def _try_create(self) -> bool:
        try:
            self.revision = await self.blobs.kv_create(
                self.bucket, self.key, self.value, ttl=self.ttl
            )
        except ConcurrencyError:
            return False
        return True

    async def _try_update(self, revision: int) -> bool:
        try:
            self.revision = await self.blobs.kv_update(
                self.bucket, self.key, self.value, revision, ttl=self.ttl
            )
        except ConcurrencyError:
            return False
        return True

    async def claim(self) -> None:
        """Claim the id or raise :class:`DuplicateWorkerError` naming the live holder."""
        async with self._writes:
            # Two tries: the holder's lease may expire between the create and the read.
            for _ in range(2):
                if await self._try_create():
                    return
                holder = await self.blobs.kv_get(self.bucket, self.key)
                if holder is not None:
                    break
            held_by = describe_holder(holder.value) if holder else "another process"
            raise DuplicateWorkerError(
                f"worker id {self.value['worker_id']!r} is already held by {held_by}; "
                f"stop that worker, or wait up to {self.ttl:g}s for a dead one's lease to expire"
            )

    async def refresh(self) -> None:
        """Write the lease again (a new TTL); :class:`LeaseLostError` if someone else has it."""
        async with self._writes:
            if self.lost:
                raise LeaseLostError(f"lease {self.key} was lost")
            if await self._try_update(self.revision):
                return
            current = await self.blobs.kv_get(self.bucket, self.key)
            if current is not None and current.value.get("token") == self.value["token"]:
                if await self._try_update(current.revision):
                    return
            elif current is None:
                # Expired (this process was paused past the TTL) and nobody took it.
                log.warning("lease %s had expired; claiming it again", self.key)
                if await self._try_create():
                    return
            current = await self.blobs.kv_get(self.bucket, self.key)
            self.lost = True
            holder = describe_holder(current.value) if current else "another process"
            raise LeaseLostError(
                f"the lease on worker id {self.value['worker_id']!r} is now held by {holder}"
            )

    async def set_suspended(self, suspended: bool) -> None:
        """Record suspension in the lease, so clients see it in the registry."""
        self.value["suspended"] = suspended
        await self.refresh()

    async def keep(self, on_lost: Callable[[LeaseLostError], None]) -> None:
        """Refresh until cancelled; on a lost lease, log it loudly and call ``on_lost``."""
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except LeaseLostError as exc:
                log.error(  # noqa: TRY400 - the message is the whole story
                    "LEASE LOST: %s; this worker stops fetching and drains", exc
                )
                on_lost(exc)
                return
            except (NatsError, EventStoreError, TimeoutError) as exc:
                # A transient broker error; the lease survives until its TTL runs out.
                log.warning("could not refresh lease %s: %s", self.key, exc)

    async def release(self) -> None:
        """Delete the lease if it is still this process's."""
        async with self._writes:
            if self.lost:
                return
            current = await self.blobs.kv_get(self.bucket, self.key)
            if current is not None and current.value.get("token") == self.value["token"]:
                await self.blobs.kv_delete(self.bucket, self.key)


async def ensure_registry(js: JetStreamContext, bucket: str, replicas: int = 1) -> None:
    """Create the registry bucket (a no-op when it exists with the same settings)."""
    await js.create_key_value(bucket=bucket, history=1, replicas=replicas)


async def get_active_workers(
    blobs: Blobs, bucket: str, agent_type: str | None = None
) -> list[ActiveWorker]:
    """Workers holding a live lease, optionally only those serving ``agent_type``."""
    workers = []
    for key in await blobs.kv_keys(bucket, LEASE_PREFIX):
        entry = await blobs.kv_get(bucket, key)
        if entry is None or not isinstance(entry.value, dict) or "worker_id" not in entry.value:
            continue
        worker = ActiveWorker.from_lease(entry.value)
        if agent_type is None or agent_type in worker.agent_types:
            workers.append(worker)
    return sorted(workers, key=lambda w: w.worker_id)


__all__ = [
    "ActiveWorker",
    "DuplicateWorkerError",
    "Lease",
    "LeaseLostError",
    "ensure_registry",
    "get_active_workers",
    "lease_key",
]
