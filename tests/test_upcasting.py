"""Unit tests of the upcaster registry and of the catalog's real upcasters."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore.catalog import CATALOG, ErrorInfo, RunFailed
from eventstore.upcasting import UPCASTERS, UpcasterRegistry, UpcastError

V1_RUN_FAILED: dict[str, Any] = {
    "id": "evt-legacy-1",
    "type": "run.failed",
    "schema": 1,
    "time": "2025-11-02T08:00:00Z",
    "session_id": "sess-1",
    "run_id": "run-1",
    "worker_id": "worker-old",
    "data": {"error": "LLM quota exceeded", "code": "runner.exception", "retryable": True},
}


def read(body: dict[str, Any]) -> RunFailed:
    event = RunFailed.model_validate(UPCASTERS.upcast(body, RunFailed.SCHEMA))
    assert isinstance(event, RunFailed)
    return event


def demo_registry() -> UpcasterRegistry:
    """demo.happened: v1 {"msg"} -> v2 {"text"} -> v3 {"text", "lang"}."""
    registry = UpcasterRegistry()

    @registry.register("demo.happened", from_version=1)
    def _rename(body: dict[str, Any]) -> dict[str, Any]:
        body["data"]["text"] = body["data"].pop("msg")  # in place: the registry copied it
        return body

    @registry.register("demo.happened", from_version=2)
    def _add_lang(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "data": {**body["data"], "lang": "en"}}

    return registry


# -- the real run.failed 1 -> 2 upcaster ------------------------------------------------


def test_v1_run_failed_upcasts_to_v2_and_validates() -> None:
    before = copy.deepcopy(V1_RUN_FAILED)
    event = read(V1_RUN_FAILED)
    assert event.schema_version == 2
    assert event.data.error == ErrorInfo(type="Error", message="LLM quota exceeded")
    assert event.data.code == "runner.exception"
    assert event.data.retryable is True
    assert event.id == "evt-legacy-1"
    assert event.worker_id == "worker-old"
    assert before == V1_RUN_FAILED


def test_v1_run_failed_defaults_like_langbot() -> None:
    body = {**V1_RUN_FAILED, "data": {"error": "boom"}}
    event = read(body)
    assert event.data.code == "runner.error"
    assert event.data.retryable is False
    assert event.data.error.message == "boom"


def test_v1_run_failed_without_message_is_still_a_terminal_event() -> None:
    event = read({**V1_RUN_FAILED, "data": {"code": "runner.timeout"}})
    assert event.data.error.type == "Error"
    assert event.data.error.message
    assert event.data.code == "runner.timeout"


def test_v1_upcast_result_is_a_v2_body() -> None:
    upcast = UPCASTERS.upcast(V1_RUN_FAILED, RunFailed.SCHEMA)
    assert upcast["schema"] == 2
    assert upcast["data"]["error"] == {"type": "Error", "message": "LLM quota exceeded"}


@given(message=st.text(), code=st.none() | st.sampled_from(["runner.timeout", "x.y"]))
def test_any_v1_message_survives(message: str, code: str | None) -> None:
    data: dict[str, Any] = {"error": message}
    if code is not None:
        data["code"] = code
    event = read({**V1_RUN_FAILED, "data": data})
    assert event.data.error.message == message
    assert event.data.code == (code or "runner.error")


def test_current_body_is_returned_unchanged() -> None:
    body = {**V1_RUN_FAILED, "schema": 2}
    assert UPCASTERS.upcast(body, 2) is body
    without_schema = {k: v for k, v in V1_RUN_FAILED.items() if k != "schema"}
    assert UPCASTERS.upcast(without_schema, 2) is without_schema


def test_every_catalog_type_has_a_complete_chain() -> None:
    for event_type, cls in CATALOG.items():
        assert UPCASTERS.missing_steps(event_type, cls.SCHEMA) == [], event_type


# -- registry rules ----------------------------------------------------------------------


def test_chain_applies_every_step_in_order() -> None:
    body = {"type": "demo.happened", "schema": 1, "data": {"msg": "hi"}}
    before = copy.deepcopy(body)
    assert demo_registry().upcast(body, 3) == {
        "type": "demo.happened",
        "schema": 3,
        "data": {"text": "hi", "lang": "en"},
    }
    assert body == before  # the in-place step worked on a copy


def test_chain_can_start_midway() -> None:
    body = {"type": "demo.happened", "schema": 2, "data": {"text": "hi"}}
    assert demo_registry().upcast(body, 3)["data"] == {"text": "hi", "lang": "en"}


def test_newer_body_is_refused() -> None:
    body = {**V1_RUN_FAILED, "schema": 3}
    with pytest.raises(UpcastError, match="written by a newer jetledger") as info:
        UPCASTERS.upcast(body, RunFailed.SCHEMA)
    assert info.value.event_type == "run.failed"
    assert isinstance(info.value, ValueError)


def test_missing_step_is_named() -> None:
    body = {"type": "demo.happened", "schema": 1, "data": {"msg": "hi"}}
    with pytest.raises(UpcastError, match=r"no upcaster registered for step 3 -> 4"):
        demo_registry().upcast(body, 4)
    with pytest.raises(UpcastError, match=r"step 1 -> 2"):
        UpcasterRegistry().upcast(body, 2)


def test_duplicate_registration_is_refused() -> None:
    registry = demo_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("demo.happened", from_version=1)(lambda body: body)
    with pytest.raises(ValueError, match="already registered"):
        UPCASTERS.register("run.failed", from_version=1)(lambda body: body)


@pytest.mark.parametrize("version", [0, -1, True, "1"])
def test_register_needs_a_positive_int_version(version: Any) -> None:
    with pytest.raises(ValueError, match="from_version must be an int >= 1"):
        UpcasterRegistry().register("demo.happened", from_version=version)


@pytest.mark.parametrize("version", ["1", 1.0, None, True])
def test_non_integer_schema_is_refused(version: Any) -> None:
    with pytest.raises(UpcastError, match="'schema' must be an integer"):
        demo_registry().upcast({"type": "demo.happened", "schema": version}, 3)


def test_body_without_type_is_refused() -> None:
    with pytest.raises(UpcastError, match="no string 'type'"):
        UPCASTERS.upcast({"schema": 1}, 2)


def test_failing_upcaster_becomes_upcast_error() -> None:
    body = {"type": "demo.happened", "schema": 1, "data": {}}
    with pytest.raises(UpcastError, match=r"upcaster 1 -> 2 failed: KeyError") as info:
        demo_registry().upcast(body, 3)
    assert isinstance(info.value.__cause__, KeyError)


def test_upcaster_must_return_a_dict_of_the_same_type() -> None:
    registry = UpcasterRegistry()
    registry.register("a", 1)(lambda body: [body])  # type: ignore[arg-type,return-value]
    registry.register("b", 1)(lambda body: {**body, "type": "c"})
    with pytest.raises(UpcastError, match="returned list, not a dict"):
        registry.upcast({"type": "a", "schema": 1}, 2)
    with pytest.raises(UpcastError, match="changed 'type' to 'c'"):
        registry.upcast({"type": "b", "schema": 1}, 2)


def test_missing_steps() -> None:
    registry = demo_registry()
    assert registry.missing_steps("demo.happened", 3) == []
    assert registry.missing_steps("demo.happened", 5) == [3, 4]
    assert registry.missing_steps("other", 1) == []
    assert registry.has_step("demo.happened", 2)
