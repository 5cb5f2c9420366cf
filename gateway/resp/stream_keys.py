"""Which part of the log a Redis stream key is (the "Redis Key Map" of by-framework).

* ``byai_gateway:ctrl:agent_type:<t>`` -> ``<root>.ctrl.agent_type.<t>``
* ``byai_gateway:ctrl:worker:<id>`` -> ``<root>.ctrl.worker.<id>``
* ``byai_gateway:session:<sid>:data_stream`` -> ``<root>.data.<sid>.>`` (each entry on its
  run's ``.out`` subject, the run being the entry's by-framework ``message_id``)
* any other key -> ``<root>.redis.stream.<encoded key>``

The v2 schema (``byai_gateway:v2:`` prefix, ``{...}`` cluster hash tags around ids) maps
to the same subjects, so v1 and v2 clients share their streams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from eventstore import subjects
from eventstore.errors import SubjectError
from gateway.resp.replies import CommandError

StreamKind = Literal["agent_type", "worker", "session_data", "generic"]

_PREFIX = r"byai_gateway:(?:v2:)?"
_TAGGED = r"\{?([^{}]+?)\}?"
_PATTERNS: tuple[tuple[StreamKind, re.Pattern[str]], ...] = (
    ("agent_type", re.compile(rf"{_PREFIX}ctrl:agent_type:{_TAGGED}")),
    ("worker", re.compile(rf"{_PREFIX}ctrl:worker:{_TAGGED}")),
    ("session_data", re.compile(rf"{_PREFIX}session:{_TAGGED}:data_stream")),
)
DEFAULT_RUN = "redis"
"""Run token for a data-stream entry that names no message id."""


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """Where one Redis stream key lives on the log."""

    key: bytes
    kind: StreamKind
    name: str
    """The agent type, worker id or session id the key names (the whole key if generic)."""
    filter: str
    """Subject filter covering every entry of the key."""
    root: str

    def subject_for(self, run_id: str | None) -> str:
        """The subject a new entry is stored on (only data streams depend on the run)."""
        if self.kind == "session_data":
            return subjects.run_out_subject(self.name, run_id or DEFAULT_RUN, self.root)
        return self.filter


def target_for(key: bytes, root: str) -> StreamTarget:
    """Map ``key``; a key that cannot become a subject gets Redis-style ``ERR`` text."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("ERR jetledger stream keys must be valid UTF-8") from None
    try:
        for kind, pattern in _PATTERNS:
            match = pattern.fullmatch(text)
            if match:
                return _known(key, kind, match.group(1), root)
        generic = ".".join((root, "redis", "stream", subjects.encode_token(text)))
        return StreamTarget(key, "generic", text, generic, root)
    except SubjectError as error:
        raise CommandError(f"ERR stream key cannot be stored: {error}") from None


def _known(key: bytes, kind: StreamKind, name: str, root: str) -> StreamTarget:
    if kind == "agent_type":
        return StreamTarget(key, kind, name, subjects.agent_type_subject(name, root), root)
    if kind == "worker":
        return StreamTarget(key, kind, name, subjects.worker_subject(name, root), root)
    return StreamTarget(key, kind, name, subjects.session_filter(name, root), root)
