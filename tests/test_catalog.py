"""Unit tests of the event catalog: shapes, round trips, validation messages, JSON Schema."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import JsonValue, TypeAdapter, ValidationError

from eventstore.catalog import (
    CATALOG,
    COMMAND_TYPES,
    EVENT_CLASSES,
    EVENT_TYPES,
    MAX_EXCERPT_CHARS,
    MAX_INLINE_ARTIFACT_BYTES,
    TERMINAL_TYPES,
    AnyEvent,
    ArtifactCreatedData,
    CommandAsk,
    CommandAskData,
    CommandResumeData,
    ContentPart,
    GroupDispatchedData,
    GroupMember,
    IngestRejectedData,
    MessageDelta,
    MessageDeltaData,
    ObjectRef,
    PluginsReloadedData,
    RunFailed,
    RunWaitingData,
    ToolCallCompletedData,
    catalog_json_schema,
    content_text,
    event_type_of,
    parse_strategy,
)
from eventstore.catalog_examples import example_events
from eventstore.envelope import Event, RunEvent, SystemEvent

DESIGN_TYPES = [
    "command.ask",
    "command.resume",
    "command.cancel",
    "command.steer",
    "command.reload_plugins",
    "command.worker",
    "run.started",
    "message.delta",
    "message.completed",
    "run.state",
    "tool.call.started",
    "tool.call.completed",
    "artifact.created",
    "state.updated",
    "run.waiting",
    "run.asked_user",
    "run.called",  # journal entries of orchestration steps (docs/decisions.md)
    "run.resumed",
    "steering.injected",
    "steering.dropped",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.dead_lettered",
    "group.dispatched",
    "worker.started",
    "worker.stopped",
    "plugins.reloaded",
    "ingest.rejected",
]
SYSTEM_TYPES = {"worker.started", "worker.stopped", "plugins.reloaded", "ingest.rejected"}

EXAMPLES = {event.type: event for event in example_events()}
SHA = hashlib.sha256(b"hello").hexdigest()


def body_of(event: Event) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(event.to_json())
    return decoded


def camel_case(event_type: str) -> str:
    return "".join(word.capitalize() for word in re.split(r"[._]", event_type))


def ref(**overrides: Any) -> ObjectRef:
    return ObjectRef(**{"bucket": "b", "name": "n", "size": 5, "sha256": SHA, **overrides})


def members(count: int) -> list[GroupMember]:
    return [
        GroupMember(index=i, run_id=f"r{i}", agent_type="summarizer", content="x")
        for i in range(count)
    ]


# -- the catalog as a whole ------------------------------------------------------------


def test_catalog_lists_exactly_the_design_types_in_order() -> None:
    assert list(EVENT_TYPES) == DESIGN_TYPES
    assert tuple(CATALOG.values()) == EVENT_CLASSES
    assert {event_type_of(cls) for cls in EVENT_CLASSES} == set(DESIGN_TYPES)


def test_type_sets() -> None:
    assert {t for t in DESIGN_TYPES if t.startswith("command.")} == COMMAND_TYPES
    assert {"run.completed", "run.failed", "run.cancelled", "run.dead_lettered"} == TERMINAL_TYPES


@pytest.mark.parametrize("event_type", DESIGN_TYPES)
def test_class_names_and_bases_follow_the_type(event_type: str) -> None:
    cls = CATALOG[event_type]
    assert cls.__name__ == camel_case(event_type)
    assert cls.model_fields["data"].annotation.__name__ == f"{cls.__name__}Data"  # type: ignore[union-attr]
    if event_type in SYSTEM_TYPES:
        assert issubclass(cls, SystemEvent)
    elif event_type in COMMAND_TYPES:
        assert not issubclass(cls, RunEvent | SystemEvent)
    else:
        assert issubclass(cls, RunEvent)


def test_examples_cover_every_type_once_and_are_stable() -> None:
    events = example_events()
    assert sorted(event.type for event in events) == sorted(DESIGN_TYPES)
    assert example_events() == events
    assert len({event.id for event in events}) == len(events)


# -- every type round-trips ------------------------------------------------------------


@pytest.mark.parametrize("event_type", DESIGN_TYPES)
def test_json_round_trip(event_type: str) -> None:
    event = EXAMPLES[event_type]
    cls = CATALOG[event_type]
    assert type(event) is cls
    assert cls.model_validate_json(event.to_json()) == event
    assert TypeAdapter(AnyEvent).validate_json(event.to_json()) == event


@pytest.mark.parametrize("event_type", DESIGN_TYPES)
def test_body_carries_schema_version_and_no_nulls(event_type: str) -> None:
    body = body_of(EXAMPLES[event_type])
    assert body["schema"] == CATALOG[event_type].SCHEMA
    assert body["type"] == event_type
    assert "schema_version" not in body
    assert body["time"].endswith("Z")
    assert None not in body.values()


def test_run_failed_is_at_schema_2() -> None:
    assert RunFailed.SCHEMA == 2
    assert all(cls.SCHEMA == 1 for cls in EVENT_CLASSES if cls is not RunFailed)


def test_body_without_schema_is_read_as_current() -> None:
    body = body_of(EXAMPLES["run.failed"])
    del body["schema"]
    assert RunFailed.model_validate(body).schema_version == 2


def test_old_schema_must_be_upcast_before_validation() -> None:
    body = body_of(EXAMPLES["run.failed"])
    body["schema"] = 1
    with pytest.raises(ValidationError, match="must be upcast"):
        RunFailed.model_validate(body)


def test_non_finite_floats_are_rejected() -> None:
    with pytest.raises(ValidationError, match="finite number"):
        CommandAskData(content="hi", metadata={"score": float("inf")})
    with pytest.raises(ValidationError, match="finite number"):
        ToolCallCompletedData(tool_call_id="t", tool_name="n", result=[float("nan")])


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=20), JSON_VALUES))
def test_free_form_metadata_round_trips(metadata: dict[str, JsonValue]) -> None:
    event = CommandAsk(session_id="s", data=CommandAskData(content="hi", metadata=metadata))
    assert CommandAsk.model_validate_json(event.to_json()) == event


# -- envelope rules ---------------------------------------------------------------------


REQUIRED_CASES = [(t, name) for t in DESIGN_TYPES for name in CATALOG[t].REQUIRED]


@pytest.mark.parametrize(("event_type", "field"), REQUIRED_CASES)
def test_missing_required_envelope_field_is_named(event_type: str, field: str) -> None:
    body = body_of(EXAMPLES[event_type])
    body.pop(field, None)
    with pytest.raises(ValidationError, match=rf"{re.escape(event_type)} requires {field}"):
        CATALOG[event_type].model_validate(body)


def test_required_envelope_fields_per_kind() -> None:
    assert CATALOG["command.ask"].REQUIRED == ("session_id",)
    assert CATALOG["message.delta"].REQUIRED == ("session_id", "run_id")
    assert "worker_id" in CATALOG["run.started"].REQUIRED
    assert "group_id" in CATALOG["group.dispatched"].REQUIRED
    assert CATALOG["ingest.rejected"].REQUIRED == ()
    assert CATALOG["command.worker"].REQUIRED == ()


def test_missing_data_is_rejected() -> None:
    with pytest.raises(ValidationError, match="data"):
        MessageDelta.model_validate({"type": "message.delta", "session_id": "s", "run_id": "r"})


@pytest.mark.parametrize("event_type", DESIGN_TYPES)
def test_extra_envelope_field_is_rejected(event_type: str) -> None:
    body = {**body_of(EXAMPLES[event_type]), "colour": "blue"}
    with pytest.raises(ValidationError, match="colour"):
        CATALOG[event_type].model_validate(body)


@pytest.mark.parametrize("event_type", DESIGN_TYPES)
def test_extra_payload_field_is_rejected(event_type: str) -> None:
    body = body_of(EXAMPLES[event_type])
    body["data"]["colour"] = "blue"
    with pytest.raises(ValidationError, match=r"data\.colour"):
        CATALOG[event_type].model_validate(body)


def test_wrong_type_literal_is_rejected() -> None:
    body = {**body_of(EXAMPLES["message.delta"]), "type": "message.completed"}
    with pytest.raises(ValidationError):
        MessageDelta.model_validate(body)


def test_events_are_immutable() -> None:
    event = EXAMPLES["message.delta"]
    with pytest.raises(ValidationError):
        event.session_id = "other"  # type: ignore[misc]


def test_hostile_id_is_rejected() -> None:
    with pytest.raises(ValidationError, match="run_id"):
        MessageDelta(session_id="s", run_id="x" * 1000, data=MessageDeltaData(text="hi"))


# -- payload rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "required"), [("all", 3), ("race", 1), ("quorum:1", 1), ("quorum:3", 3)]
)
def test_good_strategies(strategy: str, required: int) -> None:
    data = GroupDispatchedData(strategy=strategy, members=members(3))
    assert data.required_successes == required


@pytest.mark.parametrize(
    "strategy", ["any", "ALL", "all ", "quorum", "quorum:", "quorum:0", "quorum:-1", "quorum:01"]
)
def test_bad_strategy_is_rejected(strategy: str) -> None:
    with pytest.raises(ValidationError, match="strategy must be 'all', 'race' or 'quorum:<n>'"):
        GroupDispatchedData(strategy=strategy, members=members(2))


def test_quorum_larger_than_group_is_rejected() -> None:
    with pytest.raises(ValidationError, match="more successes than the group has members"):
        GroupDispatchedData(strategy="quorum:3", members=members(2))


def test_group_members_are_indexed_in_order_and_unique() -> None:
    with pytest.raises(ValidationError, match=r"indexes must be 0\.\.1"):
        GroupDispatchedData(strategy="all", members=list(reversed(members(2))))
    twins = [m.model_copy(update={"run_id": "same"}) for m in members(2)]
    with pytest.raises(ValidationError, match="run_ids must be unique"):
        GroupDispatchedData(strategy="all", members=twins)
    with pytest.raises(ValidationError, match="at least 1"):
        GroupDispatchedData(strategy="all", members=[])


def test_parse_strategy() -> None:
    assert parse_strategy("quorum:12") == ("quorum", 12)
    assert parse_strategy("race") == ("race", None)
    with pytest.raises(ValueError, match="got 'first'"):
        parse_strategy("first")


@pytest.mark.parametrize(
    "sha256",
    [SHA.upper(), SHA[:-1], SHA + "0", "g" * 64, "", f" {SHA[1:]}"],
)
def test_bad_sha256_is_rejected(sha256: str) -> None:
    with pytest.raises(ValidationError, match="sha256 must be 64 lowercase hex characters"):
        ref(sha256=sha256)


def test_object_ref_rules() -> None:
    assert ref().sha256 == SHA
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ref(size=-1)
    with pytest.raises(ValidationError, match="bucket"):
        ref(bucket="")


def test_artifact_needs_exactly_one_of_inline_or_ref() -> None:
    inline = base64.b64encode(b"hello").decode()
    assert (
        ArtifactCreatedData(artifact_id="a", artifact_type="file", content_base64=inline).size == 5
    )
    assert ArtifactCreatedData(artifact_id="a", artifact_type="file", ref=ref()).size == 5
    with pytest.raises(ValidationError, match="exactly one of 'content_base64' or 'ref'"):
        ArtifactCreatedData(artifact_id="a", artifact_type="file", content_base64=inline, ref=ref())
    with pytest.raises(ValidationError, match="exactly one of 'content_base64' or 'ref'"):
        ArtifactCreatedData(artifact_id="a", artifact_type="file")


def test_artifact_inline_content_is_bounded_and_valid_base64() -> None:
    limit = base64.b64encode(b"\0" * MAX_INLINE_ARTIFACT_BYTES).decode()
    assert ArtifactCreatedData(artifact_id="a", artifact_type="file", content_base64=limit)
    too_big = base64.b64encode(b"\0" * (MAX_INLINE_ARTIFACT_BYTES + 1)).decode()
    with pytest.raises(ValidationError, match="put it in the object store"):
        ArtifactCreatedData(artifact_id="a", artifact_type="file", content_base64=too_big)
    with pytest.raises(ValidationError, match="not valid base64"):
        ArtifactCreatedData(artifact_id="a", artifact_type="file", content_base64="a*b=")


def test_content_parts() -> None:
    assert ContentPart(type="image_url", url="https://example.org/cat.png").url
    assert ContentPart(type="file", ref=ref()).ref == ref()
    with pytest.raises(ValidationError, match="a text part needs 'text'"):
        ContentPart(type="text")
    with pytest.raises(ValidationError, match="exactly one of 'url' or 'ref'"):
        ContentPart(type="file", url="https://example.org/a", ref=ref())
    with pytest.raises(ValidationError, match="exactly one of 'url' or 'ref'"):
        ContentPart(type="image_url")
    with pytest.raises(ValidationError):
        ContentPart(type="video", url="https://example.org/a")
    parts = [ContentPart(type="text", text="a"), ContentPart(type="file", ref=ref())]
    assert content_text(parts) == "a"
    assert content_text("plain") == "plain"
    assert content_text(None) == ""


def test_resume_reason_needs_its_fields() -> None:
    with pytest.raises(ValidationError, match="needs the 'question_id'"):
        CommandResumeData(answer="yes")
    with pytest.raises(ValidationError, match="'child_run_id' and 'status'"):
        CommandResumeData(reason="child_completed")
    done = CommandResumeData(reason="child_completed", child_run_id="c1", status="completed")
    assert done.question_id is None
    assert CommandResumeData(reason="timeout").answer is None


def test_waiting_needs_a_target() -> None:
    with pytest.raises(ValidationError, match="at least one 'child_run_ids'"):
        RunWaitingData(on="child")
    with pytest.raises(ValidationError, match="needs its 'group_id'"):
        RunWaitingData(on="group")
    with pytest.raises(ValidationError, match="greater than 0"):
        RunWaitingData(on="child", child_run_ids=["c"], timeout_s=0)


def test_tool_result_inline_or_by_ref() -> None:
    assert ToolCallCompletedData(tool_call_id="t", tool_name="n", result_ref=ref()).result is None
    with pytest.raises(ValidationError, match="not both"):
        ToolCallCompletedData(tool_call_id="t", tool_name="n", result="x", result_ref=ref())


def test_plugins_reloaded_error_matches_ok() -> None:
    with pytest.raises(ValidationError, match="needs an 'error'"):
        PluginsReloadedData(reload_id="r", ok=False)
    with pytest.raises(ValidationError, match="takes no 'error'"):
        PluginsReloadedData(reload_id="r", ok=True, error="boom")


def test_ingest_rejected_cuts_long_text_instead_of_failing() -> None:
    data = IngestRejectedData(subject="jl.x", seq=3, reason="r" * 10_000, body_excerpt="b" * 600)
    assert len(data.body_excerpt) == MAX_EXCERPT_CHARS
    assert data.body_excerpt.endswith("…")
    assert len(data.reason) <= 4096
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        IngestRejectedData(subject="jl.x", seq=-1, reason="r")


def test_progress_is_a_fraction() -> None:
    body = body_of(EXAMPLES["run.state"])
    body["data"]["progress"] = 1.5
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        CATALOG["run.state"].model_validate(body)


# -- JSON Schema -------------------------------------------------------------------------


def test_catalog_json_schema_is_one_json_document_listing_every_type() -> None:
    schema = json.loads(json.dumps(catalog_json_schema()))
    assert schema["$id"]
    assert schema["title"]
    assert set(schema["discriminator"]["mapping"]) == set(CATALOG)
    assert len(schema["oneOf"]) == len(CATALOG)
    assert schema["x-schema-versions"] == {t: cls.SCHEMA for t, cls in CATALOG.items()}
    assert schema["x-schema-versions"]["run.failed"] == 2


@pytest.mark.parametrize("event_type", DESIGN_TYPES)
def test_schema_definition_matches_the_model(event_type: str) -> None:
    schema = catalog_json_schema()
    cls = CATALOG[event_type]
    definition = schema["$defs"][cls.__name__]
    properties = definition["properties"]
    assert properties["type"]["const"] == event_type
    assert properties["schema"]["default"] == cls.SCHEMA
    assert {"type", "data", *cls.REQUIRED} <= set(definition["required"])
    for name in cls.REQUIRED:
        assert properties[name]["type"] == "string"
    body = body_of(EXAMPLES[event_type])
    assert set(body) <= set(properties)
    assert set(definition["required"]) <= set(body)


def test_example_commands_name_where_they_go() -> None:
    # Commands are routed by agent type or to one worker (DESIGN §3 subjects).
    for event_type in COMMAND_TYPES:
        event = EXAMPLES[event_type]
        assert event.agent_type or getattr(event.data, "target_worker_id", None), event_type
