"""Every subject of the log, built and parsed in one place (DESIGN §3).

Subjects under the root (``jl`` by default, ``StoreSettings.root``)::

    <root>.ctrl.agent_type.<agent_type>   commands routed by agent type
    <root>.ctrl.worker.<worker_id>        commands for one worker
    <root>.data.<session_id>.<run_id>.out everything a run emits while running
    <root>.data.<session_id>.<run_id>.end the one terminal event of a run
    <root>.sys.<kind>                     system events (worker, plugins, rejected)

Ids come from users and foreign NATS clients, so each becomes a subject token through
:func:`encode_token`: plain ids stay readable, anything else is escaped reversibly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from eventstore.errors import SubjectError

DEFAULT_ROOT = "jl"
MAX_RAW_BYTES = 1024
"""Longest value (in UTF-8 bytes) a token may carry; longer values are refused, never cut."""

MAX_PLAIN_LENGTH = 200
"""Longest value kept verbatim. Escaping a plain value is the identity, so the limit only
documents that long tokens are not a special case rather than changing any output."""

EMPTY_TOKEN = "~"
"""The token of the empty string; escapes are always ``~`` plus two hex digits, so a lone
tilde cannot come out of any other value."""

SubjectKind = Literal["agent_type", "worker", "run_out", "run_end", "sys"]

_PLAIN_RE = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# Lowercase hex only: one spelling per byte keeps decoding the exact inverse of encoding.
_ENCODED_RE = re.compile(r"(?:[A-Za-z0-9_-]|~[0-9a-f]{2})+")
_ESCAPE_RE = re.compile(rb"~([0-9a-f]{2})")
# Printable ASCII minus the wildcards; '.' never survives the split into tokens.
_SUBJECT_CHARS = frozenset(chr(code) for code in range(0x21, 0x7F)) - {"*", ">"}


def encode_token(raw: str) -> str:
    """Turn any id into one NATS subject token, reversibly.

    >>> encode_token("msg-1234abcd"), encode_token("a.b"), encode_token("")
    ('msg-1234abcd', 'a~2eb', '~')
    """
    data = _utf8(raw)
    if len(data) > MAX_RAW_BYTES:
        raise SubjectError(
            f"subject token value {raw[:32]!r}... is {len(data)} UTF-8 bytes; the limit is "
            f"{MAX_RAW_BYTES} bytes. Use a shorter id (values are never truncated)."
        )
    if len(raw) <= MAX_PLAIN_LENGTH and _PLAIN_RE.fullmatch(raw):
        return raw
    if not data:
        return EMPTY_TOKEN
    return "".join(chr(byte) if byte in _PLAIN_BYTES else f"~{byte:02x}" for byte in data)


def decode_token(token: str) -> str:
    """The id a token was encoded from; malformed or non-canonical tokens are refused.

    >>> decode_token("a~2eb"), decode_token("~")
    ('a.b', '')
    """
    if token == EMPTY_TOKEN:
        return ""
    if not _ENCODED_RE.fullmatch(token):
        raise SubjectError(
            f"malformed subject token {token!r}: expected letters, digits, '_', '-' "
            f"and '~' followed by two lowercase hex digits"
        )
    data = _ESCAPE_RE.sub(_unescape, token.encode("ascii"))
    if len(data) > MAX_RAW_BYTES:
        raise SubjectError(
            f"subject token decodes to {len(data)} bytes; the limit is {MAX_RAW_BYTES} bytes"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubjectError(f"subject token {token!r} does not decode to UTF-8: {exc}") from exc


def agent_type_subject(agent_type: str, root: str = DEFAULT_ROOT) -> str:
    """Commands routed to any worker of ``agent_type``.

    >>> agent_type_subject("coder")
    'jl.ctrl.agent_type.coder'
    """
    return _join(root, "ctrl", "agent_type", encode_token(agent_type))


def worker_subject(worker_id: str, root: str = DEFAULT_ROOT) -> str:
    """Commands for one worker.

    >>> worker_subject("w-1", root="acme.jl")
    'acme.jl.ctrl.worker.w-1'
    """
    return _join(root, "ctrl", "worker", encode_token(worker_id))


def run_out_subject(session_id: str, run_id: str, root: str = DEFAULT_ROOT) -> str:
    """Everything a run emits while running.

    >>> run_out_subject("s1", "r1")
    'jl.data.s1.r1.out'
    """
    return _join(root, "data", encode_token(session_id), encode_token(run_id), "out")


def run_end_subject(session_id: str, run_id: str, root: str = DEFAULT_ROOT) -> str:
    """The one terminal event of a run.

    >>> run_end_subject("s1", "r1")
    'jl.data.s1.r1.end'
    """
    return _join(root, "data", encode_token(session_id), encode_token(run_id), "end")


def run_subjects_filter(session_id: str, run_id: str, root: str = DEFAULT_ROOT) -> str:
    """Both subjects of one run (``out`` and ``end``) in one filter.

    >>> run_subjects_filter("s1", "r1")
    'jl.data.s1.r1.*'
    """
    return _join(root, "data", encode_token(session_id), encode_token(run_id), "*")


def sys_subject(kind: str, root: str = DEFAULT_ROOT) -> str:
    """System events of one kind (``worker``, ``plugins``, ``rejected``).

    >>> sys_subject("rejected")
    'jl.sys.rejected'
    """
    return _join(root, "sys", encode_token(kind))


def session_filter(session_id: str, root: str = DEFAULT_ROOT) -> str:
    """Filter for every run of one session (out and end).

    >>> session_filter("s1")
    'jl.data.s1.>'
    """
    return _join(root, "data", encode_token(session_id), ">")


def run_filter(run_id: str, root: str = DEFAULT_ROOT) -> str:
    """Filter for one run, whatever its session.

    >>> run_filter("r1")
    'jl.data.*.r1.>'
    """
    return _join(root, "data", "*", encode_token(run_id), ">")


def ctrl_filter(root: str = DEFAULT_ROOT) -> str:
    """Filter for every command.

    >>> ctrl_filter()
    'jl.ctrl.>'
    """
    return _join(root, "ctrl", ">")


def log_filter(root: str = DEFAULT_ROOT) -> str:
    """Filter for the whole log (the stream's subject).

    >>> log_filter("acme.jl")
    'acme.jl.>'
    """
    return _join(root, ">")


@dataclass(frozen=True, slots=True)
class ParsedSubject:
    """A subject of the log taken apart, tokens decoded; fields not in the subject are None."""

    kind: SubjectKind
    agent_type: str | None = None
    worker_id: str | None = None
    session_id: str | None = None
    run_id: str | None = None
    sys_kind: str | None = None


def parse_subject(subject: str, root: str = DEFAULT_ROOT) -> ParsedSubject:
    """Take a subject of the log apart; anything outside the scheme raises SubjectError.

    >>> parsed = parse_subject("jl.data.s1.r~2e1.end")
    >>> parsed.kind, parsed.session_id, parsed.run_id
    ('run_end', 's1', 'r.1')
    """
    validate_root(root)
    prefix = root + "."
    if not subject.startswith(prefix):
        raise SubjectError(f"subject {subject!r} is not under the root {root!r}")
    tokens = subject[len(prefix) :].split(".")
    match tokens:
        case ["ctrl", "agent_type", agent_type]:
            return ParsedSubject("agent_type", agent_type=decode_token(agent_type))
        case ["ctrl", "worker", worker_id]:
            return ParsedSubject("worker", worker_id=decode_token(worker_id))
        case ["data", session_id, run_id, "out" | "end" as phase]:
            return ParsedSubject(
                "run_out" if phase == "out" else "run_end",
                session_id=decode_token(session_id),
                run_id=decode_token(run_id),
            )
        case ["sys", kind]:
            return ParsedSubject("sys", sys_kind=decode_token(kind))
    raise SubjectError(
        f"subject {subject!r} does not match any subject of the log under {root!r} "
        f"(ctrl.agent_type.<t>, ctrl.worker.<id>, data.<sid>.<rid>.out|end, sys.<kind>)"
    )


def is_valid_subject(subject: str) -> bool:
    """True for a concrete subject: non-empty tokens of printable ASCII, no wildcards.

    >>> is_valid_subject("jl.sys.worker"), is_valid_subject("jl.data.>")
    (True, False)
    """
    # '*' and '>' are refused anywhere, not just as whole tokens: they are never ours.
    return bool(subject) and all(
        token and _SUBJECT_CHARS.issuperset(token) for token in subject.split(".")
    )


def validate_root(root: str) -> None:
    """Refuse a root that is not one or more plain tokens (``jl``, ``acme.jl``).

    >>> validate_root("acme.jl")
    """
    if not all(_PLAIN_RE.fullmatch(token) for token in root.split(".")):
        raise SubjectError(
            f"subject root {root!r} must be one or more dot-separated tokens of letters, "
            f"digits, '_' and '-' (for example 'jl' or 'acme.jl')"
        )


def _join(root: str, *tokens: str) -> str:
    validate_root(root)
    return ".".join((root, *tokens))


def _utf8(raw: str) -> bytes:
    try:
        return raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Lone surrogates (e.g. from os.fsdecode) have no UTF-8 form, so no token either.
        raise SubjectError(f"subject token value {raw!r} is not valid Unicode: {exc}") from exc


def _unescape(match: re.Match[bytes]) -> bytes:
    byte = int(match[1], 16)
    if byte in _PLAIN_BYTES:
        # Two spellings of one value would break equality of subjects and filters.
        raise SubjectError(f"subject token escapes {chr(byte)!r}, which must appear as itself")
    return bytes((byte,))


__all__ = [
    "DEFAULT_ROOT",
    "EMPTY_TOKEN",
    "MAX_RAW_BYTES",
    "ParsedSubject",
    "SubjectKind",
    "agent_type_subject",
    "ctrl_filter",
    "decode_token",
    "encode_token",
    "is_valid_subject",
    "log_filter",
    "parse_subject",
    "run_end_subject",
    "run_filter",
    "run_out_subject",
    "run_subjects_filter",
    "session_filter",
    "sys_subject",
    "validate_root",
    "worker_subject",
]
