"""One realistic, valid instance of every catalog type, for tests, docs and benchmarks.

The examples tell one story: a user asks a ``researcher`` agent, which calls tools,
fans out to two ``summarizer`` runs, asks the user a question and finishes. Ids and
times are fixed, so ``example_events()`` returns equal events on every call.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

from eventstore.catalog import (
    ArtifactCreated,
    ArtifactCreatedData,
    ChildOutcome,
    CommandAsk,
    CommandAskData,
    CommandCancel,
    CommandCancelData,
    CommandReloadPlugins,
    CommandReloadPluginsData,
    CommandResume,
    CommandResumeData,
    CommandSteer,
    CommandSteerData,
    CommandWorker,
    CommandWorkerData,
    ContentPart,
    ErrorInfo,
    GroupDispatched,
    GroupDispatchedData,
    GroupMember,
    IngestRejected,
    IngestRejectedData,
    MessageCompleted,
    MessageCompletedData,
    MessageDelta,
    MessageDeltaData,
    ObjectRef,
    PluginsReloaded,
    PluginsReloadedData,
    RunAskedUser,
    RunAskedUserData,
    RunCalled,
    RunCalledData,
    RunCancelled,
    RunCancelledData,
    RunCompleted,
    RunCompletedData,
    RunDeadLettered,
    RunDeadLetteredData,
    RunFailed,
    RunFailedData,
    RunResumed,
    RunResumedData,
    RunStarted,
    RunStartedData,
    RunState,
    RunStateData,
    RunWaiting,
    RunWaitingData,
    StateUpdated,
    StateUpdatedData,
    SteeringDropped,
    SteeringDroppedData,
    SteeringInjected,
    SteeringInjectedData,
    ToolCallCompleted,
    ToolCallCompletedData,
    ToolCallStarted,
    ToolCallStartedData,
    WorkerStarted,
    WorkerStartedData,
    WorkerStopped,
    WorkerStoppedData,
)
from eventstore.envelope import Event

SESSION_ID = "sess-7f3a"
ROOT_RUN_ID = "run-root-01"
CHILD_RUN_IDS = ("run-child-01", "run-child-02")
GROUP_ID = "grp-01"
WORKER_ID = "worker-a1"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
_START = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

_REPORT = b"# Findings\n\nNATS JetStream keeps the whole log; projections are derived.\n"
_REPORT_REF = ObjectRef(
    bucket="jl-artifacts",
    name=f"{ROOT_RUN_ID}/report-full.md",
    size=48_213,
    sha256=hashlib.sha256(b"report-full").hexdigest(),
    mime_type="text/markdown",
)


def _envelope(n: int, **fields: str) -> dict[str, object]:
    """Fixed id and time for the n-th example, plus the given envelope fields."""
    return {"id": f"evt-{n:04d}", "time": _START + timedelta(seconds=n), **fields}


def _run(n: int, run_id: str = ROOT_RUN_ID, **fields: str) -> dict[str, object]:
    return _envelope(
        n,
        session_id=SESSION_ID,
        run_id=run_id,
        root_run_id=ROOT_RUN_ID,
        agent_type="researcher",
        worker_id=WORKER_ID,
        trace_id=TRACE_ID,
        user_code="u-42",
        **fields,
    )


def _commands() -> list[Event]:
    return [
        CommandAsk.model_validate(
            {
                **_envelope(
                    1,
                    session_id=SESSION_ID,
                    run_id=ROOT_RUN_ID,
                    root_run_id=ROOT_RUN_ID,
                    agent_type="researcher",
                    trace_id=TRACE_ID,
                    user_code="u-42",
                ),
                "data": CommandAskData(
                    content=[
                        ContentPart(type="text", text="Summarize the attached paper."),
                        ContentPart(type="file", ref=_REPORT_REF, name="paper.md"),
                    ],
                    wait_for_reply=False,
                    metadata={"channel": "webui", "locale": "en-GB", "priority": 2},
                    attachments=[_REPORT_REF],
                ),
            }
        ),
        CommandResume.model_validate(
            {
                **_envelope(
                    2,
                    session_id=SESSION_ID,
                    run_id=ROOT_RUN_ID,
                    agent_type="researcher",
                    user_code="u-42",
                ),
                "data": CommandResumeData(
                    reason="user_reply",
                    question_id="q-depth",
                    answer={"depth": "detailed"},
                    content="Detailed, please.",
                ),
            }
        ),
        CommandCancel.model_validate(
            {
                **_envelope(3, session_id=SESSION_ID, user_code="u-42"),
                "data": CommandCancelData(
                    target_run_id=CHILD_RUN_IDS[1],
                    mode="graceful",
                    reason="user pressed stop",
                    requested_by="u-42",
                    target_worker_id=WORKER_ID,
                ),
            }
        ),
        CommandSteer.model_validate(
            {
                **_envelope(4, session_id=SESSION_ID, agent_type="researcher", user_code="u-42"),
                "data": CommandSteerData(content="Focus on durability guarantees."),
            }
        ),
        CommandReloadPlugins.model_validate(
            {
                **_envelope(5, agent_type="researcher", user_code="ops"),
                "data": CommandReloadPluginsData(reload_id="reload-9", reason="new prompt pack"),
            }
        ),
        CommandWorker.model_validate(
            {
                **_envelope(6, user_code="ops"),
                "data": CommandWorkerData(
                    action="suspend", target_worker_id=WORKER_ID, reason="node drain"
                ),
            }
        ),
    ]


def _run_output() -> list[Event]:
    inline_notes = base64.b64encode(_REPORT).decode()
    return [
        RunStarted.model_validate({**_run(10), "data": RunStartedData(attempt=1, command_seq=1)}),
        MessageDelta.model_validate(
            {**_run(11), "data": MessageDeltaData(text="Reading the paper", index=0)}
        ),
        MessageCompleted.model_validate(
            {**_run(12), "data": MessageCompletedData(content="Here is the summary.")}
        ),
        RunState.model_validate(
            {
                **_run(13),
                "data": RunStateData(state="summarizing", progress=0.5, detail="2 of 4"),
            }
        ),
        ToolCallStarted.model_validate(
            {
                **_run(14),
                "data": ToolCallStartedData(
                    tool_call_id="call-1",
                    tool_name="web_search",
                    parameters={"query": "jetstream exactly once", "top_k": 5},
                ),
            }
        ),
        ToolCallCompleted.model_validate(
            {
                **_run(15),
                "data": ToolCallCompletedData(
                    tool_call_id="call-1",
                    tool_name="web_search",
                    result={"hits": [{"title": "JetStream", "score": 0.93}], "truncated": None},
                    duration_ms=412,
                ),
            }
        ),
        ArtifactCreated.model_validate(
            {
                **_run(16),
                "data": ArtifactCreatedData(
                    artifact_id="art-notes",
                    artifact_type="file",
                    name="notes.md",
                    mime_type="text/markdown",
                    content_base64=inline_notes,
                    metadata={"pages": 1},
                ),
            }
        ),
        StateUpdated.model_validate(
            {
                **_run(17),
                "data": StateUpdatedData(
                    scope="session", key="preferred_depth", value={"level": "detailed"}
                ),
            }
        ),
        GroupDispatched.model_validate(
            {
                **_run(18, group_id=GROUP_ID),
                "data": GroupDispatchedData(
                    strategy="quorum:1",
                    members=[
                        GroupMember(
                            index=i, run_id=run_id, agent_type="summarizer", content=f"part {i}"
                        )
                        for i, run_id in enumerate(CHILD_RUN_IDS)
                    ],
                    timeout_s=120.0,
                    max_concurrent=2,
                ),
            }
        ),
        RunWaiting.model_validate(
            {
                **_run(19),
                "data": RunWaitingData(on="group", group_id=GROUP_ID, timeout_s=120.0),
            }
        ),
        RunAskedUser.model_validate(
            {
                **_run(20),
                "data": RunAskedUserData(
                    question_id="q-depth",
                    prompt="Short or detailed summary?",
                    answer_schema={
                        "type": "object",
                        "properties": {"depth": {"enum": ["short", "detailed"]}},
                        "required": ["depth"],
                    },
                    timeout_s=3600.0,
                ),
            }
        ),
        SteeringInjected.model_validate(
            {
                **_run(21),
                "data": SteeringInjectedData(
                    steer_event_id="evt-0004", content="Focus on durability guarantees."
                ),
            }
        ),
        SteeringDropped.model_validate(
            {
                **_run(22, run_id=CHILD_RUN_IDS[1], parent_run_id=ROOT_RUN_ID),
                "data": SteeringDroppedData(steer_event_id="evt-0004", reason="run_ended"),
            }
        ),
        RunCalled.model_validate(
            {
                **_run(50),
                "data": RunCalledData(
                    step=0, child_run_id=CHILD_RUN_IDS[0], target_agent_type="summarizer"
                ),
            }
        ),
        RunResumed.model_validate(
            {
                **_run(51),
                "data": RunResumedData(
                    step=0,
                    kind="call",
                    resume_event_id="evt-0052",
                    outcomes=[
                        ChildOutcome(
                            run_id=CHILD_RUN_IDS[0], status="completed", content="A summary."
                        )
                    ],
                ),
            }
        ),
    ]


def _terminal() -> list[Event]:
    child = {"parent_run_id": ROOT_RUN_ID, "group_id": GROUP_ID}
    return [
        RunCompleted.model_validate(
            {
                **_run(30),
                "data": RunCompletedData(
                    content="JetStream gives durable, replayable agent runs.",
                    result={"summary_words": 7},
                ),
            }
        ),
        RunFailed.model_validate(
            {
                **_run(31, run_id=CHILD_RUN_IDS[0], **child),
                "data": RunFailedData(
                    error=ErrorInfo(type="TimeoutError", message="model did not answer in 60 s"),
                    code="runner.timeout",
                    retryable=True,
                ),
            }
        ),
        RunCancelled.model_validate(
            {
                **_run(32, run_id=CHILD_RUN_IDS[1], **child),
                "data": RunCancelledData(
                    reason="user pressed stop", requested_by="u-42", mode="graceful"
                ),
            }
        ),
        RunDeadLettered.model_validate(
            {
                **_envelope(33, session_id="sess-0b1d", run_id="run-crashy", agent_type="coder"),
                "data": RunDeadLetteredData(
                    attempts=5,
                    last_error=ErrorInfo(type="WorkerLost", message="no heartbeat for 30 s"),
                ),
            }
        ),
    ]


def _system() -> list[Event]:
    return [
        WorkerStarted.model_validate(
            {
                **_envelope(40, worker_id=WORKER_ID),
                "data": WorkerStartedData(
                    agent_types=["researcher", "summarizer"],
                    max_concurrency=8,
                    version="0.1.0",
                    hostname="node-3",
                    pid=4242,
                ),
            }
        ),
        WorkerStopped.model_validate(
            {**_envelope(41, worker_id=WORKER_ID), "data": WorkerStoppedData(reason="SIGTERM")}
        ),
        PluginsReloaded.model_validate(
            {
                **_envelope(42, worker_id=WORKER_ID, agent_type="researcher"),
                "data": PluginsReloadedData(
                    reload_id="reload-9", plugins=["prompt-pack", "audit-log"], ok=True
                ),
            }
        ),
        IngestRejected.model_validate(
            {
                **_envelope(43),
                "data": IngestRejectedData(
                    subject="jl.ctrl.agent_type.researcher",
                    seq=57,
                    reason="command.ask: data.content: Field required",
                    body_excerpt='{"type": "command.ask", "session_id": "s9", "data": {}}',
                    headers={"Nats-Msg-Id": "foreign-1"},
                ),
            }
        ),
    ]


def example_events() -> list[Event]:
    """One valid event of every catalog type, in catalog order of kinds."""
    return [*_commands(), *_run_output(), *_terminal(), *_system()]


__all__ = ["example_events"]
