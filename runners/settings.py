"""Worker settings; every one can be overridden by a ``JETLEDGER_WORKER_<NAME>`` variable.

Every timeout is a setting so tests can run with one- or two-second values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Self

ENV_PREFIX = "JETLEDGER_WORKER_"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    max_concurrency: int = 8
    """Runs one worker process executes at once (its consumer slots)."""
    fetch_batch: int = 8
    """Most commands one pull request asks for; requests never exceed the free slots."""
    fetch_wait: float = 1.0
    """Lifetime of a pull request: an idle worker renews its requests this often."""
    ack_wait: float = 30.0
    """Seconds JetStream waits for an ack before redelivering a command (G1)."""
    max_deliver: int = 5
    """Attempts before a run ends ``run.dead_lettered``."""
    backoff: tuple[float, ...] = ()
    """Redelivery delays; NOTE: a non-empty list replaces ``ack_wait`` for redeliveries."""
    retry_delay: float = 1.0
    """Delay of the nak after a retryable failure."""
    drain_timeout: float = 30.0
    """Seconds in-flight runs get to finish on SIGTERM / SIGINT."""
    chunk_window: float = 0.05
    """At most one ``message.delta`` per window per run (G8); the first chunk after a
    quiet window is published at once."""
    cancel_watch_delay: float = 0.05
    """Seconds a handler runs before its worker follows the run's ``.end`` subject for a
    cancel written elsewhere (then it also reads a cancel that came earlier). Short runs
    end before that and never subscribe."""
    inline_artifact_limit: int = 64 * 1024
    """Artifacts up to this many bytes travel inline; larger ones go to the Object Store."""
    lease_ttl: float = 15.0
    """Seconds a worker's registry lease lives without a refresh (refreshed every third)."""
    registry_bucket: str = "jl_workers"
    """KV bucket holding one lease per live worker id (and the active plugin config)."""
    hook_timeout: float = 5.0
    """Seconds one plugin hook may run before it is abandoned (and counted as a timeout)."""
    run_timeout: float = 0.0
    """Seconds a run may take from its first start (0: no limit); a command's own
    ``timeout_s`` (``call_agent(timeout=...)``) takes precedence. Past it the run ends
    ``run.failed`` with code ``timeout`` and its subtree is cancelled."""
    plugin_dir: str = ""
    """A directory of plugin files (``runners.plugin_loading``); empty for none."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Self:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(ENV_PREFIX + spec.name.upper())
            if raw is None:
                continue
            default = getattr(cls(), spec.name)
            try:
                if isinstance(default, tuple):
                    values[spec.name] = tuple(float(p) for p in raw.split(",") if p.strip())
                else:
                    values[spec.name] = type(default)(raw)
            except ValueError as exc:
                raise ValueError(f"{ENV_PREFIX}{spec.name.upper()}={raw!r} is not valid") from exc
        given = {key: value for key, value in overrides.items() if value is not None}
        return replace(cls(**values), **given)

    @property
    def effective_ack_wait(self) -> float:
        """The shortest time JetStream waits for an ack: with a ``backoff`` list the server
        uses its delays instead of ``ack_wait`` (the first one for the first delivery)."""
        return min(self.ack_wait, *self.backoff) if self.backoff else self.ack_wait

    @property
    def in_progress_interval(self) -> float:
        """How often a live run tells JetStream it is still working (well inside the
        effective ack wait, so a live run is never redelivered)."""
        return max(0.1, self.effective_ack_wait / 3)


__all__ = ["WorkerSettings"]
