"""The event catalog (DESIGN §3): every event type, its payload and its schema version.

The models live in four modules by kind (commands, run output, terminal, system) and
are all re-exported here, so ``from eventstore.catalog import RunFailed`` is the one
import to use.

>>> ev = CATALOG["message.delta"].model_validate(
...     {"type": "message.delta", "session_id": "s1", "run_id": "r1", "data": {"text": "Hi"}}
... )
>>> type(ev).__name__, ev.type in TERMINAL_TYPES
('MessageDelta', False)
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Final

from pydantic import Field, TypeAdapter

from eventstore.catalog_commands import (
    CommandAsk,
    CommandAskData,
    CommandCancel,
    CommandCancelData,
    CommandReloadPlugins,
    CommandReloadPluginsData,
    CommandResume,
    CommandResumeData,
    CommandSteer,
    CommandSteerData,
    CommandWorker,
    CommandWorkerData,
    ReplyTo,
    ResumeReason,
    TerminalStatus,
)
from eventstore.catalog_common import (
    SHA256_PATTERN,
    CancelMode,
    Content,
    ContentPart,
    ErrorInfo,
    IdStr,
    ObjectRef,
    content_text,
)
from eventstore.catalog_orchestration import (
    ChildOutcome,
    OutcomeStatus,
    RunCalled,
    RunCalledData,
    RunResumed,
    RunResumedData,
    StepKind,
)
from eventstore.catalog_runs import (
    MAX_INLINE_ARTIFACT_BYTES,
    STRATEGY_PATTERN,
    ArtifactCreated,
    ArtifactCreatedData,
    GroupDispatched,
    GroupDispatchedData,
    GroupMember,
    MessageCompleted,
    MessageCompletedData,
    MessageDelta,
    MessageDeltaData,
    RunAskedUser,
    RunAskedUserData,
    RunStarted,
    RunStartedData,
    RunState,
    RunStateData,
    RunWaiting,
    RunWaitingData,
    StateScope,
    StateUpdated,
    StateUpdatedData,
    SteeringDropped,
    SteeringDroppedData,
    SteeringInjected,
    SteeringInjectedData,
    ToolCallCompleted,
    ToolCallCompletedData,
    ToolCallStarted,
    ToolCallStartedData,
    parse_strategy,
)
from eventstore.catalog_system import (
    MAX_EXCERPT_CHARS,
    IngestRejected,
    IngestRejectedData,
    PluginsReloaded,
    PluginsReloadedData,
    WorkerStarted,
    WorkerStartedData,
    WorkerStopped,
    WorkerStoppedData,
)
from eventstore.catalog_terminal import (
    RunCancelled,
    RunCancelledData,
    RunCompleted,
    RunCompletedData,
    RunDeadLettered,
    RunDeadLetteredData,
    RunFailed,
    RunFailedData,
)
from eventstore.envelope import Event
from eventstore.upcasting import UPCASTERS

EVENT_CLASSES: Final[tuple[type[Event], ...]] = (
    CommandAsk,
    CommandResume,
    CommandCancel,
    CommandSteer,
    CommandReloadPlugins,
    CommandWorker,
    RunStarted,
    MessageDelta,
    MessageCompleted,
    RunState,
    ToolCallStarted,
    ToolCallCompleted,
    ArtifactCreated,
    StateUpdated,
    RunWaiting,
    RunAskedUser,
    RunCalled,
    RunResumed,
    SteeringInjected,
    SteeringDropped,
    RunCompleted,
    RunFailed,
    RunCancelled,
    RunDeadLettered,
    GroupDispatched,
    WorkerStarted,
    WorkerStopped,
    PluginsReloaded,
    IngestRejected,
)
"""Every event class, in catalog order."""

AnyEvent = Annotated[
    CommandAsk
    | CommandResume
    | CommandCancel
    | CommandSteer
    | CommandReloadPlugins
    | CommandWorker
    | RunStarted
    | MessageDelta
    | MessageCompleted
    | RunState
    | ToolCallStarted
    | ToolCallCompleted
    | ArtifactCreated
    | StateUpdated
    | RunWaiting
    | RunAskedUser
    | RunCalled
    | RunResumed
    | SteeringInjected
    | SteeringDropped
    | RunCompleted
    | RunFailed
    | RunCancelled
    | RunDeadLettered
    | GroupDispatched
    | WorkerStarted
    | WorkerStopped
    | PluginsReloaded
    | IngestRejected,
    Field(discriminator="type"),
]
"""Any event of the catalog, told apart by ``type`` (for ``TypeAdapter`` and FastAPI)."""


def event_type_of(event_class: type[Event]) -> str:
    """The ``type`` string of a catalog class (the default of its ``Literal`` field)."""
    default = event_class.model_fields["type"].default
    if not isinstance(default, str):
        raise TypeError(f"{event_class.__name__} has no literal default for 'type'")
    return default


def _build_catalog(classes: tuple[type[Event], ...]) -> dict[str, type[Event]]:
    catalog: dict[str, type[Event]] = {}
    for event_class in classes:
        event_type = event_type_of(event_class)
        if event_type in catalog:
            raise RuntimeError(
                f"event type {event_type!r} is defined twice: by "
                f"{catalog[event_type].__name__} and {event_class.__name__}"
            )
        catalog[event_type] = event_class
    return catalog


CATALOG: Final[dict[str, type[Event]]] = _build_catalog(EVENT_CLASSES)
"""Event type string -> its model class."""

EVENT_TYPES: Final[tuple[str, ...]] = tuple(CATALOG)
COMMAND_TYPES: Final[frozenset[str]] = frozenset(t for t in CATALOG if t.startswith("command."))
TERMINAL_TYPES: Final[frozenset[str]] = frozenset(
    {"run.completed", "run.failed", "run.cancelled", "run.dead_lettered"}
)
"""The types of which each run has exactly one, on its ``.end`` subject (G2)."""

SCHEMA_ID = "urn:jetledger:schema:events"


@UPCASTERS.register("run.failed", from_version=1)
def _run_failed_error_string_to_error_info(body: dict[str, Any]) -> dict[str, Any]:
    """run.failed 1 -> 2: ``error`` was a bare message string (as in LangBot's
    ``{error, code="runner.error", retryable=False}``); it becomes ``ErrorInfo``.

    A v1 body without a message is still a run's terminal event, so it is upcast with a
    placeholder message rather than lost.
    """
    data = body.get("data")
    if not isinstance(data, dict):
        return body  # validation will say what is wrong with it
    upgraded = dict(data)
    error = upgraded.get("error")
    if error is None:
        upgraded["error"] = {"type": "Error", "message": "no error message was recorded"}
    elif not isinstance(error, dict):
        upgraded["error"] = {"type": "Error", "message": str(error)}
    upgraded.setdefault("code", "runner.error")
    upgraded.setdefault("retryable", False)
    return {**body, "data": upgraded}


@functools.cache
def _event_adapter() -> TypeAdapter[AnyEvent]:
    return TypeAdapter(AnyEvent)


def catalog_json_schema() -> dict[str, Any]:
    """One JSON Schema (draft 2020-12) document for every event body of the catalog.

    Printed by ``jetledger schema``. Each event definition marks the envelope fields its
    type requires, and ``x-schema-versions`` maps every type to its current version.
    """
    schema = _event_adapter().json_schema(by_alias=True)
    definitions = schema.get("$defs", {})
    for event_class in EVENT_CLASSES:
        _tighten_event_definition(definitions[event_class.__name__], event_class)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "jetledger event",
        "description": (
            "The body of every event on the jetledger log (UTF-8 JSON), discriminated by "
            "'type'. Bodies with an older 'schema' are upcast by readers."
        ),
        "x-schema-versions": {event_type_of(c): c.SCHEMA for c in EVENT_CLASSES},
        **schema,
    }


def _tighten_event_definition(definition: dict[str, Any], event_class: type[Event]) -> None:
    # The envelope is one model with optional fields and per-type rules checked in a
    # validator; spell those rules out so foreign publishers can rely on the schema.
    properties: dict[str, Any] = definition["properties"]
    properties["schema"] = {
        **properties["schema"],
        "default": event_class.SCHEMA,
        "maximum": event_class.SCHEMA,
        "description": f"schema version; current is {event_class.SCHEMA}, older ones are upcast",
    }
    required = set(definition.get("required", ())) | {"type", "data"}
    for name in event_class.REQUIRED:
        field = properties[name]
        non_null = [v for v in field.get("anyOf", ()) if v.get("type") != "null"]
        if len(non_null) == 1:
            properties[name] = {
                **{k: v for k, v in field.items() if k not in ("anyOf", "default")},
                **non_null[0],
            }
        required.add(name)
    definition["required"] = sorted(required)


__all__ = [
    "CATALOG",
    "COMMAND_TYPES",
    "EVENT_CLASSES",
    "EVENT_TYPES",
    "MAX_EXCERPT_CHARS",
    "MAX_INLINE_ARTIFACT_BYTES",
    "SCHEMA_ID",
    "SHA256_PATTERN",
    "STRATEGY_PATTERN",
    "TERMINAL_TYPES",
    "AnyEvent",
    "ArtifactCreated",
    "ArtifactCreatedData",
    "CancelMode",
    "ChildOutcome",
    "CommandAsk",
    "CommandAskData",
    "CommandCancel",
    "CommandCancelData",
    "CommandReloadPlugins",
    "CommandReloadPluginsData",
    "CommandResume",
    "CommandResumeData",
    "CommandSteer",
    "CommandSteerData",
    "CommandWorker",
    "CommandWorkerData",
    "Content",
    "ContentPart",
    "ErrorInfo",
    "GroupDispatched",
    "GroupDispatchedData",
    "GroupMember",
    "IdStr",
    "IngestRejected",
    "IngestRejectedData",
    "MessageCompleted",
    "MessageCompletedData",
    "MessageDelta",
    "MessageDeltaData",
    "ObjectRef",
    "OutcomeStatus",
    "PluginsReloaded",
    "PluginsReloadedData",
    "ReplyTo",
    "ResumeReason",
    "RunAskedUser",
    "RunAskedUserData",
    "RunCalled",
    "RunCalledData",
    "RunCancelled",
    "RunCancelledData",
    "RunCompleted",
    "RunCompletedData",
    "RunDeadLettered",
    "RunDeadLetteredData",
    "RunFailed",
    "RunFailedData",
    "RunResumed",
    "RunResumedData",
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
    "StepKind",
    "TerminalStatus",
    "ToolCallCompleted",
    "ToolCallCompletedData",
    "ToolCallStarted",
    "ToolCallStartedData",
    "WorkerStarted",
    "WorkerStartedData",
    "WorkerStopped",
    "WorkerStoppedData",
    "catalog_json_schema",
    "content_text",
    "event_type_of",
    "parse_strategy",
]
