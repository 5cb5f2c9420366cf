"""The events of a handler's tool call, and the replay of a recorded one.

``ctx.call_tool`` runs a tool between ``tool.call.started`` and ``tool.call.completed``
(which carries the result or the error, and the duration). A run re-invoked after the
call (G5) gets the recorded outcome back instead: the result, or the recorded error
raised again as :class:`ToolCallReplayError`. Separate from :mod:`runners.context` so
that the context keeps only the order of the calls (their positions in the journal),
and the shape of the tool-call events lives in one place.
"""

from __future__ import annotations

import time
from typing import Any

from eventstore.catalog import (
    ToolCallCompleted,
    ToolCallCompletedData,
    ToolCallStarted,
    ToolCallStartedData,
)


class ToolCallReplayError(Exception):
    """A tool call that failed before the run was re-invoked fails again, without
    running the tool again; the message is the recorded error."""


def replayed_outcome(recorded: ToolCallCompleted) -> Any:
    """The result of a recorded tool call; its recorded error is raised again."""
    if recorded.data.error is not None:
        raise ToolCallReplayError(recorded.data.error)
    return recorded.data.result


def call_started(
    envelope: dict[str, Any], call_id: str, name: str, parameters: dict[str, Any]
) -> ToolCallStarted:
    return ToolCallStarted(
        **envelope,
        data=ToolCallStartedData(tool_call_id=call_id, tool_name=name, parameters=parameters),
    )


def call_failed(
    envelope: dict[str, Any], call_id: str, name: str, error: Exception, started: float
) -> ToolCallCompleted:
    """The completion of a call whose tool raised ``error``, ``started`` at that
    ``time.monotonic``."""
    return ToolCallCompleted(
        **envelope,
        data=ToolCallCompletedData(
            tool_call_id=call_id,
            tool_name=name,
            error=f"{type(error).__name__}: {error}",
            duration_ms=_since_ms(started),
        ),
    )


def call_succeeded(
    envelope: dict[str, Any], call_id: str, name: str, result: Any, started: float
) -> ToolCallCompleted:
    """The completion of a call whose tool returned ``result``."""
    return ToolCallCompleted(
        **envelope,
        data=ToolCallCompletedData(
            tool_call_id=call_id, tool_name=name, result=result, duration_ms=_since_ms(started)
        ),
    )


def _since_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


__all__ = [
    "ToolCallReplayError",
    "call_failed",
    "call_started",
    "call_succeeded",
    "replayed_outcome",
]
