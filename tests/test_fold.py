"""Unit tests of the pure fold (projections.fold): keys_for + fold, no database, no server.

Records are built from real catalog events with ascending seqs. ``FakeReadModel`` plays
the database between batches the way a backend does: it loads exactly the rows named by
``keys_for`` (as fresh copies, like a round trip through SQL) and upserts ``Changes``.
"""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.catalog import (
    CATALOG,
    ArtifactCreated,
    ArtifactCreatedData,
    CommandAsk,
    CommandAskData,
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
    RunAskedUser,
    RunAskedUserData,
    RunCancelled,
    RunCancelledData,
    RunCompleted,
    RunCompletedData,
    RunDeadLettered,
    RunDeadLetteredData,
    RunFailed,
    RunFailedData,
    RunStarted,
    RunStartedData,
    RunState,
    RunStateData,
    RunWaiting,
    RunWaitingData,
    StateUpdated,
    StateUpdatedData,
    ToolCallCompleted,
    ToolCallCompletedData,
    ToolCallStarted,
    ToolCallStartedData,
    WorkerStarted,
    WorkerStartedData,
    WorkerStopped,
    WorkerStoppedData,
)
from eventstore.catalog_examples import example_events
from eventstore.codec import decode
from eventstore.envelope import Event, Payload
from eventstore.errors import SubjectError
from eventstore.routing import subject_for
from projections.contract import BatchKeys, Changes, Snapshot, SourceRecord
from projections.fold import fold, keys_for
from projections.rows import (
    EventRow,
    GroupRow,
    RejectedRow,
    RunRow,
    SessionRow,
    StateRow,
    TranscriptRow,
    WorkerRow,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SHA = "ab" * 32


# -- building logs ---------------------------------------------------------------------


class Log:
    """A log under construction: ids ``e<n>``, seq ``n``, time ``T0 + n`` seconds."""

    def __init__(self) -> None:
        self.records: list[SourceRecord] = []

    @property
    def next_seq(self) -> int:
        return len(self.records) + 1

    def add(self, event_class: type[Event], data: Payload, **envelope: Any) -> Event:
        seq = self.next_seq
        fields = {"id": f"e{seq}", "time": T0 + timedelta(seconds=seq), **envelope}
        event = event_class.model_validate({**fields, "data": data})
        try:
            subject = subject_for(event)
        except SubjectError:
            subject = "jl.ctrl.agent_type.unrouted"
        self.records.append(SourceRecord(seq, subject, event))
        return event

    def garbage(self, body: bytes = b'{"type": "message.delta", "data": {}}') -> None:
        seq = self.next_seq
        subject = "jl.ctrl.agent_type.echo"
        item = decode(body, seq=seq, subject=subject)
        assert not isinstance(item, Event)
        self.records.append(SourceRecord(seq, subject, item))


def env(session_id: str, run_id: str, **more: Any) -> dict[str, Any]:
    return {"session_id": session_id, "run_id": run_id, "agent_type": "echo", **more}


def run_story(
    log: Log,
    session_id: str,
    run_id: str,
    *,
    chunks: tuple[str, ...] = ("Hel", "lo"),
    end: str = "completed",
    worker_id: str = "w1",
    **envelope: Any,
) -> None:
    """ask -> started -> deltas -> terminal, for one run."""
    e = env(session_id, run_id, **envelope)
    log.add(CommandAsk, CommandAskData(content=f"ask {run_id}"), user_code="u1", **e)
    log.add(RunStarted, RunStartedData(attempt=1), worker_id=worker_id, **e)
    for index, chunk in enumerate(chunks):
        log.add(MessageDelta, MessageDeltaData(text=chunk, index=index), worker_id=worker_id, **e)
    terminal(log, end, worker_id=worker_id, **e)


def terminal(log: Log, end: str, **envelope: Any) -> None:
    if end == "completed":
        log.add(RunCompleted, RunCompletedData(result={"ok": True}), **envelope)
    elif end == "completed_with_content":
        log.add(RunCompleted, RunCompletedData(content="final answer"), **envelope)
    elif end == "failed":
        error = ErrorInfo(type="Boom", message="it broke")
        log.add(RunFailed, RunFailedData(error=error, code="runner.exception"), **envelope)
    elif end == "cancelled":
        log.add(RunCancelled, RunCancelledData(reason="stop", requested_by="u1"), **envelope)
    elif end == "dead_lettered":
        error = ErrorInfo(type="WorkerLost", message="gone")
        log.add(RunDeadLettered, RunDeadLetteredData(attempts=3, last_error=error), **envelope)
    else:
        raise AssertionError(end)


# -- a read model between batches -------------------------------------------------------


@dataclass
class FakeReadModel:
    """Stores Changes and loads Snapshots by key, like a backend (fresh copies both ways)."""

    events: list[EventRow] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    runs: dict[str, RunRow] = field(default_factory=dict)
    sessions: dict[str, SessionRow] = field(default_factory=dict)
    groups: dict[str, GroupRow] = field(default_factory=dict)
    turns: dict[str, TranscriptRow] = field(default_factory=dict)
    workers: dict[str, WorkerRow] = field(default_factory=dict)
    states: dict[tuple[str, str, str], StateRow] = field(default_factory=dict)
    checkpoint: int = 0

    def load(self, keys: BatchKeys) -> Snapshot:
        def pick(table: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
            return {key: copy.deepcopy(table[key]) for key in wanted if key in table}

        return Snapshot(
            runs=pick(self.runs, keys.run_ids),
            sessions=pick(self.sessions, keys.session_ids),
            groups=pick(self.groups, keys.group_ids),
            turns=pick(self.turns, keys.turn_ids),
            workers=pick(self.workers, keys.worker_ids),
        )

    def commit(self, changes: Changes) -> None:
        assert changes.last_seq > self.checkpoint
        changes = copy.deepcopy(changes)
        self.events.extend(changes.events)
        self.rejected.extend(changes.rejected)
        for name in ("runs", "sessions", "groups", "turns", "workers", "states"):
            getattr(self, name).update(getattr(changes, name))
        self.checkpoint = changes.last_seq


def project(records: list[SourceRecord], cuts: list[int] | tuple[int, ...] = ()) -> FakeReadModel:
    """Fold ``records`` in batches split before each index in ``cuts``."""
    model = FakeReadModel()
    bounds = [0, *sorted({cut for cut in cuts if 0 < cut < len(records)}), len(records)]
    for start, stop in itertools.pairwise(bounds):
        batch = records[start:stop]
        model.commit(fold(batch, model.load(keys_for(batch))))
    return model


def fold_once(log: Log) -> Changes:
    return fold(log.records, Snapshot())


# -- every type, EventLog, rejections --------------------------------------------------


def test_every_example_event_type_folds_into_an_event_row() -> None:
    examples = example_events()
    records = [SourceRecord(i + 1, subject_for(e), e) for i, e in enumerate(examples)]

    changes = fold(records, Snapshot())

    assert {row.type for row in changes.events} == set(CATALOG)
    assert [row.seq for row in changes.events] == list(range(1, len(examples) + 1))
    assert changes.rejected == []
    assert changes.last_seq == len(examples)
    for row, event in zip(changes.events, examples, strict=True):
        assert row.id == event.id
        assert row.schema == event.schema_version
        assert row.subject == subject_for(event)
        assert row.data == event.data.model_dump(mode="json", by_alias=True, exclude_none=False)
    assert changes.events[0].data["attachments"][0]["sha256"]  # nested refs are JSON


def test_undecodable_becomes_rejected_row_and_ingest_rejected_is_an_event() -> None:
    log = Log()
    log.garbage(b"\xff not json")
    log.add(
        IngestRejected,
        IngestRejectedData(subject="jl.ctrl.x", seq=1, reason="not JSON", body_excerpt="?"),
    )
    log.garbage(b'{"type": "no.such.type", "session_id": "s1", "data": {}}')

    changes = fold_once(log)

    assert [(r.seq, r.subject) for r in changes.rejected] == [
        (1, "jl.ctrl.agent_type.echo"),
        (3, "jl.ctrl.agent_type.echo"),
    ]
    assert changes.rejected[0].reason.startswith("not JSON")
    assert "no.such.type" in changes.rejected[1].reason
    assert changes.rejected[1].body_excerpt.startswith('{"type": "no.such.type"')
    assert [(e.seq, e.type) for e in changes.events] == [(2, "ingest.rejected")]
    assert changes.last_seq == 3


def test_records_must_be_ascending_and_non_empty() -> None:
    log = Log()
    run_story(log, "s1", "r1")
    with pytest.raises(ValueError, match="at least one record"):
        fold([], Snapshot())
    with pytest.raises(ValueError, match="ascending"):
        fold([log.records[1], log.records[0]], Snapshot())


def test_a_repeated_event_id_in_one_batch_is_folded_once() -> None:
    log = Log()
    run_story(log, "s1", "r1", chunks=("a", "b"))
    again = log.records[2]  # the first delta, republished after the dedupe window
    records = [*log.records, SourceRecord(log.next_seq, again.subject, again.item)]

    changes = fold(records, Snapshot())

    assert len(changes.events) == len(log.records)
    assert changes.turns["assistant:r1"].content == "ab"
    assert changes.last_seq == len(records)


# -- sessions --------------------------------------------------------------------------


def test_session_counts_events_and_runs_and_takes_user_code_from_commands() -> None:
    log = Log()
    log.add(RunState, RunStateData(state="warming"), **env("s1", "r0"), user_code="worker-ish")
    run_story(log, "s1", "r1")
    run_story(log, "s1", "r2")
    run_story(log, "s2", "r3")

    changes = fold_once(log)

    s1 = changes.sessions["s1"]
    assert (s1.first_seq, s1.created_at) == (1, T0 + timedelta(seconds=1))
    assert s1.event_count == 1 + 5 + 5
    assert s1.run_count == 3
    assert s1.user_code == "u1"  # the first *command* with a user code
    assert s1.last_seq == 11
    assert s1.last_activity == T0 + timedelta(seconds=11)
    assert changes.sessions["s2"].run_count == 1


# -- runs ------------------------------------------------------------------------------


def test_run_status_machine_through_wait_question_and_resume() -> None:
    log = Log()
    e = env("s1", "r1", parent_run_id="p1", root_run_id="root", trace_id="t1")
    statuses: list[str] = []

    def step(event_class: type[Event], data: Payload, **extra: Any) -> None:
        log.add(event_class, data, **e, **extra)
        statuses.append(project(log.records).runs["r1"].status)

    step(CommandAsk, CommandAskData(content="go"), user_code="u1")
    step(RunStarted, RunStartedData(attempt=1), worker_id="w1")
    step(RunWaiting, RunWaitingData(on="child", child_run_ids=["c1"]), worker_id="w1")
    step(
        CommandResume,
        CommandResumeData(reason="child_completed", child_run_id="c1", status="completed"),
    )
    step(RunStarted, RunStartedData(attempt=1), worker_id="w2")
    step(RunAskedUser, RunAskedUserData(question_id="q1", prompt="?"), worker_id="w2")
    step(CommandResume, CommandResumeData(question_id="q1", answer="yes"), user_code="u1")
    step(MessageDelta, MessageDeltaData(text="ok"), worker_id="w2")
    step(RunCompleted, RunCompletedData(content="done", result={"n": 1}), worker_id="w2")
    step(RunFailed, RunFailedData(error=ErrorInfo(type="Late", message="zombie")), worker_id="w1")

    assert statuses == [
        "queued",
        "running",
        "waiting",
        "queued",
        "running",
        "asked_user",
        "queued",
        "running",
        "completed",
        "completed",
    ]
    run = project(log.records).runs["r1"]
    assert run.result == {"content": "done", "result": {"n": 1}, "finish_reason": "stop"}
    assert run.error is None
    assert run.ended_at == T0 + timedelta(seconds=9)
    assert (run.first_seq, run.last_seq, run.command_seq) == (1, 10, 1)
    assert (run.parent_run_id, run.root_run_id, run.trace_id) == ("p1", "root", "t1")
    assert (run.user_code, run.agent_type, run.worker_id) == ("u1", "echo", "w2")
    assert run.created_at == T0 + timedelta(seconds=1)
    assert run.started_at == T0 + timedelta(seconds=2)


def test_redelivery_counts_attempts_and_keeps_the_first_start() -> None:
    log = Log()
    e = env("s1", "r1")
    log.add(CommandAsk, CommandAskData(content="go"), **e)
    log.add(RunStarted, RunStartedData(attempt=1, command_seq=1), worker_id="w1", **e)
    log.add(MessageDelta, MessageDeltaData(text="par"), worker_id="w1", **e)
    log.add(RunStarted, RunStartedData(attempt=2, command_seq=1), worker_id="w2", **e)
    log.add(MessageDelta, MessageDeltaData(text="tial"), worker_id="w2", **e)
    log.add(RunCompleted, RunCompletedData(), worker_id="w2", **e)
    log.add(RunStarted, RunStartedData(attempt=3), worker_id="w3", **e)  # a zombie, too late

    run = fold_once(log).runs["r1"]

    assert (run.status, run.attempts, run.worker_id) == ("completed", 2, "w2")
    assert run.started_at == T0 + timedelta(seconds=2)
    assert run.last_seq == 7


@pytest.mark.parametrize(
    ("end", "status", "error"),
    [
        (
            "failed",
            "failed",
            {"type": "Boom", "message": "it broke", "code": "runner.exception", "retryable": False},
        ),
        ("cancelled", "cancelled", {"reason": "stop", "mode": "graceful", "requested_by": "u1"}),
        (
            "dead_lettered",
            "dead_lettered",
            {"type": "WorkerLost", "message": "gone", "attempts": 3},
        ),
    ],
)
def test_terminal_errors(end: str, status: str, error: dict[str, Any]) -> None:
    log = Log()
    run_story(log, "s1", "r1", end=end)
    log.add(RunCompleted, RunCompletedData(content="late"), **env("s1", "r1"))

    changes = fold_once(log)

    run = changes.runs["r1"]
    assert (run.status, run.error, run.result) == (status, error, None)
    assert run.ended_at == T0 + timedelta(seconds=5)
    expected_turn = {"failed": "failed", "cancelled": "cancelled", "dead_lettered": "failed"}
    turn = changes.turns["assistant:r1"]
    assert (turn.status, turn.content, turn.seq_to) == (expected_turn[end], "Hello", 5)


def test_a_run_never_asked_is_created_from_the_envelope() -> None:
    log = Log()
    e = env("s1", "r9", root_run_id="root", group_id="g1", user_code="u7")
    log.add(MessageDelta, MessageDeltaData(text="hi"), worker_id="w1", **e)
    log.add(RunDeadLettered, RunDeadLetteredData(attempts=5), **e)
    # a late ask fills in what the envelopes did not say
    log.add(CommandAsk, CommandAskData(content="x"), **e, parent_run_id="p0", trace_id="t9")

    run = fold_once(log).runs["r9"]

    assert run.status == "dead_lettered"
    assert (run.session_id, run.agent_type, run.root_run_id, run.group_id) == (
        "s1",
        "echo",
        "root",
        "g1",
    )
    assert (run.worker_id, run.user_code, run.attempts, run.first_seq) == ("w1", "u7", 5, 1)
    assert run.error == {"type": None, "message": None, "attempts": 5}
    assert (run.command_seq, run.parent_run_id, run.trace_id) == (3, "p0", "t9")
    assert run.created_at == T0 + timedelta(seconds=1)


# -- transcript ------------------------------------------------------------------------


def test_user_turns_from_ask_and_steer_keep_parts_and_attachments() -> None:
    log = Log()
    ref = ObjectRef(bucket="b", name="paper.md", size=10, sha256=SHA)
    parts = [ContentPart(type="text", text="Read"), ContentPart(type="file", ref=ref)]
    parts.append(ContentPart(type="text", text="this"))
    log.add(CommandAsk, CommandAskData(content=parts, attachments=[ref]), **env("s1", "r1"))
    log.add(CommandSteer, CommandSteerData(content="faster", target_run_id="r1"), session_id="s1")

    turns = fold_once(log).turns

    ask = turns["e1"]
    assert (ask.role, ask.kind, ask.content, ask.status) == (
        "user",
        "command.ask",
        "Read\nthis",
        "complete",
    )
    assert (ask.seq_from, ask.seq_to, ask.run_id) == (1, 1, "r1")
    assert len(ask.data["parts"]) == 3
    assert ask.data["attachments"][0]["name"] == "paper.md"
    steer = turns["e2"]
    assert (steer.role, steer.kind, steer.content, steer.run_id) == (
        "user",
        "command.steer",
        "faster",
        "r1",
    )


def test_assistant_turn_assembles_many_deltas_in_order_and_closes_on_terminal() -> None:
    log = Log()
    chunks = tuple(f"<{i}>" for i in range(1000))
    run_story(log, "s1", "r1", chunks=chunks)

    changes = fold_once(log)

    turn = changes.turns["assistant:r1"]
    assert turn.content == "".join(chunks)
    assert (turn.status, turn.seq_from, turn.seq_to) == ("complete", 3, 1003)
    assert (turn.role, turn.kind, turn.run_id, turn.session_id) == (
        "assistant",
        "message.delta",
        "r1",
        "s1",
    )
    assert turn.time == T0 + timedelta(seconds=3)


def test_assistant_turn_across_two_batches_equals_one_batch() -> None:
    log = Log()
    run_story(log, "s1", "r1", chunks=tuple(str(i) for i in range(20)))

    whole = project(log.records)
    for cut in range(1, len(log.records)):
        split = project(log.records, [cut])
        assert split.turns == whole.turns, cut
        assert split.runs == whole.runs, cut
    mid = project(log.records[:10]).turns["assistant:r1"]
    assert (mid.content, mid.status) == ("01234567", "streaming")


def test_message_completed_replaces_text_and_later_deltas_are_ignored() -> None:
    log = Log()
    e = env("s1", "r1")
    log.add(MessageDelta, MessageDeltaData(text="draft "), **e)
    log.add(MessageDelta, MessageDeltaData(text="text"), **e)
    log.add(
        MessageCompleted,
        MessageCompletedData(content=[ContentPart(type="text", text="Final")]),
        **e,
    )
    log.add(MessageDelta, MessageDeltaData(text=" more"), **e)
    log.add(MessageCompleted, MessageCompletedData(content="second message"), **e)
    log.add(MessageCompleted, MessageCompletedData(content="tool output", role="tool"), **e)
    streaming = project(log.records, [2, 4]).turns["assistant:r1"]
    log.add(RunCompleted, RunCompletedData(content="run answer"), **e)

    turn = project(log.records, [3]).turns["assistant:r1"]

    assert (streaming.content, streaming.status, streaming.seq_to) == ("Final", "streaming", 3)
    assert (turn.content, turn.status, turn.seq_from, turn.seq_to) == ("Final", "complete", 1, 7)
    assert turn.data["source"] == "message.completed"
    assert turn.data["parts"][0]["text"] == "Final"


def test_run_completed_content_is_the_final_text() -> None:
    log = Log()
    run_story(log, "s1", "r1", chunks=("par", "tial"), end="completed_with_content")
    run_story(log, "s1", "r2", chunks=(), end="completed_with_content")
    run_story(log, "s1", "r3", chunks=(), end="completed")  # no text at all: no turn
    log.add(MessageDelta, MessageDeltaData(text="late"), **env("s1", "r3"))

    turns = fold_once(log).turns

    assert (turns["assistant:r1"].content, turns["assistant:r1"].status) == (
        "final answer",
        "complete",
    )
    r2 = turns["assistant:r2"]
    assert (r2.content, r2.status, r2.kind, r2.seq_from, r2.seq_to) == (
        "final answer",
        "complete",
        "run.completed",
        8,
        8,
    )
    assert "assistant:r3" not in turns


def test_question_is_answered_by_resume() -> None:
    log = Log()
    e = env("s1", "r1")
    log.add(CommandAsk, CommandAskData(content="go"), **e)
    schema = {"type": "object", "properties": {"depth": {"enum": ["short", "long"]}}}
    log.add(
        RunAskedUser,
        RunAskedUserData(question_id="q1", prompt="How deep?", answer_schema=schema),
        **e,
    )
    log.add(RunAskedUser, RunAskedUserData(question_id="q2", prompt="Sure?"), **e)
    log.add(CommandResume, CommandResumeData(question_id="q1", answer={"depth": "long"}), **e)
    log.add(CommandResume, CommandResumeData(question_id="q1", answer="ignored"), **e)
    log.add(CommandResume, CommandResumeData(question_id="q2", content="Yes, I am."), **e)

    for cuts in ([], [2], [3], [4], [5]):
        changes = project(log.records, cuts)
        q1 = changes.turns["question:r1:q1"]
        assert (q1.role, q1.kind, q1.content, q1.status) == (
            "question",
            "run.asked_user",
            "How deep?",
            "answered",
        )
        assert (q1.seq_from, q1.seq_to) == (2, 4)
        assert q1.data["answer_schema"] == schema
        assert q1.data["answer"] == {"depth": "long"}
        assert q1.data["answer_turn_id"] == "e4"
        reply = changes.turns["e4"]
        assert (reply.role, reply.kind, reply.content) == (
            "user",
            "command.resume",
            '{"depth": "long"}',
        )
        assert changes.turns["e5"].content == "ignored"  # a turn, but q1 keeps its first answer
        q2 = changes.turns["question:r1:q2"]
        assert (q2.status, q2.data["answer"], q2.data["answer_text"]) == (
            "answered",
            None,
            "Yes, I am.",
        )
        assert changes.runs["r1"].status == "queued"


def test_artifact_turn_keeps_ref_but_not_inline_content() -> None:
    log = Log()
    e = env("s1", "r1")
    inline = ArtifactCreatedData(
        artifact_id="a1", artifact_type="file", name="n.md", content_base64="aGVsbG8="
    )
    ref = ObjectRef(bucket="art", name="big.bin", size=5_000_000, sha256=SHA)
    stored = ArtifactCreatedData(
        artifact_id="a2", artifact_type="image", ref=ref, metadata={"w": 1}
    )
    log.add(ArtifactCreated, inline, **e)
    log.add(ArtifactCreated, stored, **e)

    changes = fold_once(log)

    first, second = changes.turns["artifact:e1"], changes.turns["artifact:e2"]
    assert (first.role, first.content, first.status) == ("artifact", "n.md", "complete")
    assert first.data["inline"] is True
    assert first.data["size"] == 5
    assert "aGVsbG8=" not in repr(first.data)
    assert second.content == "image a2"
    assert second.data["ref"]["name"] == "big.bin"
    assert second.data["metadata"] == {"w": 1}
    assert changes.events[0].data["content_base64"] == "aGVsbG8="  # the EventLog keeps it


# -- groups ----------------------------------------------------------------------------


def group_log(strategy: str, ends: list[str], *, ask_members_first: bool = False) -> Log:
    log = Log()
    members = [f"m{i}" for i in range(len(ends))]
    parent = env("s1", "p1", group_id="g1")
    log.add(CommandAsk, CommandAskData(content="fan out"), **env("s1", "p1"))
    dispatch = GroupDispatchedData(
        strategy=strategy,
        members=[
            GroupMember(index=i, run_id=run_id, agent_type="echo", content="x")
            for i, run_id in enumerate(members)
        ],
        timeout_s=30.0,
    )
    if not ask_members_first:
        log.add(GroupDispatched, dispatch, **parent)
    for run_id, end in zip(members, ends, strict=True):
        run_story(log, "s1", run_id, chunks=("x",), end=end, group_id="g1", parent_run_id="p1")
    if ask_members_first:
        log.add(GroupDispatched, dispatch, **parent)
    return log


@pytest.mark.parametrize(
    ("strategy", "ends", "status", "decided_by"),
    [
        ("all", ["completed", "failed", "completed"], "completed", 3),
        ("all", ["failed", "cancelled"], "completed", 2),
        ("race", ["failed", "completed", "completed"], "completed", 2),
        ("race", ["failed", "dead_lettered"], "failed", 2),
        ("quorum:2", ["completed", "failed", "completed"], "completed", 3),
        ("quorum:2", ["failed", "completed", "cancelled"], "failed", 3),
        ("quorum:2", ["failed", "failed", "completed"], "failed", 2),
    ],
)
def test_group_outcome(strategy: str, ends: list[str], status: str, decided_by: int) -> None:
    log = group_log(strategy, ends)
    # each member story is 4 events (ask, start, delta, end) after the ask and the dispatch
    decided_seq = 2 + 4 * decided_by

    for cuts in ([], [3], [decided_seq - 1], [4, 9, 14]):
        group = project(log.records, cuts).groups["g1"]
        assert group.status == status
        assert group.ended_at == T0 + timedelta(seconds=decided_seq)
        assert group.succeeded == ends.count("completed")
        assert group.failed == len(ends) - ends.count("completed")
        assert [m["status"] for m in group.members] == ends
        assert (group.total, group.strategy, group.parent_run_id, group.timeout_s) == (
            len(ends),
            strategy,
            "p1",
            30.0,
        )
        assert (group.first_seq, group.last_seq) == (2, len(log.records))


def test_group_counts_members_that_ended_before_the_dispatch() -> None:
    log = group_log("all", ["completed", "failed"], ask_members_first=True)

    for cuts in ([], [5], [9]):
        changes = project(log.records, cuts)
        group = changes.groups["g1"]
        assert (group.status, group.succeeded, group.failed) == ("completed", 1, 1)
        assert group.ended_at == T0 + timedelta(seconds=10)  # the dispatch decided it
        assert changes.runs["m0"].group_id == "g1"


def test_group_times_out_and_its_status_never_changes_after() -> None:
    log = group_log("all", ["completed"])
    log.records = log.records[:2]  # ask + dispatch only
    log.add(CommandResume, CommandResumeData(reason="timeout"), **env("s1", "p1", group_id="g1"))
    run_story(log, "s1", "m0", end="completed", group_id="g1")

    changes = project(log.records)

    group = changes.groups["g1"]
    assert (group.status, group.succeeded, group.members[0]["status"]) == (
        "timed_out",
        1,
        "completed",
    )
    assert group.ended_at == T0 + timedelta(seconds=3)
    assert changes.runs["p1"].group_id is None  # the group it dispatched, not one it is in


# -- workers and state -----------------------------------------------------------------


def test_worker_lifecycle() -> None:
    log = Log()
    started = WorkerStartedData(
        agent_types=["echo"], max_concurrency=4, hostname="h", pid=7, version="1"
    )
    log.add(WorkerStarted, started, worker_id="w1")
    run_story(log, "s1", "r1", worker_id="w1")  # seqs 2..6
    log.add(CommandWorker, CommandWorkerData(action="suspend", target_worker_id="w1"))
    suspended = project(log.records).workers["w1"]
    log.add(CommandWorker, CommandWorkerData(action="resume", target_worker_id="w1"))
    log.add(CommandWorker, CommandWorkerData(action="suspend", target_worker_id="nobody"))
    log.add(WorkerStopped, WorkerStoppedData(reason="SIGTERM"), worker_id="w1")
    log.add(RunState, RunStateData(state="late"), worker_id="w1", **env("s1", "r1"))
    log.add(CommandWorker, CommandWorkerData(action="resume", target_worker_id="w1"))
    log.add(MessageDelta, MessageDeltaData(text="x"), worker_id="w-unknown", **env("s1", "r2"))

    for cuts in ([], [1], [4, 8], [9]):
        workers = project(log.records, cuts).workers
        assert set(workers) == {"w1"}
        worker = workers["w1"]
        assert worker.status == "stopped"
        assert (
            worker.agent_types,
            worker.max_concurrency,
            worker.hostname,
            worker.pid,
            worker.version,
        ) == (
            ["echo"],
            4,
            "h",
            7,
            "1",
        )
        assert worker.started_at == T0 + timedelta(seconds=1)
        assert worker.stopped_at == worker.last_heartbeat == T0 + timedelta(seconds=10)
        assert worker.last_seq == 10
    assert (suspended.status, suspended.last_heartbeat) == ("suspended", T0 + timedelta(seconds=6))


def test_state_last_write_wins_per_scope() -> None:
    log = Log()
    e = env("s1", "r1", user_code="u1")
    for scope in ("session", "user", "agent_type", "global"):
        log.add(StateUpdated, StateUpdatedData(scope=scope, key="k", value=1), **e)
    log.add(StateUpdated, StateUpdatedData(scope="session", key="k", value={"v": 2}), **e)
    log.add(StateUpdated, StateUpdatedData(scope="user", key="k", value=3), **env("s2", "r2"))
    log.add(StateUpdated, StateUpdatedData(scope="session", key="k", value=None), **env("s2", "r2"))

    for cuts in ([], [4], [5, 6]):
        states = project(log.records, cuts).states
        assert {key: row.value for key, row in states.items()} == {
            ("session", "s1", "k"): {"v": 2},
            ("user", "u1", "k"): 1,
            ("agent_type", "echo", "k"): 1,
            ("global", "", "k"): 1,
            ("user", "", "k"): 3,
            ("session", "s2", "k"): None,
        }
        latest = states[("session", "s1", "k")]
        assert (latest.seq, latest.updated_at, latest.run_id) == (
            5,
            T0 + timedelta(seconds=5),
            "r1",
        )


# -- keys, purity, determinism ---------------------------------------------------------


def test_keys_name_every_row_a_batch_may_touch() -> None:
    log = group_log("race", ["completed"])
    log.add(RunAskedUser, RunAskedUserData(question_id="q", prompt="?"), **env("s1", "p1"))
    log.add(CommandResume, CommandResumeData(question_id="q", answer=1), **env("s1", "p1"))
    log.add(
        ArtifactCreated,
        ArtifactCreatedData(artifact_id="a", artifact_type="f", content_base64=""),
        **env("s1", "p1"),
    )
    log.add(CommandWorker, CommandWorkerData(action="suspend", target_worker_id="w9"))
    log.garbage()

    keys = keys_for(log.records)

    assert keys.run_ids == {"p1", "m0"}
    assert keys.session_ids == {"s1"}
    assert keys.group_ids == {"g1"}
    assert keys.worker_ids == {"w1", "w9"}
    assert keys.turn_ids == {
        "e1",
        "e3",
        "assistant:m0",
        "question:p1:q",
        "e8",
        "artifact:e9",
    }


def test_snapshot_is_not_mutated_and_fold_is_deterministic() -> None:
    log = group_log("quorum:1", ["completed", "failed"])
    log.add(RunAskedUser, RunAskedUserData(question_id="q", prompt="?"), **env("s1", "p1"))
    log.add(CommandResume, CommandResumeData(question_id="q", answer=1), **env("s1", "p1"))
    log.add(
        WorkerStarted, WorkerStartedData(agent_types=["echo"], max_concurrency=1), worker_id="w1"
    )
    run_story(log, "s1", "m0", chunks=("more",))  # nothing new for m0: it has ended
    first, second = log.records[:5], log.records[5:]  # cut after m0's delta
    model = project(first)

    snapshot = model.load(keys_for(second))
    frozen = copy.deepcopy(snapshot)
    changes = fold(second, snapshot)
    again = fold(second, snapshot)

    assert snapshot == frozen
    assert changes == again
    assert snapshot.turns["assistant:m0"].content == "x"
    assert changes.turns["assistant:m0"].content == "x"
    assert changes.groups["g1"].status == "completed"
    assert snapshot.groups["g1"].members[0]["status"] == "queued"


# -- batch boundaries never matter (G4) ------------------------------------------------


def story(rng: random.Random) -> Log:
    """A realistic, randomly interleaved log: several sessions, runs streaming deltas,
    tools, state, questions, groups, redeliveries, zombies, workers and garbage."""
    streams: list[list[tuple[type[Event], Payload, dict[str, Any]]]] = []
    for s in range(rng.randint(1, 3)):
        session = f"s{s}"
        for r in range(rng.randint(1, 3)):
            streams.append(_run_stream(rng, session, f"{session}r{r}"))
    streams.append(_worker_stream(rng))
    log = Log()
    while streams:
        stream = rng.choice(streams)
        event_class, data, envelope = stream.pop(0)
        if rng.random() < 0.03:
            log.garbage()
        log.add(event_class, data, **envelope)
        if not stream:
            streams.remove(stream)
    return log


def _run_stream(
    rng: random.Random, session: str, run_id: str
) -> list[tuple[type[Event], Payload, dict[str, Any]]]:
    worker = rng.choice(["w1", "w2"])
    e = env(session, run_id, root_run_id=run_id, user_code=rng.choice(["u1", "u2"]))
    out: list[tuple[type[Event], Payload, dict[str, Any]]] = [
        (CommandAsk, CommandAskData(content=f"q {run_id}"), e)
    ]
    w = {**e, "worker_id": worker}
    for attempt in range(1, rng.randint(1, 2) + 1):
        out.append((RunStarted, RunStartedData(attempt=attempt), w))
    for i in range(rng.randint(0, 12)):
        out.append((MessageDelta, MessageDeltaData(text=f"{run_id}:{i} ", index=i), w))
        if rng.random() < 0.1:
            out.append(
                (ToolCallStarted, ToolCallStartedData(tool_call_id=f"c{i}", tool_name="t"), w)
            )
            out.append(
                (
                    ToolCallCompleted,
                    ToolCallCompletedData(tool_call_id=f"c{i}", tool_name="t", result=i),
                    w,
                )
            )
        if rng.random() < 0.1:
            scope = rng.choice(["session", "user", "agent_type", "global"])
            out.append(
                (StateUpdated, StateUpdatedData(scope=scope, key=rng.choice("ab"), value=i), w)
            )
    if rng.random() < 0.4:
        question = f"q{rng.randint(0, 1)}"
        out.append((RunAskedUser, RunAskedUserData(question_id=question, prompt="?"), w))
        out.append((CommandResume, CommandResumeData(question_id=question, answer={"n": 1}), e))
        out.append((RunStarted, RunStartedData(attempt=1), w))
    if rng.random() < 0.3:
        out.append((MessageCompleted, MessageCompletedData(content=f"whole {run_id}"), w))
    if rng.random() < 0.3:
        out.append(
            (
                ArtifactCreated,
                ArtifactCreatedData(artifact_id="a", artifact_type="f", content_base64="eA=="),
                w,
            )
        )
    if rng.random() < 0.4:
        out.extend(_group(rng, session, run_id, w))
    if rng.random() < 0.2:
        out.append(
            (
                CommandSteer,
                CommandSteerData(content="steer", target_run_id=run_id),
                {"session_id": session},
            )
        )
    out.append(_terminal_step(rng, w))
    if rng.random() < 0.2:  # a zombie after the end
        out.append((MessageDelta, MessageDeltaData(text="zombie"), w))
        out.append(_terminal_step(rng, w))
    return out


def _terminal_step(
    rng: random.Random, envelope: dict[str, Any]
) -> tuple[type[Event], Payload, dict[str, Any]]:
    kind = rng.choice(["completed", "content", "failed", "cancelled", "dead"])
    if kind == "completed":
        return RunCompleted, RunCompletedData(result=1), envelope
    if kind == "content":
        return RunCompleted, RunCompletedData(content="the end"), envelope
    if kind == "failed":
        return RunFailed, RunFailedData(error=ErrorInfo(type="E", message="m")), envelope
    if kind == "cancelled":
        return RunCancelled, RunCancelledData(reason="r"), envelope
    return RunDeadLettered, RunDeadLetteredData(attempts=2), envelope


def _group(
    rng: random.Random, session: str, run_id: str, envelope: dict[str, Any]
) -> list[tuple[type[Event], Payload, dict[str, Any]]]:
    group_id = f"g-{run_id}"
    members = [f"{run_id}m{i}" for i in range(rng.randint(1, 3))]
    strategy = rng.choice(["all", "race", f"quorum:{rng.randint(1, len(members))}"])
    data = GroupDispatchedData(
        strategy=strategy,
        members=[
            GroupMember(index=i, run_id=m, agent_type="echo", content="c")
            for i, m in enumerate(members)
        ],
    )
    reason: Any = rng.choice(["group_completed", "timeout"])
    resume = (CommandResume, CommandResumeData(reason=reason), {**envelope, "group_id": group_id})
    out: list[tuple[type[Event], Payload, dict[str, Any]]] = [
        (GroupDispatched, data, {**envelope, "group_id": group_id}),
        (RunWaiting, RunWaitingData(on="group", group_id=group_id), envelope),
    ]
    if reason == "timeout":
        out.append(resume)
    # members run inline in the parent's stream order, some announced before dispatch
    member_events: list[tuple[type[Event], Payload, dict[str, Any]]] = []
    for member in members:
        m = env(session, member, parent_run_id=run_id, root_run_id=run_id, group_id=group_id)
        mw = {**m, "worker_id": "w2"}
        member_events.append((CommandAsk, CommandAskData(content="part"), m))
        member_events.append((RunStarted, RunStartedData(attempt=1), mw))
        member_events.append((MessageDelta, MessageDeltaData(text=f"{member} says"), mw))
        member_events.append(_terminal_step(rng, mw))
    if rng.random() < 0.3:
        out = [*member_events, *out]
    else:
        out.extend(member_events)
    if reason != "timeout":
        out.append(resume)
    out.append((RunStarted, RunStartedData(attempt=1), envelope))
    return out


def _worker_stream(rng: random.Random) -> list[tuple[type[Event], Payload, dict[str, Any]]]:
    start = WorkerStartedData(agent_types=["echo"], max_concurrency=2)
    out: list[tuple[type[Event], Payload, dict[str, Any]]] = [
        (WorkerStarted, start, {"worker_id": "w1"}),
        (WorkerStarted, start, {"worker_id": "w2"}),
    ]
    for _ in range(rng.randint(0, 3)):
        action: Any = rng.choice(["suspend", "resume", "evict"])
        out.append((CommandWorker, CommandWorkerData(action=action, target_worker_id="w1"), {}))
    if rng.random() < 0.5:
        out.append((WorkerStopped, WorkerStoppedData(), {"worker_id": rng.choice(["w1", "w2"])}))
    return out


def _as_tables(model: FakeReadModel) -> dict[str, Any]:
    return {
        name: getattr(model, name)
        for name in (
            "events",
            "rejected",
            "runs",
            "sessions",
            "groups",
            "turns",
            "workers",
            "states",
        )
    }


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_any_batch_split_folds_to_the_same_rows(seed: int, data: st.DataObject) -> None:
    log = story(random.Random(seed))
    n = len(log.records)
    cuts = data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=12), label="cuts")

    whole = project(log.records)
    split = project(log.records, cuts)

    assert _as_tables(split) == _as_tables(whole)
    assert whole.checkpoint == split.checkpoint == n
    one_by_one = project(log.records, list(range(1, n)))
    assert _as_tables(one_by_one) == _as_tables(whole)


def test_the_story_exercises_the_interesting_paths() -> None:
    """Guard for the property test: its stories reach groups, questions and ends."""
    seen_runs: set[str] = set()
    seen_groups: set[str] = set()
    seen_turns: set[str] = set()
    for seed in range(40):
        model = project(story(random.Random(seed)).records)
        seen_runs |= {run.status for run in model.runs.values()}
        seen_groups |= {group.status for group in model.groups.values()}
        seen_turns |= {f"{turn.role}:{turn.status}" for turn in model.turns.values()}
    assert {"completed", "failed", "cancelled", "dead_lettered"} <= seen_runs
    assert {"completed", "failed", "timed_out"} <= seen_groups
    assert {
        "assistant:complete",
        "assistant:failed",
        "question:answered",
        "artifact:complete",
    } <= seen_turns
