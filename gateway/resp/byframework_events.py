"""by-framework stream entries <-> jetledger catalog events.

An ``XADD`` stores one catalog event: a control entry (``{"action_type", "header",
"body"}`` JSON in its ``data`` field) becomes ``command.ask`` / ``command.resume`` /
``command.cancel`` / ``command.reload_plugins`` / ``command.worker``; a data-stream entry
becomes ``message.delta`` / ``message.completed`` / ``run.asked_user`` / ``run.state``; a
plugin-reload ack becomes ``plugins.reloaded``. The by-framework body is kept in the
event where the payload has room for it (``metadata``, ``answer``, ``result``).

Reading must give back exactly what the client wrote, so the entry's Redis fields also
ride along byte for byte in the ``Jl-Redis-Fields`` message header and are rendered from
there (or the header says ``=``: a generic body's value holds them exactly, see
:mod:`gateway.resp.entry_bodies`). Entries this module does not recognise are stored
as ``state.updated`` (scope ``global``, key = the stream key, value = the fields): they
still round-trip and still show in the EventLog. Native jetledger events (no header) read
as one field, ``event``, holding the event body.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from pydantic import ValidationError

from eventstore.catalog import (
    CommandAsk,
    CommandCancel,
    CommandReloadPlugins,
    CommandResume,
    CommandWorker,
    MessageCompleted,
    MessageDelta,
    PluginsReloaded,
    RunAskedUser,
    RunState,
    StateUpdated,
)
from eventstore.envelope import MAX_ID_LENGTH, Event
from gateway.resp.stream_keys import StreamTarget

FIELDS_HEADER = "Jl-Redis-Fields"
FIELDS_IN_BODY = "="
"""``Jl-Redis-Fields`` of a generic entry whose body's ``data.value`` is its fields exactly."""
GENERIC_SESSION = "redis-streams"
ASK_USER_CONTENT_TYPES = frozenset({"3013", "3014"})
STATE_CONTENT_TYPES = frozenset({"3003", "3010"})
WORKER_ACTIONS = {"SUSPEND_WORKER": "suspend", "RESUME_WORKER": "resume", "EVICT_WORKER": "evict"}
TERMINAL = {"COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled"}

Fields = list[tuple[bytes, bytes]]


def encode_fields(fields: Fields) -> str:
    """A header value holding the fields byte for byte: latin-1 text in ASCII-only JSON
    (no CR/LF can reach the header line)."""
    flat = [part.decode("latin-1") for pair in fields for part in pair]
    return json.dumps(flat, separators=(",", ":"))


def decode_fields(header: str) -> Fields:
    flat = [str(part).encode("latin-1") for part in json.loads(header)]
    return list(zip(flat[::2], flat[1::2], strict=True))


def native_fields(body: bytes) -> Fields:
    """How an event written by jetledger itself (not through Redis) reads on a stream."""
    return [(b"event", body)]


def entry_event(target: StreamTarget, fields: Fields) -> Event:
    """The catalog event one ``XADD`` stores (never raises for odd input: see module doc)."""
    payload = _data_json(fields)
    event: Event | None = None
    try:
        if payload is not None and target.kind in ("agent_type", "worker"):
            event = _command_event(target, payload)
        elif payload is not None and target.kind == "session_data":
            event = _data_event(target, payload)
        elif payload is not None and target.name.endswith(":ack") and "reload_id" in payload:
            event = _reload_ack(payload)
    except (ValidationError, TypeError, ValueError, AttributeError):
        event = None
    return event if event is not None else _generic(target, fields)


def _data_json(fields: Fields) -> dict[str, Any] | None:
    for name, value in fields:
        if name == b"data":
            try:
                parsed = json.loads(value)
            except (UnicodeDecodeError, json.JSONDecodeError):
                return None
            return parsed if isinstance(parsed, dict) else None
    return None


def _id(value: Any) -> str | None:
    """An optional envelope id: by-framework writes "" for none."""
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_ID_LENGTH]


def _content(value: Any) -> str | list[Any]:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _command_event(target: StreamTarget, entry: dict[str, Any]) -> Event | None:
    action = entry.get("action_type")
    header = entry.get("header") or {}
    body = entry.get("body") or {}
    envelope: dict[str, Any] = {
        "session_id": _id(header.get("session_id")),
        "run_id": _id(header.get("message_id")),
        "parent_run_id": _id(header.get("parent_message_id")),
        "agent_type": _id(header.get("target_agent_type")),
        "trace_id": _id(header.get("trace_id")),
        "user_code": _id(header.get("user_code")),
        "group_id": _id(header.get("task_group_id")),
    }
    worker = target.name if target.kind == "worker" else None
    if action == "ASK_AGENT":
        data = {
            "content": _content(body.get("content", "")),
            "wait_for_reply": bool(body.get("wait_for_reply", False)),
            "metadata": {"byframework": entry},
            "target_worker_id": worker,
        }
        return CommandAsk.model_validate({**envelope, "data": data})
    if action == "RESUME":
        return CommandResume.model_validate({**envelope, "data": _resume_data(header, body)})
    if action == "CANCEL_TASK":
        data = {
            "target_run_id": body["target_message_id"],
            "mode": body.get("cancel_mode") or "graceful",
            "reason": body.get("reason") or None,
            "requested_by": _id(body.get("requested_by")),
            "target_worker_id": _id(body.get("target_worker_id")) or worker,
        }
        return CommandCancel.model_validate({**envelope, "data": data})
    if action == "RELOAD_PLUGINS":
        data = {
            "reload_id": body["reload_id"],
            "reason": body.get("reason") or None,
            "target_worker_id": worker,
        }
        return CommandReloadPlugins.model_validate({**envelope, "data": data})
    if action in WORKER_ACTIONS and worker is not None:
        data = {
            "action": WORKER_ACTIONS[action],
            "target_worker_id": worker,
            "reason": body.get("reason") or None,
            "force": bool(body.get("force", False)),
        }
        return CommandWorker.model_validate({**envelope, "data": data})
    return None


def _resume_data(header: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A reply from a child run names the child in ``parent_message_id``; a user reply
    answers the question the run asked (its question id is the run's message id)."""
    child = _id(header.get("parent_message_id"))
    status = TERMINAL.get(str(body.get("status", "")).upper())
    content = _content(body.get("content", ""))
    if child is not None and header.get("source_agent_type") and status is not None:
        return {
            "reason": "child_completed",
            "child_run_id": child,
            "status": status,
            "content": content,
            "result": body,
        }
    return {
        "reason": "user_reply",
        "question_id": _id(header.get("message_id")) or "unknown",
        "answer": body,
        "content": content,
    }


def _data_event(target: StreamTarget, message: dict[str, Any]) -> Event | None:
    layout = message.get("data") or {}
    choices = layout.get("choices") or [{}]
    delta = choices[0].get("delta") or {}
    raw = delta.get("content")
    text = raw if isinstance(raw, str) else json.dumps(raw)
    envelope: dict[str, Any] = {
        "session_id": target.name,
        "run_id": _id(message.get("message_id")) or "redis",
        "parent_run_id": _id(message.get("parent_message_id")),
        "agent_type": _id(message.get("source_agent_type")),
        "trace_id": _id(message.get("trace_id")),
    }
    event_type = message.get("event_type")
    content_type = str(layout.get("contentType", ""))
    if event_type == "finalAnswer":
        return MessageCompleted.model_validate({**envelope, "data": {"content": text}})
    if content_type in ASK_USER_CONTENT_TYPES:
        data = {"question_id": envelope["run_id"], "prompt": text}
        return RunAskedUser.model_validate({**envelope, "data": data})
    if (
        event_type in ("answerDelta", "reasoningLogDelta")
        and content_type not in STATE_CONTENT_TYPES
    ):
        return MessageDelta.model_validate({**envelope, "data": {"text": text}})
    state = str(event_type or "data")[:256] or "data"
    return RunState.model_validate({**envelope, "data": {"state": state, "detail": text[:4096]}})


def _reload_ack(ack: dict[str, Any]) -> Event:
    ok = ack.get("status") == "success"
    data = {
        "reload_id": ack["reload_id"],
        "ok": ok,
        "error": None if ok else (ack.get("error") or "reload failed"),
        "version_before": _id(str(ack.get("version_before", ""))),
        "version_after": _id(str(ack.get("version_after", ""))),
    }
    return PluginsReloaded.model_validate({"worker_id": _id(ack.get("worker_id")), "data": data})


def _clean_text(raw: bytes) -> str | None:
    """``raw`` as text if it is UTF-8 without NUL (what an event body can hold), else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def json_safe(raw: bytes) -> str:
    text = _clean_text(raw)
    return text if text is not None else "base64:" + base64.b64encode(raw).decode()


def state_key(target: StreamTarget) -> str:
    """The ``state.updated`` key of a generic stream: its name, base64 if it holds a
    NUL (an event body cannot), at most 256 characters."""
    return json_safe(target.key)[:256] or "-"


def _generic(target: StreamTarget, fields: Fields) -> Event:
    # Binary fields are base64 here; the exact bytes are in the header anyway.
    value = {json_safe(name): json_safe(value) for name, value in fields}
    digest = hashlib.sha256(target.key).hexdigest()[:16]
    return StateUpdated.model_validate(
        {
            "session_id": GENERIC_SESSION,
            "run_id": f"stream-{digest}",
            "data": {"scope": "global", "key": state_key(target), "value": value},
        }
    )
