"""The worker SDK: subclass :class:`GatewayWorker` (by-framework's names)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runners.context import AgentContext


class RetryableError(Exception):
    """Raise (or subclass) for a failure worth another attempt: the command is redelivered
    after ``retry_delay`` until ``max_deliver``, then the run is dead-lettered."""

    retryable = True


@dataclass(frozen=True, slots=True)
class Command:
    """What a handler gets: the ask, with the ids of the run it starts."""

    run_id: str
    session_id: str
    agent_type: str
    content: Any
    """A string, or a list of content parts (dicts)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    user_code: str | None = None
    trace_id: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    message_id: str = ""
    """The id of the command event (by-framework's message id)."""
    group_id: str | None = None
    """The group this run is a member of, if a parent dispatched it in one."""

    @property
    def text(self) -> str:
        """The content as plain text (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if isinstance(part, dict))


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler may return this (or a str, or any JSON value) to complete its run."""

    content: Any = None
    data: Any = None


class GatewayWorker(ABC):
    """Serve one or more agent types.

    >>> class Echo(GatewayWorker):
    ...     def get_agent_types(self) -> list[str]:
    ...         return ["echo"]
    ...     async def process_command(self, command, context):
    ...         await context.emit_chunk(command.text)
    ...         return command.text
    """

    steering: bool = False
    """Set ``steering = True`` on a worker class whose handlers read ``ctx.steering()``:
    a ``command.steer`` for a session with a live run of this class then joins that run's
    inbox instead of starting a new run."""

    @abstractmethod
    def get_agent_types(self) -> list[str]:
        """The agent types this worker serves (one durable consumer group each)."""

    @abstractmethod
    async def process_command(self, command: Command, context: AgentContext) -> Any:
        """Handle one run. Return a str / :class:`Reply` / JSON value to complete it;
        raise to fail it (``RetryableError`` or ``retryable = True`` to retry)."""


__all__ = ["Command", "GatewayWorker", "Reply", "RetryableError"]
