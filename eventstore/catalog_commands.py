"""Commands (DESIGN §3): what users, agents and operators ask the system to do.

Commands travel on ``jl.ctrl.*`` subjects, and any NATS client may publish them, so a
command needs no more than ``type``, ``session_id`` and ``data``; the system fills the
rest deterministically. Worker administration (``command.reload_plugins``,
``command.worker``) concerns no session and needs only ``type`` and ``data``.

Re-exported by :mod:`eventstore.catalog`; import them from there.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, JsonValue, model_validator

from eventstore.catalog_common import CancelMode, Content, IdStr, ObjectRef, ShortText
from eventstore.envelope import Event, Payload

ResumeReason = Literal["user_reply", "child_completed", "group_completed", "timeout"]
TerminalStatus = Literal["completed", "failed", "cancelled", "dead_lettered"]


class ReplyTo(Payload):
    """Where a child run's result goes (G5): the waiting parent and the step it waits in.
    The child's worker publishes ``command.resume`` to ``agent_type`` when the child ends."""

    run_id: IdStr
    session_id: IdStr
    agent_type: IdStr
    step: Annotated[int, Field(ge=0)]


class CommandAskData(Payload):
    """Start a run of an agent type (by-framework ``ASK_AGENT``).

    The envelope carries the routing and the new run's identity: ``agent_type``,
    ``session_id``, ``run_id`` and, for a call from another run, ``parent_run_id`` and
    ``root_run_id``. ``wait_for_reply`` makes the caller wait (G5) for the callee's result.
    """

    content: Content
    wait_for_reply: bool = False
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    target_worker_id: IdStr | None = Field(
        default=None, description="route to this worker instead of the agent type's group"
    )
    attachments: list[ObjectRef] = Field(default_factory=list)
    reply_to: ReplyTo | None = Field(
        default=None, description="set on a child run whose parent waits for its result"
    )
    timeout_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="deadline of the run, from its first start"
    )


class CommandAsk(Event):
    type: Literal["command.ask"] = "command.ask"
    data: CommandAskData


class CommandResumeData(Payload):
    """Wake a waiting run (by-framework ``RESUME``); the envelope's ``run_id`` names it.

    * ``user_reply``: the answer to ``run.asked_user``; needs ``question_id``, the
      answer goes in ``answer`` (structured) and/or ``content`` (what the user wrote).
    * ``child_completed``: a child run ended; needs ``child_run_id`` and its ``status``,
      the child's result goes in ``result``.
    * ``group_completed``: the group named by the envelope's ``group_id`` reached its
      outcome; ``status`` and ``result`` describe it.
    * ``timeout``: the wait's ``timeout_s`` ran out.
    """

    reason: ResumeReason = "user_reply"
    question_id: IdStr | None = None
    answer: JsonValue = None
    content: Content | None = None
    child_run_id: IdStr | None = None
    status: TerminalStatus | None = None
    result: JsonValue = None

    @model_validator(mode="after")
    def _check_reason(self) -> CommandResumeData:
        if self.reason == "user_reply" and self.question_id is None:
            raise ValueError("a user_reply resume needs the 'question_id' it answers")
        if self.reason == "child_completed" and (self.child_run_id is None or self.status is None):
            raise ValueError("a child_completed resume needs 'child_run_id' and 'status'")
        return self


class CommandResume(Event):
    type: Literal["command.resume"] = "command.resume"
    data: CommandResumeData


class CommandCancelData(Payload):
    """Cancel a run (by-framework ``CANCEL_TASK``); ``cascade`` also cancels its subtree.

    ``target_worker_id`` routes the command to the worker executing the run.
    """

    target_run_id: IdStr
    mode: CancelMode = "graceful"
    reason: ShortText | None = None
    requested_by: IdStr | None = None
    cascade: bool = True
    target_worker_id: IdStr | None = None


class CommandCancel(Event):
    type: Literal["command.cancel"] = "command.cancel"
    data: CommandCancelData


class CommandSteerData(Payload):
    """Append a message to the active run of a session (or to ``target_run_id``);
    ``target_worker_id`` routes it to the worker executing that run."""

    content: Content
    target_run_id: IdStr | None = None
    attachments: list[ObjectRef] = Field(default_factory=list)
    target_worker_id: IdStr | None = None


class CommandSteer(Event):
    type: Literal["command.steer"] = "command.steer"
    data: CommandSteerData


class CommandReloadPluginsData(Payload):
    """Reload plugins on one worker (``target_worker_id``) or on every worker of the
    envelope's ``agent_type``; each worker answers with ``plugins.reloaded``."""

    reload_id: IdStr
    reason: ShortText | None = None
    target_worker_id: IdStr | None = None


class CommandReloadPlugins(Event):
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    type: Literal["command.reload_plugins"] = "command.reload_plugins"
    data: CommandReloadPluginsData


class CommandWorkerData(Payload):
    """Suspend, resume or evict one worker (by-framework ``SUSPEND/RESUME/EVICT_WORKER``).

    ``force`` evicts without waiting for in-flight runs to finish.
    """

    action: Literal["suspend", "resume", "evict"]
    target_worker_id: IdStr
    reason: ShortText | None = None
    force: bool = False


class CommandWorker(Event):
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    type: Literal["command.worker"] = "command.worker"
    data: CommandWorkerData


__all__ = [
    "CommandAsk",
    "CommandAskData",
    "CommandCancel",
    "CommandCancelData",
    "CommandReloadPlugins",
    "CommandReloadPluginsData",
    "CommandResume",
    "CommandResumeData",
    "CommandSteer",
    "CommandSteerData",
    "CommandWorker",
    "CommandWorkerData",
    "ReplyTo",
    "ResumeReason",
    "TerminalStatus",
]
