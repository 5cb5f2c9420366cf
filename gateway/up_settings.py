"""Settings and options of ``jetledger up``; every timeout can be set from the
environment (``JETLEDGER_UP_<NAME>``) or an option, so tests run with short ones."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Self

ENV_PREFIX = "JETLEDGER_UP_"


@dataclass(frozen=True, slots=True)
class UpSettings:
    """Timeouts of ``up``; each can be set as ``JETLEDGER_UP_<NAME>`` or an option."""

    nats_start_timeout: float = 10.0
    """Seconds the embedded nats-server gets to accept connections."""
    ready_timeout: float = 60.0
    """Seconds the children get to be ready: the API answers /healthz, the worker polls."""
    stop_timeout: float = 20.0
    """Seconds each child gets to stop after SIGTERM before it is killed."""
    poll_interval: float = 0.1
    """How often readiness, dead children and stopped children are checked."""
    worker_id: str = "up-echo"
    """The demo worker's id: stable, so a second ``up`` reuses it."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Self:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(ENV_PREFIX + spec.name.upper())
            if raw is not None:
                try:
                    values[spec.name] = type(getattr(cls(), spec.name))(raw)
                except ValueError as exc:
                    raise ValueError(
                        f"{ENV_PREFIX}{spec.name.upper()}={raw!r} is not valid"
                    ) from exc
        given = {key: value for key, value in overrides.items() if value is not None}
        return replace(cls(**values), **given)


@dataclass(frozen=True, slots=True)
class UpOptions:
    """Where things live and which servers to use."""

    data_dir: Path
    nats_url: str | None = None
    """An existing NATS server; ``None`` runs the embedded one under ``data_dir/nats``."""
    db_url: str | None = None
    """The read model; ``None`` is SQLite at ``data_dir/readmodel.db``."""
    api_port: int | None = None
    """``None``: 8000, or a free port when 8000 is taken; 0: a free port."""
    api_host: str = "127.0.0.1"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'readmodel.db'}"


__all__ = ["UpOptions", "UpSettings"]
