"""by-framework's worker call shapes (see :mod:`runners.compat`): its protocol objects,
an :class:`AgentContext` that accepts them, and a :class:`GatewayWorker` whose
``process_command`` gets an :class:`AskAgentCommand` and may return an
:class:`AgentTaskResult` or a ``{"status", "content"}`` dict."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from runners.context import AgentContext as NativeContext
from runners.worker import Command, Reply
from runners.worker import GatewayWorker as NativeWorker


class CompatError(RuntimeError):
    """A by-framework call shape that has no jetledger equivalent; the message says what
    to use instead."""


class TaskFailedError(Exception):
    """A handler returned status ``FAILED``: the run ends ``run.failed`` with this."""


# -- by-framework's protocol objects -----------------------------------------------------


@dataclass(frozen=True)
class ArtifactEvent:
    """An artifact by URL (by-framework's shape); stored as a ``url`` artifact."""

    url: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StateChangeEvent:
    state: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamChunkEvent:
    content: str | None = None
    role: str = "assistant"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentTaskResult:
    """What a by-framework handler returns; ``reply_data`` and ``extra_payload`` end up in
    ``run.completed``'s ``result``."""

    status: str = "COMPLETED"
    content: Any = ""
    reply_data: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra_payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageHeader:
    """by-framework's header, filled from the jetledger command."""

    message_id: str
    session_id: str
    trace_id: str
    source_agent_type: str = ""
    target_agent_type: str = ""
    parent_message_id: str = ""
    task_group_id: str = ""
    user_code: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AskAgentCommand:
    """The command a by-framework handler gets; ``native`` is jetledger's."""

    header: MessageHeader
    content: Any
    native: Command
    wait_for_reply: bool = False
    extra_payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, command: Command) -> AskAgentCommand:
        header = MessageHeader(
            message_id=command.message_id,
            session_id=command.session_id,
            trace_id=command.trace_id or "",
            target_agent_type=command.agent_type,
            parent_message_id=command.parent_run_id or "",
            user_code=command.user_code or "",
            metadata=dict(command.metadata),
        )
        return cls(header=header, content=command.content, native=command)


# -- the context -------------------------------------------------------------------------


def _text(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


class AgentContext:
    """jetledger's :class:`runners.AgentContext` with by-framework's call shapes; every
    other attribute (``call_tool``, ``set_state``, ...) is the native one."""

    def __init__(self, native: NativeContext) -> None:
        self.native = native

    def __getattr__(self, name: str) -> Any:
        return getattr(self.native, name)

    @property
    def current_agent_id(self) -> str:
        return self.native.agent_type

    @property
    def parent_message_id(self) -> str:
        return self.native.parent_run_id or ""

    async def emit_chunk(self, event: StreamChunkEvent | str, *_: Any, **__: Any) -> None:
        """A text chunk; by-framework's layout arguments (event_type, ...) are ignored."""
        text = event.content if isinstance(event, StreamChunkEvent) else event
        await self.native.emit_chunk(text or "")

    async def emit_state(self, event: StateChangeEvent | str | Enum, *_: Any, **__: Any) -> None:
        state = event.state if isinstance(event, StateChangeEvent) else event
        await self.native.emit_state(_text(state))

    async def emit_artifact(self, event: ArtifactEvent | str | Enum, *args: Any, **kw: Any) -> None:
        """by-framework's ``emit_artifact(ArtifactEvent(url=...))`` or a bare URL; the
        native ``emit_artifact(name, content, ...)`` passes through."""
        if args and isinstance(args[0], bytes | bytearray):
            await self.native.emit_artifact(_text(event), bytes(args[0]), *args[1:], **kw)
            return
        url = event.url if isinstance(event, ArtifactEvent) else _text(event)
        await self.native.emit_artifact(
            url, url.encode(), mime_type="text/uri-list", artifact_type="url"
        )


# -- results -----------------------------------------------------------------------------

_WAITING = {"WAITING_AGENT", "WAITING_USER", "QUEUED", "CALLING_AGENT"}


def to_reply(result: Any) -> Any:
    """A by-framework return value as a jetledger one (str, :class:`Reply`, JSON)."""
    if isinstance(result, AgentTaskResult):
        status, content = _text(result.status).upper(), result.content
        data = {"reply_data": result.reply_data, "metadata": result.metadata}
        data |= {"extra_payload": result.extra_payload} if result.extra_payload else {}
    elif isinstance(result, dict) and "status" in result:
        status, content = _text(result["status"]).upper(), result.get("content")
        data = {key: value for key, value in result.items() if key not in ("status", "content")}
    else:
        return result
    if status == "FAILED":
        raise TaskFailedError(str(content or data.get("reply_data") or "the handler failed"))
    if status in _WAITING:
        raise CompatError(
            f"status {status} means 'call me back later' in by-framework; on jetledger "
            "call_agent / ask_user return their answer to the handler instead (DESIGN G5)"
        )
    return Reply(content=content, data=data or None)


# -- the worker --------------------------------------------------------------------------

Handler = Callable[[Any, Any, Any], Awaitable[Any]]

_raw_results: weakref.WeakKeyDictionary[NativeContext, Any] = weakref.WeakKeyDictionary()
"""What each live run's handler returned, before :func:`to_reply`: by-framework's
``on_task_complete`` hooks get that, not the converted value."""


def raw_result(context: NativeContext, converted: Any) -> Any:
    """The by-framework return value of the run of ``context`` (else ``converted``)."""
    return _raw_results.get(context, converted)


def _adapt(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def process_command(self: Any, command: Any, context: Any) -> Any:
        if isinstance(command, AskAgentCommand):  # a subclass calling super(): adapted
            return await handler(self, command, context)
        result = await handler(self, AskAgentCommand.of(command), AgentContext(context))
        _raw_results[context] = result
        return to_reply(result)

    process_command.__compat_adapted__ = True  # type: ignore[attr-defined]
    return process_command


class GatewayWorker(NativeWorker):
    """Subclass with by-framework's ``process_command(command, context)`` semantics."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handler = cls.__dict__.get("process_command")
        if handler is not None and not getattr(handler, "__compat_adapted__", False):
            cls.process_command = _adapt(handler)  # type: ignore[method-assign,assignment]


__all__ = [
    "AgentContext",
    "AgentTaskResult",
    "ArtifactEvent",
    "AskAgentCommand",
    "CompatError",
    "GatewayWorker",
    "MessageHeader",
    "StateChangeEvent",
    "StreamChunkEvent",
    "TaskFailedError",
    "raw_result",
    "to_reply",
]
