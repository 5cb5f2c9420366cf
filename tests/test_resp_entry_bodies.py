"""The direct JSON of a generic stream entry is byte for byte what the event model
would store, and decodes to the same valid event."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.catalog import StateUpdated
from eventstore.codec import decode, encode
from gateway.resp.byframework_events import entry_event
from gateway.resp.entry_bodies import entry_body, fields_of_body, generic_body
from gateway.resp.stream_keys import target_for

ROOT = "jl"
words = st.binary(max_size=40) | st.text(max_size=40).map(str.encode)
keys = st.text(min_size=1, max_size=300).map(str.encode)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def model_body(key: bytes, fields: list[tuple[bytes, bytes]], event_id: str, at: datetime) -> bytes:
    event = entry_event(target_for(key, ROOT), fields)
    assert isinstance(event, StateUpdated)
    return encode(event.model_copy(update={"id": event_id, "time": at}))


@settings(max_examples=300, deadline=None)
@given(key=keys, fields=st.lists(st.tuples(words, words), max_size=6), at=instants)
def test_generic_body_is_what_the_model_stores(
    key: bytes, fields: list[tuple[bytes, bytes]], at: datetime
) -> None:
    target = target_for(key, ROOT)
    if target.kind != "generic" or target.name.endswith(":ack"):
        return
    fast = generic_body(target, fields, "e1", at)
    assert fast.body == model_body(key, fields, "e1", at)
    decoded = decode(fast.body)
    assert isinstance(decoded, StateUpdated)
    assert decoded.run_id == fast.run_id and decoded.id == "e1"


def test_known_streams_still_go_through_the_model() -> None:
    ack = target_for(b"byai_gateway:plugins:ack", ROOT)
    body = entry_body(
        ack, [(b"data", b'{"reload_id": "r1", "status": "success", "worker_id": "w1"}')]
    )
    assert decode(body.body).type == "plugins.reloaded"  # type: ignore[union-attr]
    data = target_for(b"byai_gateway:session:s1:data_stream", ROOT)
    delta = (
        b'{"message_id": "m1", "event_type": "answerDelta",'
        b' "data": {"choices": [{"delta": {"content": "hi"}}]}}'
    )
    body = entry_body(data, [(b"data", delta)])
    assert body.run_id == "m1" and decode(body.body).type == "message.delta"  # type: ignore[union-attr]
    generic = entry_body(target_for(b"plain", ROOT), [(b"f", b"\xff\x00")])
    assert decode(generic.body).type == "state.updated"  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(st.tuples(words, words), max_size=6))
def test_a_body_said_to_hold_the_fields_gives_them_back_exactly(
    fields: list[tuple[bytes, bytes]],
) -> None:
    target = target_for(b"plain", ROOT)
    body = entry_body(target, fields)
    names = [name for name, _ in fields]
    texts_only = all(
        b"\x00" not in part and not part.startswith(b"base64:") and _is_utf8(part)
        for pair in fields
        for part in pair
    )
    assert body.fields_in_body == (texts_only and len(set(names)) == len(names))
    if body.fields_in_body:
        assert fields_of_body(body.body) == fields


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_by_framework_entries_keep_their_fields_in_the_header() -> None:
    data = target_for(b"byai_gateway:session:s1:data_stream", ROOT)
    delta = b'{"message_id": "m1", "event_type": "answerDelta", "data": {}}'
    assert not entry_body(data, [(b"data", delta)]).fields_in_body
