"""Run output (DESIGN §3): everything a run emits on ``jl.data.<sid>.<rid>.out``.

Names and fields follow LangBot's AgentRunner result types where they overlap
(``message.*``, ``tool.call.*``, ``artifact.created``, ``state.updated``, ``steering.*``).

Re-exported by :mod:`eventstore.catalog`; import them from there.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from eventstore.catalog_common import Content, IdStr, ObjectRef, ShortText
from eventstore.envelope import Payload, RunEvent

MAX_INLINE_ARTIFACT_BYTES = 256 * 1024
"""Largest artifact carried inline (decoded). Base64 grows it by a third, and the event
must stay well under the stream's 1 MiB message limit; anything larger goes to the
Object Store and travels as a ``ref``."""

_MAX_INLINE_BASE64_CHARS = 4 * -(-MAX_INLINE_ARTIFACT_BYTES // 3)


class RunStartedData(Payload):
    """A worker began (or, after a redelivery or resume, began again) to execute a run."""

    attempt: Annotated[int, Field(ge=1, description="JetStream delivery count of the command")]
    command_seq: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="stream sequence of the command being executed"
    )


class RunStarted(RunEvent):
    REQUIRED: ClassVar[tuple[str, ...]] = ("session_id", "run_id", "worker_id")

    type: Literal["run.started"] = "run.started"
    data: RunStartedData


class MessageDeltaData(Payload):
    """A chunk of assistant text; runners coalesce token chunks (G8), ``index`` counts them."""

    text: str
    index: Annotated[int, Field(ge=0)] = 0


class MessageDelta(RunEvent):
    type: Literal["message.delta"] = "message.delta"
    data: MessageDeltaData


class MessageCompletedData(Payload):
    """A whole message; the first one of a run becomes its assistant transcript turn."""

    content: Content
    role: Literal["assistant", "system", "tool"] = "assistant"


class MessageCompleted(RunEvent):
    type: Literal["message.completed"] = "message.completed"
    data: MessageCompletedData


class RunStateData(Payload):
    """A state / progress line (by-framework ``emit_state``)."""

    state: Annotated[str, Field(min_length=1, max_length=256)]
    progress: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    detail: ShortText | None = None


class RunState(RunEvent):
    type: Literal["run.state"] = "run.state"
    data: RunStateData


class ToolCallStartedData(Payload):
    tool_call_id: IdStr
    tool_name: IdStr
    parameters: dict[str, JsonValue] = Field(default_factory=dict)


class ToolCallStarted(RunEvent):
    type: Literal["tool.call.started"] = "tool.call.started"
    data: ToolCallStartedData


class ToolCallCompletedData(Payload):
    """The outcome of a tool call: ``result`` inline, or ``result_ref`` when it is large,
    and ``error`` when the tool failed."""

    tool_call_id: IdStr
    tool_name: IdStr
    result: JsonValue = None
    error: ShortText | None = None
    duration_ms: Annotated[int, Field(ge=0)] | None = None
    result_ref: ObjectRef | None = None

    @model_validator(mode="after")
    def _check_result(self) -> ToolCallCompletedData:
        if self.result is not None and self.result_ref is not None:
            raise ValueError("give the tool result inline ('result') or by 'result_ref', not both")
        return self


class ToolCallCompleted(RunEvent):
    type: Literal["tool.call.completed"] = "tool.call.completed"
    data: ToolCallCompletedData


class ArtifactCreatedData(Payload):
    """A file the run produced: inline as ``content_base64`` when it is at most
    :data:`MAX_INLINE_ARTIFACT_BYTES`, otherwise stored and referenced by ``ref``."""

    artifact_id: IdStr
    artifact_type: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(max_length=1024)] | None = None
    mime_type: Annotated[str, Field(max_length=255)] | None = None
    content_base64: str | None = None
    ref: ObjectRef | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("content_base64")
    @classmethod
    def _check_inline(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > _MAX_INLINE_BASE64_CHARS:
            raise ValueError(
                f"inline content is larger than {MAX_INLINE_ARTIFACT_BYTES} bytes; "
                "put it in the object store and send a 'ref'"
            )
        try:
            decoded_size = len(base64.b64decode(value, validate=True))
        except binascii.Error as exc:
            raise ValueError(f"content_base64 is not valid base64: {exc}") from exc
        if decoded_size > MAX_INLINE_ARTIFACT_BYTES:
            raise ValueError(
                f"inline content is {decoded_size} bytes, more than {MAX_INLINE_ARTIFACT_BYTES}; "
                "put it in the object store and send a 'ref'"
            )
        return value

    @model_validator(mode="after")
    def _check_one_source(self) -> ArtifactCreatedData:
        if (self.content_base64 is None) == (self.ref is None):
            raise ValueError("an artifact needs exactly one of 'content_base64' or 'ref'")
        return self

    @property
    def size(self) -> int:
        """Size of the artifact in bytes, inline or stored."""
        if self.ref is not None:
            return self.ref.size
        return len(base64.b64decode(self.content_base64 or ""))


class ArtifactCreated(RunEvent):
    type: Literal["artifact.created"] = "artifact.created"
    data: ArtifactCreatedData


StateScope = Literal["session", "user", "agent_type", "global"]


class StateUpdatedData(Payload):
    """Set a key of the key/value state; the scope's owner comes from the envelope
    (``session_id``, ``user_code`` or ``agent_type``)."""

    scope: StateScope
    key: Annotated[str, Field(min_length=1, max_length=256)]
    value: JsonValue = None


class StateUpdated(RunEvent):
    type: Literal["state.updated"] = "state.updated"
    data: StateUpdatedData


class RunWaitingData(Payload):
    """The run is suspended (G5) until its children or its group answer."""

    on: Literal["child", "group"]
    child_run_ids: list[IdStr] = Field(default_factory=list)
    group_id: IdStr | None = None
    timeout_s: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _check_target(self) -> RunWaitingData:
        if self.on == "child" and not self.child_run_ids:
            raise ValueError("waiting on a child needs at least one 'child_run_ids' entry")
        if self.on == "group" and self.group_id is None:
            raise ValueError("waiting on a group needs its 'group_id'")
        return self


class RunWaiting(RunEvent):
    type: Literal["run.waiting"] = "run.waiting"
    data: RunWaitingData


class RunAskedUserData(Payload):
    """The run is suspended until a human answers ``question_id`` with ``command.resume``.

    ``answer_schema`` is an optional JSON Schema the answer should satisfy (it is not
    named ``schema``, which is the envelope's version field).
    """

    question_id: IdStr
    prompt: str
    answer_schema: dict[str, JsonValue] | None = None
    timeout_s: Annotated[float, Field(gt=0)] | None = None


class RunAskedUser(RunEvent):
    type: Literal["run.asked_user"] = "run.asked_user"
    data: RunAskedUserData


class SteeringInjectedData(Payload):
    """A ``command.steer`` (``steer_event_id``) was handed to the running handler."""

    steer_event_id: IdStr
    content: Content | None = None


class SteeringInjected(RunEvent):
    type: Literal["steering.injected"] = "steering.injected"
    data: SteeringInjectedData


class SteeringDroppedData(Payload):
    """A ``command.steer`` was never handed over, and why (e.g. ``run_ended``)."""

    steer_event_id: IdStr
    reason: Annotated[str, Field(min_length=1, max_length=4096)]
    content: Content | None = None


class SteeringDropped(RunEvent):
    type: Literal["steering.dropped"] = "steering.dropped"
    data: SteeringDroppedData


STRATEGY_PATTERN = "^(all|race|quorum:[1-9][0-9]*)$"
_STRATEGY = re.compile(STRATEGY_PATTERN)


def parse_strategy(strategy: str) -> tuple[Literal["all", "race", "quorum"], int | None]:
    """``"quorum:3"`` -> ``("quorum", 3)``; ``"all"`` / ``"race"`` come with ``None``.

    Raises :class:`ValueError` for anything else.
    """
    if not _STRATEGY.fullmatch(strategy):
        raise ValueError(
            f"strategy must be 'all', 'race' or 'quorum:<n>' with n >= 1, got {strategy[:80]!r}"
        )
    if strategy == "all":
        return "all", None
    if strategy == "race":
        return "race", None
    return "quorum", int(strategy.removeprefix("quorum:"))


class GroupMember(Payload):
    index: Annotated[int, Field(ge=0)]
    run_id: IdStr
    agent_type: IdStr
    content: Content
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class GroupDispatchedData(Payload):
    """A run fanned out to ``members`` (scatter-gather); the envelope's ``group_id``
    names the group. ``all`` waits for every member, ``race`` for the first success,
    ``quorum:<n>`` for n successes."""

    strategy: Annotated[
        str, Field(json_schema_extra={"pattern": STRATEGY_PATTERN}, examples=["quorum:2"])
    ]
    members: Annotated[list[GroupMember], Field(min_length=1)]
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    max_concurrent: Annotated[int, Field(ge=1)] | None = None

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: str) -> str:
        parse_strategy(value)
        return value

    @model_validator(mode="after")
    def _check_members(self) -> GroupDispatchedData:
        indexes = [member.index for member in self.members]
        if indexes != list(range(len(self.members))):
            raise ValueError(f"member indexes must be 0..{len(self.members) - 1} in order")
        run_ids = [member.run_id for member in self.members]
        if len(set(run_ids)) != len(run_ids):
            raise ValueError("member run_ids must be unique")
        if self.required_successes > len(self.members):
            raise ValueError(
                f"strategy {self.strategy} needs more successes than the group has "
                f"members ({len(self.members)})"
            )
        return self

    @property
    def required_successes(self) -> int:
        """How many members must complete for the group to complete."""
        kind, quorum = parse_strategy(self.strategy)
        if quorum is not None:
            return quorum
        return len(self.members) if kind == "all" else 1


class GroupDispatched(RunEvent):
    REQUIRED: ClassVar[tuple[str, ...]] = ("session_id", "run_id", "group_id")

    type: Literal["group.dispatched"] = "group.dispatched"
    data: GroupDispatchedData


__all__ = [
    "MAX_INLINE_ARTIFACT_BYTES",
    "STRATEGY_PATTERN",
    "ArtifactCreated",
    "ArtifactCreatedData",
    "GroupDispatched",
    "GroupDispatchedData",
    "GroupMember",
    "MessageCompleted",
    "MessageCompletedData",
    "MessageDelta",
    "MessageDeltaData",
    "RunAskedUser",
    "RunAskedUserData",
    "RunStarted",
    "RunStartedData",
    "RunState",
    "RunStateData",
    "RunWaiting",
    "RunWaitingData",
    "StateScope",
    "StateUpdated",
    "StateUpdatedData",
    "SteeringDropped",
    "SteeringDroppedData",
    "SteeringInjected",
    "SteeringInjectedData",
    "ToolCallCompleted",
    "ToolCallCompletedData",
    "ToolCallStarted",
    "ToolCallStartedData",
    "parse_strategy",
]
