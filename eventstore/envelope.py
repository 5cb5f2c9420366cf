"""The event envelope (DESIGN §3): identity, causality and a typed ``data`` payload.

Every catalog type subclasses :class:`Event`, narrows ``type`` to a ``Literal`` and
``data`` to its payload model, and states its current ``SCHEMA`` version. Bodies are
JSON only (G7). The stream sequence is the position and is never part of the body.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

MAX_ID_LENGTH = 256
"""Longest accepted id; ids become subject tokens, and longer ones are treated as hostile."""


def new_event_id() -> str:
    """A fresh random event id (32 hex characters)."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


IdField = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)


class Payload(BaseModel):
    """Base of every ``data`` payload: strict about unknown fields, immutable.

    Floats must be finite: JSON has no ``inf`` or ``NaN``, and pydantic would write them
    as ``null``, so a payload would not survive its own round trip.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Event(BaseModel):
    """Envelope fields shared by every event type.

    >>> from eventstore.catalog import MessageDelta, MessageDeltaData
    >>> ev = MessageDelta(session_id="s1", run_id="r1", data=MessageDeltaData(text="Hi"))
    >>> ev.type, ev.schema_version
    ('message.delta', 1)
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    SCHEMA: ClassVar[int] = 1
    """Current schema version of this type; older bodies are upcast on read."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("session_id",)
    """Envelope fields this type cannot do without (beyond ``type`` and ``data``)."""

    id: str = Field(default_factory=new_event_id, min_length=1, max_length=MAX_ID_LENGTH)
    type: str
    # No default in the schema: a body without "schema" is at the current version, filled
    # in by _check_envelope. (A mode="before" validator did this, but it made pydantic
    # build the whole body as Python objects first: decoding was a third slower.)
    schema_version: int = Field(default=None, alias="schema", ge=0)  # type: ignore[assignment]
    time: AwareDatetime = Field(default_factory=utc_now)
    session_id: str | None = IdField
    run_id: str | None = IdField
    parent_run_id: str | None = IdField
    root_run_id: str | None = IdField
    group_id: str | None = IdField
    agent_type: str | None = IdField
    worker_id: str | None = IdField
    trace_id: str | None = IdField
    user_code: str | None = IdField
    causation_id: str | None = IdField
    data: Payload

    @model_validator(mode="after")
    def _check_envelope(self) -> Event:
        if self.schema_version is None:
            object.__setattr__(self, "schema_version", self.SCHEMA)
        elif self.schema_version != self.SCHEMA:
            raise ValueError(
                f"{self.type} schema {self.schema_version} is not the current version "
                f"{self.SCHEMA}; older bodies must be upcast before validation"
            )
        missing = [name for name in self.REQUIRED if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.type} requires {', '.join(missing)}")
        if self.time.tzinfo is not UTC:
            # Stored in UTC so the JSON carries a "Z" (pydantic serializes it natively).
            object.__setattr__(self, "time", self.time.astimezone(UTC))
        return self

    def to_json(self) -> bytes:
        """The body as stored on the stream (UTF-8 JSON, ``None`` fields left out)."""
        # The serializer directly: this runs once per event on the bulk-append path.
        return self.__pydantic_serializer__.to_json(self, exclude_none=True, by_alias=True)


class RunEvent(Event):
    """An event emitted by or about one run: it needs both session and run ids."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("session_id", "run_id")


class SystemEvent(Event):
    """An event about the system (workers, plugins, ingest) rather than a session."""

    REQUIRED: ClassVar[tuple[str, ...]] = ()


__all__ = [
    "MAX_ID_LENGTH",
    "Event",
    "Payload",
    "RunEvent",
    "SystemEvent",
    "new_event_id",
    "utc_now",
]
