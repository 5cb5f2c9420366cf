"""Unit tests of subject building, token encoding and parsing (pure logic, no server)."""

from __future__ import annotations

import doctest
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eventstore import subjects
from eventstore.errors import SubjectError
from eventstore.subjects import (
    ParsedSubject,
    agent_type_subject,
    ctrl_filter,
    decode_token,
    encode_token,
    is_valid_subject,
    log_filter,
    parse_subject,
    run_end_subject,
    run_filter,
    run_out_subject,
    session_filter,
    sys_subject,
    validate_root,
    worker_subject,
)

PLAIN_CHARS = string.ascii_letters + string.digits + "_-"
PRINTABLE_ASCII = frozenset(chr(code) for code in range(0x21, 0x7F))


def _fits_in_token(value: str) -> bool:
    try:
        return len(value.encode("utf-8")) <= 1024
    except UnicodeEncodeError:
        return False


# Mix arbitrary text with the characters that matter most to NATS and to the escape.
raw_values = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from([*".*> \t\r\n~%", "日", "\x00", "\x7f", *"aZ9_-"])),
    st.text(max_size=400),
).filter(_fits_in_token)
roots = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), min_size=1, max_size=3).map(
    ".".join
)


@given(raw_values)
@example("")
@example("~")
@example("a.b")
@example("*")
@example(">")
@example("日本")
@example("x" * 1024)
def test_decode_inverts_encode(raw: str) -> None:
    assert decode_token(encode_token(raw)) == raw


@given(raw_values)
def test_encoded_token_is_a_safe_nats_token(raw: str) -> None:
    token = encode_token(raw)
    assert token
    assert token not in {"*", ">"}
    assert not set(token) & set(". \t\r\n*>")
    assert PRINTABLE_ASCII.issuperset(token)
    assert is_valid_subject(token)


@given(st.text(alphabet=PLAIN_CHARS, min_size=1, max_size=200))
@example("msg-1234abcd")
def test_plain_ids_stay_readable(raw: str) -> None:
    assert encode_token(raw) == raw


@given(st.text(alphabet=[*PLAIN_CHARS, "~", "."], max_size=12))
@example("~61")
@example("~2E")
def test_decoding_is_canonical(token: str) -> None:
    # Any token that decodes must be the one encoding of its value: one spelling per id.
    try:
        raw = decode_token(token)
    except SubjectError:
        return
    assert encode_token(raw) == token


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        ("msg-1234abcd", "msg-1234abcd"),
        ("a.b", "a~2eb"),
        ("", "~"),
        ("~", "~7e"),
        ("*", "~2a"),
        (">", "~3e"),
        ("a b", "a~20b"),
        ("日本", "~e6~97~a5~e6~9c~ac"),
        ("x" * 201, "x" * 201),
    ],
)
def test_known_encodings(raw: str, token: str) -> None:
    assert encode_token(raw) == token
    assert decode_token(token) == raw


def test_limit_is_1024_utf8_bytes() -> None:
    assert decode_token(encode_token("." * 1024)) == "." * 1024
    assert encode_token("日" * 341) == "~e6~97~a5" * 341  # 1023 bytes
    with pytest.raises(SubjectError, match="1024"):
        encode_token("x" * 1025)
    with pytest.raises(SubjectError, match="1024"):
        encode_token("日" * 342)  # 1026 bytes
    with pytest.raises(SubjectError, match="1024"):
        decode_token("~2e" * 1025)


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(SubjectError):
        encode_token("a\udc80")


@pytest.mark.parametrize(
    "token",
    [
        "",  # the empty value is "~", never an empty token
        "~~",
        "a~",
        "~4",
        "~zz",
        "~2E",  # uppercase hex
        "~61",  # 'a' must appear as itself
        "~2d",  # '-' must appear as itself
        "a.b",
        "a b",
        "*",
        ">",
        "é",
        "~e6",  # truncated UTF-8 sequence
        "~ed~a0~80",  # UTF-8 form of a surrogate
        "~ff",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(SubjectError):
        decode_token(token)


@given(raw_values, raw_values, roots)
def test_builders_round_trip_through_parse(first: str, second: str, root: str) -> None:
    cases = {
        agent_type_subject(first, root): ParsedSubject("agent_type", agent_type=first),
        worker_subject(first, root): ParsedSubject("worker", worker_id=first),
        run_out_subject(first, second, root): ParsedSubject(
            "run_out", session_id=first, run_id=second
        ),
        run_end_subject(first, second, root): ParsedSubject(
            "run_end", session_id=first, run_id=second
        ),
        sys_subject(first, root): ParsedSubject("sys", sys_kind=first),
    }
    for subject, parsed in cases.items():
        assert is_valid_subject(subject)
        assert parse_subject(subject, root) == parsed


def test_subject_shapes() -> None:
    assert agent_type_subject("coder") == "jl.ctrl.agent_type.coder"
    assert worker_subject("w.1", root="acme.jl") == "acme.jl.ctrl.worker.w~2e1"
    assert run_out_subject("s1", "r1") == "jl.data.s1.r1.out"
    assert run_end_subject("s 1", "") == "jl.data.s~201.~.end"
    assert [sys_subject(kind) for kind in ("worker", "plugins", "rejected")] == [
        "jl.sys.worker",
        "jl.sys.plugins",
        "jl.sys.rejected",
    ]


def test_filter_shapes() -> None:
    assert session_filter("s1") == "jl.data.s1.>"
    assert session_filter("a.b", root="acme.jl") == "acme.jl.data.a~2eb.>"
    assert run_filter("r1") == "jl.data.*.r1.>"
    assert run_filter(">") == "jl.data.*.~3e.>"
    assert ctrl_filter() == "jl.ctrl.>"
    assert ctrl_filter("acme.jl") == "acme.jl.ctrl.>"
    assert log_filter() == "jl.>"
    assert log_filter("acme.jl") == "acme.jl.>"


@given(raw_values, raw_values)
def test_filters_match_the_subjects_they_tail(session_id: str, run_id: str) -> None:
    for subject in (run_out_subject(session_id, run_id), run_end_subject(session_id, run_id)):
        tokens = subject.split(".")
        assert session_filter(session_id).split(".")[:-1] == tokens[:3]
        run_tokens = run_filter(run_id).split(".")
        assert run_tokens[:2] == tokens[:2]
        assert run_tokens[3] == tokens[3]


@pytest.mark.parametrize(
    ("subject", "root"),
    [
        ("jl", "jl"),
        ("jl.", "jl"),
        ("jlx.sys.worker", "jl"),
        ("other.sys.worker", "jl"),
        ("jl.sys.worker", "acme.jl"),
        ("acme.jl.sys.worker", "jl"),
        ("jl.sys", "jl"),
        ("jl.sys.a.b", "jl"),
        ("jl.ctrl.worker", "jl"),
        ("jl.ctrl.worker.a.b", "jl"),
        ("jl.ctrl.other.x", "jl"),
        ("jl.data.s.r", "jl"),
        ("jl.data.s.r.mid", "jl"),
        ("jl.data.s.r.out.x", "jl"),
        ("jl.unknown.x", "jl"),
        ("jl.ctrl.worker.", "jl"),
        ("jl.ctrl.worker.~zz", "jl"),
        ("jl.data.*.r.out", "jl"),
        ("jl.data.s.r.>", "jl"),
        ("jl.sys.worker", "j l"),
    ],
)
def test_parse_refuses_subjects_outside_the_scheme(subject: str, root: str) -> None:
    with pytest.raises(SubjectError):
        parse_subject(subject, root)


def test_parse_with_dotted_root() -> None:
    parsed = parse_subject("acme.jl.data.s1.r~2e1.out", root="acme.jl")
    assert parsed == ParsedSubject("run_out", session_id="s1", run_id="r.1")


@pytest.mark.parametrize("root", ["jl", "acme.jl", "a-b_c.D9"])
def test_valid_roots(root: str) -> None:
    validate_root(root)


@pytest.mark.parametrize(
    "root", ["", ".", "jl.", ".jl", "a..b", "j l", "jl.*", "jl.>", "日本", "a~b"]
)
def test_invalid_roots_are_refused(root: str) -> None:
    with pytest.raises(SubjectError):
        validate_root(root)
    with pytest.raises(SubjectError):
        sys_subject("worker", root=root)


@pytest.mark.parametrize(
    ("subject", "valid"),
    [
        ("jl.sys.worker", True),
        ("jl.data.a~2eb.~.end", True),
        ("jl.data.*.r.>", False),
        ("jl.>", False),
        ("jl.a*b", False),
        ("", False),
        ("jl..x", False),
        ("jl.x.", False),
        ("jl.a b", False),
        ("jl.a\tb", False),
        ("jl.日本", False),
        ("jl.\x7f", False),
    ],
)
def test_is_valid_subject(subject: str, valid: bool) -> None:
    assert is_valid_subject(subject) is valid


def test_docstring_examples() -> None:
    assert doctest.testmod(subjects).failed == 0
