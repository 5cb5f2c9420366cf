"""System events (DESIGN §3): worker lifecycle, plugin reloads and rejected input,
published on ``jl.sys.<kind>``.

Re-exported by :mod:`eventstore.catalog`; import them from there.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from eventstore.catalog_common import IdStr, ShortText
from eventstore.envelope import Payload, SystemEvent

MAX_EXCERPT_CHARS = 512
MAX_REJECTION_REASON_CHARS = 4096


class WorkerStartedData(Payload):
    agent_types: Annotated[list[IdStr], Field(min_length=1)]
    max_concurrency: Annotated[int, Field(ge=1)]
    version: Annotated[str, Field(max_length=64)] | None = None
    hostname: Annotated[str, Field(max_length=255)] | None = None
    pid: Annotated[int, Field(ge=1)] | None = None


class WorkerStarted(SystemEvent):
    REQUIRED: ClassVar[tuple[str, ...]] = ("worker_id",)

    type: Literal["worker.started"] = "worker.started"
    data: WorkerStartedData


class WorkerStoppedData(Payload):
    reason: ShortText | None = None


class WorkerStopped(SystemEvent):
    REQUIRED: ClassVar[tuple[str, ...]] = ("worker_id",)

    type: Literal["worker.stopped"] = "worker.stopped"
    data: WorkerStoppedData


class PluginsReloadedData(Payload):
    """One worker's answer to ``command.reload_plugins``: ``error`` says why when not ``ok``."""

    reload_id: IdStr
    plugins: list[IdStr] = Field(default_factory=list)
    ok: bool
    error: ShortText | None = None
    version_before: IdStr | None = None
    """The worker's plugin config version (sha256 hex) before the reload."""
    version_after: IdStr | None = None
    """The version it runs now (the same as before when the reload failed)."""

    @model_validator(mode="after")
    def _check_error(self) -> PluginsReloadedData:
        if not self.ok and not self.error:
            raise ValueError("a failed reload (ok=false) needs an 'error'")
        if self.ok and self.error is not None:
            raise ValueError("a successful reload (ok=true) takes no 'error'")
        return self


class PluginsReloaded(SystemEvent):
    REQUIRED: ClassVar[tuple[str, ...]] = ("worker_id",)

    type: Literal["plugins.reloaded"] = "plugins.reloaded"
    data: PluginsReloadedData


class IngestRejectedData(Payload):
    """A stored message that could not be understood (G6), kept with the reason why.

    This is the sink of last resort, so it never refuses input for being long:
    ``reason`` and ``body_excerpt`` are cut to their maximum length instead.
    """

    subject: str
    seq: Annotated[int, Field(ge=0, description="stream sequence of the message; 0 if unknown")]
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REJECTION_REASON_CHARS)]
    body_excerpt: Annotated[str, Field(max_length=MAX_EXCERPT_CHARS)] = ""
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("reason", mode="before")
    @classmethod
    def _cut_reason(cls, value: Any) -> Any:
        return _cut(value, MAX_REJECTION_REASON_CHARS)

    @field_validator("body_excerpt", mode="before")
    @classmethod
    def _cut_excerpt(cls, value: Any) -> Any:
        return _cut(value, MAX_EXCERPT_CHARS)


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


class IngestRejected(SystemEvent):
    type: Literal["ingest.rejected"] = "ingest.rejected"
    data: IngestRejectedData


__all__ = [
    "MAX_EXCERPT_CHARS",
    "IngestRejected",
    "IngestRejectedData",
    "PluginsReloaded",
    "PluginsReloadedData",
    "WorkerStarted",
    "WorkerStartedData",
    "WorkerStopped",
    "WorkerStoppedData",
]
