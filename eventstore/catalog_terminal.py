"""Terminal events (DESIGN §3, G2): exactly one per run, on ``jl.data.<sid>.<rid>.end``.

Re-exported by :mod:`eventstore.catalog`; import them from there.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, JsonValue

from eventstore.catalog_common import CancelMode, Content, ErrorInfo, IdStr, ShortText
from eventstore.envelope import Payload, RunEvent


class RunCompletedData(Payload):
    """The run succeeded: its final answer (``content``) and/or a structured ``result``
    (what a waiting parent receives)."""

    content: Content | None = None
    result: JsonValue = None
    finish_reason: Annotated[str, Field(min_length=1, max_length=64)] = "stop"


class RunCompleted(RunEvent):
    type: Literal["run.completed"] = "run.completed"
    data: RunCompletedData


class RunFailedData(Payload):
    """The run failed. ``code`` is a dotted machine-readable kind (``runner.exception``,
    ``runner.timeout``, ...); ``retryable`` is advice to the caller, the run itself is over.

    Schema 2; schema 1 carried ``error`` as a bare message string (the upcaster in
    :mod:`eventstore.catalog` converts it).
    """

    error: ErrorInfo
    code: Annotated[str, Field(min_length=1, max_length=128)] = "runner.error"
    retryable: bool = False


class RunFailed(RunEvent):
    SCHEMA: ClassVar[int] = 2

    type: Literal["run.failed"] = "run.failed"
    data: RunFailedData


class RunCancelledData(Payload):
    reason: ShortText | None = None
    requested_by: IdStr | None = None
    mode: CancelMode = "graceful"


class RunCancelled(RunEvent):
    type: Literal["run.cancelled"] = "run.cancelled"
    data: RunCancelledData


class RunDeadLetteredData(Payload):
    """The command was delivered ``attempts`` times without reaching a terminal event (G1)."""

    attempts: Annotated[int, Field(ge=1)]
    last_error: ErrorInfo | None = None


class RunDeadLettered(RunEvent):
    type: Literal["run.dead_lettered"] = "run.dead_lettered"
    data: RunDeadLetteredData


__all__ = [
    "RunCancelled",
    "RunCancelledData",
    "RunCompleted",
    "RunCompletedData",
    "RunDeadLettered",
    "RunDeadLetteredData",
    "RunFailed",
    "RunFailedData",
]
