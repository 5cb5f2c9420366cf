"""The read-model port's behaviour, written once against ``projections.contract`` only.

Every backend proves itself by subclassing :class:`ReadModelSuite` (the eventsourcing
library's abstract-test-case pattern)::

    class TestSqliteReadModel(ReadModelSuite):
        integrity_error = sqlalchemy.exc.IntegrityError

        @pytest.fixture(autouse=True)
        def _database(self, tmp_path):
            self.url = f"sqlite+aiosqlite:///{tmp_path}/readmodel.db"

        async def make_backend(self, namespace, schema_version):
            return SqlReadModel(self.url, namespace=namespace, schema_version=schema_version)

Rules the suite pins down where the contract leaves a choice (so every backend orders
rows the same way and ``verify`` can compare any two of them):

* text keys order by code point (byte order), never by a locale collation;
* ties in a "newest first" list break on the primary key descending, ties in an
  "oldest first" list on the primary key ascending;
* cursors are strict: ``before_seq`` / ``before`` exclude the cursor, ``after_seq``
  excludes it too;
* ``counts()`` has every table of ``TABLES`` (zero when empty) plus ``runs:<status>``
  for every status present (absent statuses may be missing or zero);
* a commit whose checkpoint does not move forward raises ``ValueError`` before
  anything else is checked, so a racing projector fails with that, not with a
  duplicate-key error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar, get_args

import pytest

from projections.contract import (
    SCHEMA_VERSION,
    TABLES,
    BatchKeys,
    Changes,
    ReadModelBackend,
    RunFilter,
)
from projections.rows import (
    EventRow,
    GroupRow,
    RejectedRow,
    RunRow,
    RunStatus,
    SessionRow,
    StateRow,
    TranscriptRow,
    WorkerRow,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """An event time ``seconds`` after :data:`T0` (timezone-aware UTC)."""
    return T0 + timedelta(seconds=seconds)


def new_namespace() -> str:
    """A namespace no other test uses, so tests can share one database."""
    return "t" + uuid.uuid4().hex[:10]


BackendT = TypeVar("BackendT", bound=ReadModelBackend)


@asynccontextmanager
async def started(backend: BackendT) -> AsyncIterator[BackendT]:
    """``backend`` started, and closed on exit whatever the test did (a failed start too)."""
    try:
        await backend.start()
        yield backend
    finally:
        await backend.close()


# --------------------------------------------------------------------------- rows


def event_row(
    seq: int,
    event_type: str = "message.delta",
    session_id: str | None = "s1",
    run_id: str | None = None,
    data: Any = ...,
    **fields: Any,
) -> EventRow:
    values: dict[str, Any] = {
        "seq": seq,
        "id": f"ev-{seq}",
        "type": event_type,
        "subject": f"jl.data.{session_id}.{run_id}.out",
        "time": at(seq),
        "schema": 1,
        "session_id": session_id,
        "run_id": run_id,
        "parent_run_id": None,
        "root_run_id": None,
        "group_id": None,
        "agent_type": None,
        "worker_id": None,
        "user_code": None,
        "trace_id": None,
        "causation_id": None,
        "data": {"n": seq} if data is ... else data,
    }
    values.update(fields)
    return EventRow(**values)


def run_row(run_id: str, first_seq: int, **fields: Any) -> RunRow:
    values: dict[str, Any] = {
        "run_id": run_id,
        "session_id": "s1",
        "first_seq": first_seq,
        "last_seq": first_seq,
        "command_seq": first_seq,
        "created_at": at(first_seq),
    }
    values.update(fields)
    return RunRow(**values)


def session_row(session_id: str, first_seq: int, last_seq: int, **fields: Any) -> SessionRow:
    values: dict[str, Any] = {
        "session_id": session_id,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "created_at": at(first_seq),
        "last_activity": at(last_seq),
        "event_count": last_seq - first_seq + 1,
    }
    values.update(fields)
    return SessionRow(**values)


def turn_row(turn_id: str, session_id: str, seq_from: int, **fields: Any) -> TranscriptRow:
    values: dict[str, Any] = {
        "turn_id": turn_id,
        "session_id": session_id,
        "role": "user",
        "kind": "command.ask",
        "content": f"turn {turn_id}",
        "status": "complete",
        "seq_from": seq_from,
        "seq_to": seq_from,
        "time": at(seq_from),
    }
    values.update(fields)
    return TranscriptRow(**values)


def state_row(scope: str, scope_id: str, key: str, value: Any, seq: int) -> StateRow:
    return StateRow(
        scope=scope, scope_id=scope_id, key=key, value=value, seq=seq, updated_at=at(seq)
    )


def changes_of(last_seq: int, **rows: Any) -> Changes:
    """``Changes`` from lists of rows, keyed the way the contract keys them."""
    keyed: dict[str, Any] = {
        "events": list(rows.pop("events", [])),
        "rejected": list(rows.pop("rejected", [])),
        "runs": {r.run_id: r for r in rows.pop("runs", [])},
        "sessions": {s.session_id: s for s in rows.pop("sessions", [])},
        "groups": {g.group_id: g for g in rows.pop("groups", [])},
        "turns": {t.turn_id: t for t in rows.pop("turns", [])},
        "workers": {w.worker_id: w for w in rows.pop("workers", [])},
        "states": {(s.scope, s.scope_id, s.key): s for s in rows.pop("states", [])},
    }
    assert not rows, f"unknown row kinds {sorted(rows)}"
    return Changes(last_seq=last_seq, **keyed)


# A small but complete world: a three-level run tree in session s1, a second session,
# a group, workers, state in several scopes and two rejected records. Ids are chosen so
# that code-point order differs from a case-insensitive / locale order.

WORLD_EVENTS = [
    event_row(1, "command.ask", "s1", "r1", agent_type="a", user_code="u1"),
    event_row(2, "run.started", "s1", "r1", worker_id="w-a"),
    event_row(3, "command.ask", "s1", "r2", parent_run_id="r1", root_run_id="r1"),
    event_row(4, "message.delta", "s1", "r2", data={"text": "he"}),
    event_row(5, "command.ask", "s1", "r3", parent_run_id="r1", root_run_id="r1"),
    event_row(6, "message.delta", "s1", "r1", data={"text": "llo"}),
    event_row(7, "command.ask", "s1", "r4", parent_run_id="r2", root_run_id="r1"),
    event_row(8, "message.delta", "s1", "r2", data={"text": "!"}),
    event_row(9, "command.ask", "s2", "r5", agent_type="a"),
    event_row(10, "run.completed", "s1", "r1"),
    event_row(11, "worker.started", None, None, subject="jl.sys.worker", worker_id="w-b"),
    event_row(12, "state.updated", "s1", "r1", data={"scope": "session", "key": "k"}),
    event_row(13, "command.ask", "B-s3", "r6", agent_type="c"),
    event_row(14, "command.ask", "B-s3", "r7", agent_type="c"),
]
WORLD_REJECTED = [
    RejectedRow(seq=15, subject="jl.ctrl.agent_type.x", reason="not JSON", body_excerpt="{oops"),
    RejectedRow(seq=16, subject="jl.data.s1.r1.out", reason="unknown type", body_excerpt="{}"),
]
WORLD_RUNS = [
    run_row(
        "r1",
        1,
        status="completed",
        agent_type="a",
        worker_id="w-a",
        user_code="u1",
        attempts=1,
        started_at=at(2),
        ended_at=at(10),
        result={"content": "hello", "result": None, "finish_reason": "stop"},
        last_seq=12,
    ),
    run_row("r2", 3, status="running", agent_type="b", parent_run_id="r1", root_run_id="r1"),
    run_row(
        "r3",
        5,
        status="failed",
        agent_type="b",
        parent_run_id="r1",
        root_run_id="r1",
        error={"error": "boom", "code": "E1", "retryable": False},
    ),
    run_row("r4", 7, agent_type="a", parent_run_id="r2", root_run_id="r1", group_id="g1"),
    run_row("r5", 9, session_id="s2", agent_type="a"),
    # r6 and r7 share first_seq on purpose: ties break on run_id.
    run_row("r6", 13, session_id="B-s3", agent_type="c", status="waiting"),
    run_row("r7", 13, session_id="B-s3", agent_type="c", status="waiting"),
]
WORLD_SESSIONS = [
    session_row("s1", 1, 12, run_count=4, user_code="u1"),
    session_row("s2", 9, 9, run_count=1),
    session_row("B-s3", 13, 14, run_count=2),
    # same last_activity as s1: ties break on session_id (descending).
    session_row("s4", 12, 12),
]
WORLD_TURNS = [
    turn_row("ask-1", "s1", 1),
    turn_row(
        "assistant:r1",
        "s1",
        2,
        role="assistant",
        kind="message.delta",
        content="hello",
        seq_to=10,
        run_id="r1",
    ),
    turn_row("ask-3", "s1", 3, run_id="r2", data={"parts": [{"type": "text", "text": "hi"}]}),
    turn_row(
        "question:r2:q1",
        "s1",
        8,
        role="question",
        kind="run.asked_user",
        status="asked",
        run_id="r2",
        data={"question_id": "q1", "schema": {"type": "string"}},
    ),
    turn_row("ask-9", "s2", 9, run_id="r5"),
]
WORLD_GROUPS = [
    GroupRow(
        group_id="g1",
        session_id="s1",
        strategy="quorum:2",
        total=2,
        parent_run_id="r2",
        members=[
            {"index": 0, "run_id": "r4", "agent_type": "a", "status": "queued"},
            {"index": 1, "run_id": "r9", "agent_type": "a", "status": "completed"},
        ],
        succeeded=1,
        timeout_s=30.5,
        created_at=at(7),
        first_seq=7,
        last_seq=7,
    )
]
WORLD_WORKERS = [
    WorkerRow(
        worker_id="w-b",
        agent_types=["b"],
        max_concurrency=4,
        hostname="h2",
        pid=42,
        version="0.1.0",
        started_at=at(11),
        last_heartbeat=at(11),
        last_seq=11,
    ),
    WorkerRow(worker_id="w-a", agent_types=["a", "b"], started_at=at(2), last_seq=2),
    WorkerRow(
        worker_id="W-a",
        status="stopped",
        stopped_at=at(5),
        last_heartbeat=at(5),
        last_seq=5,
    ),
]
WORLD_STATES = [
    state_row("session", "s1", "k", {"nested": [1, 2, {"x": None}]}, 12),
    state_row("global", "", "k", "v", 12),
    state_row("user", "u1", "theme", None, 12),
]
WORLD_LAST_SEQ = 16


def world_changes() -> Changes:
    return changes_of(
        WORLD_LAST_SEQ,
        events=WORLD_EVENTS,
        rejected=WORLD_REJECTED,
        runs=WORLD_RUNS,
        sessions=WORLD_SESSIONS,
        turns=WORLD_TURNS,
        groups=WORLD_GROUPS,
        workers=WORLD_WORKERS,
        states=WORLD_STATES,
    )


def expected_world_dump() -> dict[str, list[dict[str, Any]]]:
    """What ``dump()`` must return after :func:`world_changes`: rows ordered by primary key."""

    def rows(items: list[Any], key: Callable[[Any], Any]) -> list[dict[str, Any]]:
        return [dataclasses.asdict(item) for item in sorted(items, key=key)]

    return {
        "events": rows(WORLD_EVENTS, lambda r: r.seq),
        "rejected": rows(WORLD_REJECTED, lambda r: r.seq),
        "sessions": rows(WORLD_SESSIONS, lambda r: r.session_id),
        "runs": rows(WORLD_RUNS, lambda r: r.run_id),
        "transcript": rows(WORLD_TURNS, lambda r: r.turn_id),
        "groups": rows(WORLD_GROUPS, lambda r: r.group_id),
        "workers": rows(WORLD_WORKERS, lambda r: r.worker_id),
        "state": rows(WORLD_STATES, lambda r: (r.scope, r.scope_id, r.key)),
    }


def run_ids(runs: list[RunRow]) -> list[str]:
    return [run.run_id for run in runs]


def seqs(rows: list[EventRow] | list[RejectedRow]) -> list[int]:
    return [row.seq for row in rows]


def assert_utc(value: datetime | None) -> None:
    assert isinstance(value, datetime)
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0), f"{value!r} is not UTC"


def all_datetimes(dump: dict[str, list[dict[str, Any]]]) -> list[datetime]:
    return [
        value
        for table_rows in dump.values()
        for row in table_rows
        for value in row.values()
        if isinstance(value, datetime)
    ]


# --------------------------------------------------------------------------- suite


class OpenBackend(Protocol):
    async def __call__(
        self,
        namespace: str | None = None,
        schema_version: int = SCHEMA_VERSION,
        *,
        start: bool = True,
    ) -> ReadModelBackend: ...


class ReadModelSuite(ABC):
    """Behaviour every :class:`~projections.contract.ReadModelBackend` must show.

    Subclasses implement :meth:`make_backend` and set :attr:`integrity_error`; they may
    override :meth:`discard_backend` to drop what a test created in a shared database.
    """

    integrity_error: type[BaseException] | tuple[type[BaseException], ...] = Exception
    """What ``commit`` raises when an event's ``seq`` is already stored."""

    @abstractmethod
    async def make_backend(self, namespace: str, schema_version: int) -> ReadModelBackend:
        """A new, not yet started backend on the test's database, whose tables are named
        after ``namespace`` and ``schema_version``. Backends made with the same
        namespace and version see the same tables."""

    async def discard_backend(self, backend: ReadModelBackend) -> None:  # noqa: B027
        """Called at teardown for every backend the test made, after it was closed.
        Default: nothing (the database lives in the test's ``tmp_path``)."""

    @pytest.fixture
    async def open_backend(self) -> AsyncIterator[OpenBackend]:
        opened: list[ReadModelBackend] = []

        async def open_(
            namespace: str | None = None,
            schema_version: int = SCHEMA_VERSION,
            *,
            start: bool = True,
        ) -> ReadModelBackend:
            backend = await self.make_backend(namespace or new_namespace(), schema_version)
            opened.append(backend)
            if start:
                await backend.start()
            return backend

        yield open_
        for backend in reversed(opened):
            await backend.close()
        for backend in reversed(opened):
            await self.discard_backend(backend)

    @pytest.fixture
    async def world(self, open_backend: OpenBackend) -> ReadModelBackend:
        backend = await open_backend()
        await backend.commit(world_changes())
        return backend

    # ----------------------------------------------------------- lifecycle

    async def test_identity(self, open_backend: OpenBackend) -> None:
        backend = await open_backend(schema_version=7, start=False)
        assert backend.name in {"sqlite", "postgresql", "duckdb"}
        assert backend.schema_version == 7

    async def test_start_creates_empty_tables_idempotently(self, open_backend: OpenBackend) -> None:
        namespace = new_namespace()
        backend = await open_backend(namespace)
        await backend.start()
        assert await backend.checkpoint() == 0
        assert await backend.dump() == {table: [] for table in TABLES}
        assert list((await backend.dump()).keys()) == list(TABLES)

        again = await open_backend(namespace)
        assert await again.checkpoint() == 0
        counts = await again.counts()
        assert {table: counts[table] for table in TABLES} == dict.fromkeys(TABLES, 0)

    async def test_close_is_idempotent(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        await backend.close()
        await backend.close()

    async def test_data_survives_reopening(self, open_backend: OpenBackend) -> None:
        namespace = new_namespace()
        first = await open_backend(namespace)
        await first.commit(world_changes())
        await first.close()
        second = await open_backend(namespace)
        assert await second.checkpoint() == WORLD_LAST_SEQ
        assert await second.dump() == expected_world_dump()

    # ----------------------------------------------------------- checkpoint and atomicity

    async def test_checkpoint_advances_with_each_commit(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        await backend.commit(changes_of(3, events=[event_row(1), event_row(2), event_row(3)]))
        assert await backend.checkpoint() == 3
        await backend.commit(changes_of(9, events=[event_row(5)]))
        assert await backend.checkpoint() == 9
        # a batch of only filtered-out records still moves the checkpoint
        await backend.commit(Changes(last_seq=12))
        assert await backend.checkpoint() == 12
        assert seqs(await backend.events()) == [1, 2, 3, 5]

    @pytest.mark.parametrize("stale", [5, 4, 0])
    async def test_non_advancing_checkpoint_raises_and_writes_nothing(
        self, open_backend: OpenBackend, stale: int
    ) -> None:
        backend = await open_backend()
        await backend.commit(changes_of(5, events=[event_row(5)], runs=[run_row("r1", 5)]))
        before = await backend.dump()
        late = changes_of(
            stale,
            events=[event_row(6)],
            runs=[run_row("r1", 5, status="completed"), run_row("r2", 6)],
            sessions=[session_row("s1", 5, 6)],
            states=[state_row("global", "", "k", 1, 6)],
        )
        with pytest.raises(ValueError, match="checkpoint"):
            await backend.commit(late)
        assert await backend.checkpoint() == 5
        assert await backend.dump() == before

    async def test_racing_projectors_only_one_commits(self, open_backend: OpenBackend) -> None:
        namespace = new_namespace()
        first = await open_backend(namespace)
        second = await open_backend(namespace)
        batch = changes_of(2, events=[event_row(1), event_row(2)], runs=[run_row("r1", 1)])
        await first.commit(batch)
        rival = changes_of(
            2,
            events=[event_row(1, data={"rival": True}), event_row(2)],
            runs=[run_row("r1", 1, status="failed")],
        )
        with pytest.raises(ValueError, match="checkpoint"):
            await second.commit(rival)
        assert await second.checkpoint() == 2
        assert (await second.events())[0].data == {"n": 1}
        run = await second.get_run("r1")
        assert run is not None
        assert run.status == "queued"

    async def test_concurrent_projectors_cannot_both_write(self, open_backend: OpenBackend) -> None:
        namespace = new_namespace()
        first = await open_backend(namespace)
        second = await open_backend(namespace)
        events = [event_row(seq) for seq in range(1, 501)]

        def batch(worker: str) -> Changes:
            return changes_of(
                500,
                events=events,
                runs=[run_row(f"r{i}", i + 1, worker_id=worker) for i in range(200)],
            )

        outcomes = await asyncio.gather(
            first.commit(batch("first")), second.commit(batch("second")), return_exceptions=True
        )
        failures = [outcome for outcome in outcomes if outcome is not None]
        assert len(failures) == 1, outcomes
        assert isinstance(failures[0], ValueError)
        winner = "second" if outcomes[0] is not None else "first"
        assert await first.checkpoint() == 500
        assert (await first.counts())["events"] == 500
        runs = await first.list_runs(RunFilter(limit=1000))
        assert {run.worker_id for run in runs} == {winner}

    async def test_duplicate_event_seq_fails_the_whole_commit(
        self, open_backend: OpenBackend
    ) -> None:
        backend = await open_backend()
        await backend.commit(changes_of(3, events=[event_row(1), event_row(2), event_row(3)]))
        before = await backend.dump()
        broken = changes_of(
            6,
            events=[event_row(4), event_row(5), event_row(3, event_type="run.completed")],
            rejected=[RejectedRow(seq=6, subject="jl.x", reason="bad", body_excerpt="")],
            runs=[run_row("r1", 4)],
            sessions=[session_row("s1", 1, 5)],
            turns=[turn_row("t1", "s1", 4)],
            groups=[dataclasses.replace(WORLD_GROUPS[0])],
            workers=[WorkerRow(worker_id="w1")],
            states=[state_row("global", "", "k", 1, 5)],
        )
        with pytest.raises(self.integrity_error):
            await backend.commit(broken)
        assert await backend.checkpoint() == 3
        assert await backend.dump() == before

        # the backend stays usable after a failed commit
        await backend.commit(changes_of(5, events=[event_row(4), event_row(5)]))
        assert await backend.checkpoint() == 5
        assert seqs(await backend.events()) == [1, 2, 3, 4, 5]

    async def test_duplicate_rejected_seq_fails_the_whole_commit(
        self, open_backend: OpenBackend
    ) -> None:
        backend = await open_backend()
        rejected = RejectedRow(seq=1, subject="jl.x", reason="bad", body_excerpt="")
        await backend.commit(changes_of(1, rejected=[rejected]))
        with pytest.raises(self.integrity_error):
            await backend.commit(changes_of(2, events=[event_row(2)], rejected=[rejected]))
        assert await backend.checkpoint() == 1
        assert await backend.events() == []

    # ----------------------------------------------------------- upsert and load

    async def test_upsert_replaces_whole_rows(self, world: ReadModelBackend) -> None:
        run = dataclasses.replace(
            WORLD_RUNS[1],
            status="completed",
            worker_id=None,
            attempts=2,
            ended_at=at(20),
            result={"content": "done"},
            last_seq=20,
        )
        session = dataclasses.replace(WORLD_SESSIONS[0], last_seq=20, last_activity=at(20))
        turn = dataclasses.replace(WORLD_TURNS[1], content="hello world", seq_to=20, data=None)
        group = dataclasses.replace(WORLD_GROUPS[0], status="completed", ended_at=at(20))
        worker = dataclasses.replace(WORLD_WORKERS[0], status="suspended", pid=None)
        state = state_row("global", "", "k", ["replaced"], 20)
        await world.commit(
            changes_of(
                20,
                runs=[run],
                sessions=[session],
                turns=[turn],
                groups=[group],
                workers=[worker],
                states=[state],
            )
        )
        assert await world.get_run(run.run_id) == run
        assert await world.get_session(session.session_id) == session
        assert await world.get_group(group.group_id) == group
        assert await world.get_state("global", "", "k") == state
        assert turn in await world.transcript("s1")
        assert worker in await world.list_workers()
        counts = await world.counts()
        assert (counts["runs"], counts["sessions"], counts["transcript"]) == (7, 4, 5)
        assert (counts["groups"], counts["workers"], counts["state"]) == (1, 3, 3)

    async def test_load_returns_exactly_the_requested_existing_rows(
        self, world: ReadModelBackend
    ) -> None:
        snapshot = await world.load(
            BatchKeys(
                run_ids={"r1", "r4", "missing"},
                session_ids={"B-s3", "nope"},
                group_ids={"g1"},
                turn_ids={"assistant:r1", "ask-9", "assistant:r404"},
                worker_ids={"W-a", "w-b"},
            )
        )
        by_id = {run.run_id: run for run in WORLD_RUNS}
        assert snapshot.runs == {"r1": by_id["r1"], "r4": by_id["r4"]}
        assert snapshot.sessions == {"B-s3": WORLD_SESSIONS[2]}
        assert snapshot.groups == {"g1": WORLD_GROUPS[0]}
        assert snapshot.turns == {"assistant:r1": WORLD_TURNS[1], "ask-9": WORLD_TURNS[4]}
        assert snapshot.workers == {"W-a": WORLD_WORKERS[2], "w-b": WORLD_WORKERS[0]}

    async def test_load_of_nothing_is_empty(self, world: ReadModelBackend) -> None:
        snapshot = await world.load(BatchKeys())
        assert (snapshot.runs, snapshot.sessions, snapshot.groups) == ({}, {}, {})
        assert (snapshot.turns, snapshot.workers) == ({}, {})

    async def test_large_batches_commit_and_load(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        events = [event_row(seq, run_id=f"run-{seq % 1500:05d}") for seq in range(1, 5001)]
        runs = [run_row(f"run-{i:05d}", i + 1, last_seq=5000) for i in range(1500)]
        turns = [turn_row(f"assistant:run-{i:05d}", "s1", i + 1) for i in range(1500)]
        await backend.commit(changes_of(5000, events=events, runs=runs, turns=turns))
        counts = await backend.counts()
        assert (counts["events"], counts["runs"], counts["transcript"]) == (5000, 1500, 1500)
        assert counts["runs:queued"] == 1500
        snapshot = await backend.load(
            BatchKeys(
                run_ids={run.run_id for run in runs} | {"absent"},
                turn_ids={turn.turn_id for turn in turns},
            )
        )
        assert snapshot.runs == {run.run_id: run for run in runs}
        assert snapshot.turns == {turn.turn_id: turn for turn in turns}
        assert seqs(await backend.events(after_seq=4990, limit=5)) == [4991, 4992, 4993, 4994, 4995]

    # ----------------------------------------------------------- runs

    async def test_get_run(self, world: ReadModelBackend) -> None:
        assert await world.get_run("r1") == WORLD_RUNS[0]
        assert await world.get_run("r3") == WORLD_RUNS[2]
        assert await world.get_run("nope") is None

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (RunFilter(), ["r7", "r6", "r5", "r4", "r3", "r2", "r1"]),
            (RunFilter(status="failed"), ["r3"]),
            (RunFilter(status="waiting"), ["r7", "r6"]),
            (RunFilter(status="cancelled"), []),
            (RunFilter(agent_type="b"), ["r3", "r2"]),
            (RunFilter(session_id="s1"), ["r4", "r3", "r2", "r1"]),
            (RunFilter(session_id="s1", agent_type="a"), ["r4", "r1"]),
            (RunFilter(root_run_id="r1"), ["r4", "r3", "r2"]),
            (RunFilter(parent_run_id="r1"), ["r3", "r2"]),
            (RunFilter(parent_run_id="r1", status="running"), ["r2"]),
            (RunFilter(limit=2), ["r7", "r6"]),
            (RunFilter(limit=3), ["r7", "r6", "r5"]),
            (RunFilter(before_seq=7), ["r3", "r2", "r1"]),
            (RunFilter(before_seq=7, limit=1), ["r3"]),
            (RunFilter(before_seq=1), []),
            (RunFilter(session_id="s1", before_seq=5, limit=10), ["r2", "r1"]),
        ],
    )
    async def test_list_runs(
        self, world: ReadModelBackend, query: RunFilter, expected: list[str]
    ) -> None:
        assert run_ids(await world.list_runs(query)) == expected

    async def test_list_runs_returns_whole_rows(self, world: ReadModelBackend) -> None:
        assert await world.list_runs(RunFilter(status="failed")) == [WORLD_RUNS[2]]

    async def test_children_oldest_first(self, world: ReadModelBackend) -> None:
        assert run_ids(await world.children("r1")) == ["r2", "r3"]
        assert run_ids(await world.children("r2")) == ["r4"]
        assert await world.children("r4") == []
        assert await world.children("nope") == []

    async def test_tree_has_root_and_descendants_oldest_first(
        self, world: ReadModelBackend
    ) -> None:
        tree = await world.tree("r1")
        assert run_ids(tree) == ["r1", "r2", "r3", "r4"]
        assert tree[0] == WORLD_RUNS[0]
        assert run_ids(await world.tree("r5")) == ["r5"]
        assert await world.tree("nope") == []

    # ----------------------------------------------------------- events

    async def test_events_in_seq_order_with_cursor_limit_and_type(
        self, world: ReadModelBackend
    ) -> None:
        assert await world.events() == WORLD_EVENTS
        assert seqs(await world.events(after_seq=10)) == [11, 12, 13, 14]
        assert seqs(await world.events(after_seq=2, limit=3)) == [3, 4, 5]
        assert seqs(await world.events(event_type="command.ask")) == [1, 3, 5, 7, 9, 13, 14]
        assert seqs(await world.events(after_seq=5, limit=2, event_type="command.ask")) == [7, 9]
        assert await world.events(after_seq=14) == []
        assert await world.events(event_type="nope") == []

    async def test_session_events(self, world: ReadModelBackend) -> None:
        assert seqs(await world.session_events("s1")) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12]
        assert seqs(await world.session_events("s1", after_seq=6, limit=2)) == [7, 8]
        assert seqs(await world.session_events("s1", event_type="message.delta")) == [4, 6, 8]
        assert seqs(
            await world.session_events("s1", after_seq=4, limit=1, event_type="message.delta")
        ) == [6]
        assert seqs(await world.session_events("B-s3")) == [13, 14]
        assert await world.session_events("nope") == []
        assert (await world.session_events("s2")) == [WORLD_EVENTS[8]]

    async def test_run_events(self, world: ReadModelBackend) -> None:
        assert seqs(await world.run_events("r1")) == [1, 2, 6, 10, 12]
        assert seqs(await world.run_events("r2")) == [3, 4, 8]
        assert await world.run_events("nope") == []

    async def test_events_with_all_optional_fields(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        full = event_row(
            1,
            "group.dispatched",
            "s1",
            "r1",
            parent_run_id="r0",
            root_run_id="r0",
            group_id="g1",
            agent_type="a",
            worker_id="w",
            user_code="u",
            trace_id="tr",
            causation_id="ev-0",
            schema=3,
        )
        bare = event_row(2, "worker.stopped", None, None, data={})
        await backend.commit(changes_of(2, events=[full, bare]))
        assert await backend.events() == [full, bare]

    # ----------------------------------------------------------- sessions and transcript

    async def test_get_session(self, world: ReadModelBackend) -> None:
        assert await world.get_session("s1") == WORLD_SESSIONS[0]
        assert await world.get_session("nope") is None

    async def test_list_sessions_most_recent_first(self, world: ReadModelBackend) -> None:
        def ids(sessions: list[SessionRow]) -> list[str]:
            return [session.session_id for session in sessions]

        assert ids(await world.list_sessions()) == ["B-s3", "s4", "s1", "s2"]
        assert ids(await world.list_sessions(limit=2)) == ["B-s3", "s4"]
        assert ids(await world.list_sessions(before=at(14))) == ["s4", "s1", "s2"]
        assert ids(await world.list_sessions(before=at(12), limit=5)) == ["s2"]
        assert await world.list_sessions(before=at(9)) == []
        # a cursor in another timezone means the same instant
        plus_two = timezone(timedelta(hours=2))
        assert ids(await world.list_sessions(before=at(14).astimezone(plus_two))) == [
            "s4",
            "s1",
            "s2",
        ]

    async def test_sessions_as_of_keep_their_position_after_new_events(
        self, open_backend: OpenBackend
    ) -> None:
        backend = await open_backend()
        first = [event_row(seq, session_id=f"s{(seq - 1) % 3 + 1}") for seq in range(1, 7)]
        await backend.commit(
            changes_of(
                6,
                events=first,
                sessions=[
                    session_row("s1", 1, 4),
                    session_row("s2", 2, 5),
                    session_row("s3", 3, 6),
                ],
            )
        )

        def positions(page: list[tuple[int, SessionRow]]) -> list[tuple[int, str]]:
            return [(position, row.session_id) for position, row in page]

        assert positions(await backend.sessions_as_of(6)) == [(6, "s3"), (5, "s2"), (4, "s1")]
        # s1 gets a new event and s4 appears after the snapshot at 6
        await backend.commit(
            changes_of(
                8,
                events=[event_row(7, session_id="s1"), event_row(8, session_id="s4")],
                sessions=[session_row("s1", 1, 7), session_row("s4", 8, 8)],
            )
        )
        page = await backend.sessions_as_of(6, before_position=5)
        assert positions(page) == [(4, "s1")]
        assert page[0][1] == session_row("s1", 1, 7)  # the current row, at its old position
        assert positions(await backend.sessions_as_of(6, limit=2)) == [(6, "s3"), (5, "s2")]
        assert positions(await backend.sessions_as_of(8)) == [
            (8, "s4"),
            (7, "s1"),
            (6, "s3"),
            (5, "s2"),
        ]
        assert await backend.sessions_as_of(0) == []

    async def test_transcript_ordered_by_seq_from(self, world: ReadModelBackend) -> None:
        assert await world.transcript("s1") == WORLD_TURNS[:4]
        assert await world.transcript("s2") == [WORLD_TURNS[4]]
        assert await world.transcript("nope") == []

    async def test_transcript_order_ignores_turn_id(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        turns = [turn_row(f"z{i}", "s1", 100 - i) for i in range(5)]
        await backend.commit(changes_of(100, turns=turns))
        assert [t.turn_id for t in await backend.transcript("s1")] == ["z4", "z3", "z2", "z1", "z0"]

    # ----------------------------------------------------------- groups, workers, state

    async def test_get_group(self, world: ReadModelBackend) -> None:
        assert await world.get_group("g1") == WORLD_GROUPS[0]
        assert await world.get_group("nope") is None

    async def test_list_workers_by_worker_id(self, world: ReadModelBackend) -> None:
        workers = await world.list_workers()
        assert [w.worker_id for w in workers] == ["W-a", "w-a", "w-b"]
        assert workers == sorted(WORLD_WORKERS, key=lambda w: w.worker_id)

    async def test_get_state(self, world: ReadModelBackend) -> None:
        assert await world.get_state("session", "s1", "k") == WORLD_STATES[0]
        assert await world.get_state("global", "", "k") == WORLD_STATES[1]
        assert await world.get_state("user", "u1", "theme") == WORLD_STATES[2]
        assert await world.get_state("session", "s2", "k") is None
        assert await world.get_state("session", "s1", "other") is None
        assert await world.get_state("user", "s1", "k") is None

    async def test_list_rejected(self, world: ReadModelBackend) -> None:
        assert await world.list_rejected() == WORLD_REJECTED
        assert await world.list_rejected(after_seq=15) == [WORLD_REJECTED[1]]
        assert await world.list_rejected(limit=1) == [WORLD_REJECTED[0]]
        assert await world.list_rejected(after_seq=16) == []

    async def test_counts(self, world: ReadModelBackend) -> None:
        counts = await world.counts()
        assert {table: counts[table] for table in TABLES} == {
            "events": 14,
            "rejected": 2,
            "sessions": 4,
            "runs": 7,
            "transcript": 5,
            "groups": 1,
            "workers": 3,
            "state": 3,
        }
        by_status = {k: v for k, v in counts.items() if k.startswith("runs:") and v}
        assert by_status == {
            "runs:completed": 1,
            "runs:running": 1,
            "runs:failed": 1,
            "runs:queued": 2,
            "runs:waiting": 2,
        }
        assert set(counts) - set(TABLES) - {f"runs:{s}" for s in get_args(RunStatus)} == set()

    # ----------------------------------------------------------- dump

    async def test_dump_is_every_row_ordered_by_primary_key(self, world: ReadModelBackend) -> None:
        dump = await world.dump()
        assert list(dump) == list(TABLES)
        assert dump == expected_world_dump()

    async def test_dumps_of_equal_models_are_equal(self, open_backend: OpenBackend) -> None:
        """Fed in one batch or in several (with rows replaced on the way), the same final
        rows dump equal: what ``verify`` relies on."""
        whole = await open_backend()
        await whole.commit(world_changes())

        pieces = await open_backend()
        early_run = dataclasses.replace(WORLD_RUNS[0], status="running", result=None)
        early_turn = dataclasses.replace(WORLD_TURNS[1], content="he", status="streaming")
        await pieces.commit(
            changes_of(
                8,
                events=WORLD_EVENTS[:8],
                runs=[early_run, *WORLD_RUNS[1:4]],
                turns=[early_turn],
                states=[state_row("global", "", "k", "old", 3)],
            )
        )
        await pieces.commit(
            changes_of(
                WORLD_LAST_SEQ,
                events=WORLD_EVENTS[8:],
                rejected=WORLD_REJECTED,
                runs=WORLD_RUNS,
                sessions=WORLD_SESSIONS,
                turns=WORLD_TURNS,
                groups=WORLD_GROUPS,
                workers=WORLD_WORKERS,
                states=WORLD_STATES,
            )
        )
        assert await pieces.dump() == await whole.dump()
        assert await pieces.checkpoint() == await whole.checkpoint()

        different = await open_backend()
        changed = world_changes()
        changed.runs["r2"] = dataclasses.replace(WORLD_RUNS[1], attempts=5)
        await different.commit(changed)
        assert await different.dump() != await whole.dump()

    # ----------------------------------------------------------- value fidelity

    async def test_json_round_trips(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        nested = {
            "text": "héllo wörld ☃ 日本語 🚀",
            "list": [1, 2.5, -3, True, False, None, "x", [], {}],
            "deep": {"a": {"b": {"c": [{"d": None}]}}},
            "big": 2**53,
            "empty": "",
            'quote"s': "back\\slash\nnewline\ttab",
        }
        values: list[Any] = [nested, [nested, 1], "just a string", 42, 1.5, True, None, [], {}]
        events = [event_row(i + 1, data=value) for i, value in enumerate(values)]
        states = [state_row("global", "", f"k{i}", value, i + 1) for i, value in enumerate(values)]
        run = run_row("r1", 1, result=nested, error=None)
        failed = run_row("r2", 2, status="failed", result=None, error={"error": "☠", "x": [None]})
        worker = WorkerRow(worker_id="w☃", agent_types=["a", "ü"])
        await backend.commit(
            changes_of(
                len(values), events=events, states=states, runs=[run, failed], workers=[worker]
            )
        )
        assert [e.data for e in await backend.events()] == values
        for i, value in enumerate(values):
            state = await backend.get_state("global", "", f"k{i}")
            assert state is not None
            assert state.value == value
        assert await backend.get_run("r1") == run
        assert await backend.get_run("r2") == failed
        assert await backend.list_workers() == [worker]

    async def test_text_keeps_unicode(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        session = session_row("séance-☃-日本", 1, 1, user_code="ü")
        turn = turn_row("t-1", session.session_id, 1, content="naïve ✓ 🚀\nline two")
        event = event_row(1, session_id=session.session_id, subject="jl.data.~73~.r.out")
        await backend.commit(changes_of(1, events=[event], sessions=[session], turns=[turn]))
        assert await backend.get_session(session.session_id) == session
        assert await backend.transcript(session.session_id) == [turn]
        assert await backend.session_events(session.session_id) == [event]

    async def test_times_come_back_timezone_aware_utc(self, world: ReadModelBackend) -> None:
        dump = await world.dump()
        times = all_datetimes(dump)
        assert len(times) > 30
        for value in times:
            assert_utc(value)
        run = await world.get_run("r1")
        assert run is not None
        for run_time in (run.created_at, run.started_at, run.ended_at):
            assert_utc(run_time)
        assert run.started_at == at(2)  # microseconds survive

    async def test_times_in_other_zones_are_stored_as_the_same_instant(
        self, open_backend: OpenBackend
    ) -> None:
        backend = await open_backend()
        minus_five = timezone(timedelta(hours=-5))
        local = at(1).astimezone(minus_five)
        run = run_row("r1", 1, ended_at=local)
        await backend.commit(changes_of(1, events=[event_row(1, time=local)], runs=[run]))
        (event,) = await backend.events()
        assert event.time == at(1)
        assert_utc(event.time)
        stored = await backend.get_run("r1")
        assert stored is not None
        assert stored.ended_at == at(1)
        assert_utc(stored.ended_at)
        assert stored.started_at is None

    async def test_naive_datetimes_are_refused(self, open_backend: OpenBackend) -> None:
        backend = await open_backend()
        naive = run_row("r1", 1, created_at=datetime(2025, 1, 1))
        with pytest.raises(ValueError, match="naive"):
            await backend.commit(changes_of(1, runs=[naive]))
        assert await backend.checkpoint() == 0

    # ----------------------------------------------------------- blue/green

    async def test_blue_green_versions_side_by_side(self, open_backend: OpenBackend) -> None:
        namespace = new_namespace()
        blue = await open_backend(namespace, 1)
        assert await blue.active_version() is None
        await blue.commit(world_changes())
        await blue.activate()
        assert await blue.active_version() == 1

        green = await open_backend(namespace, 2)
        assert await green.active_version() == 1
        assert await green.checkpoint() == 0
        assert await green.dump() == {table: [] for table in TABLES}
        await green.commit(changes_of(3, events=WORLD_EVENTS[:3], runs=WORLD_RUNS[:1]))

        # each version answers from its own tables
        assert await blue.checkpoint() == WORLD_LAST_SEQ
        assert (await blue.counts())["events"] == 14
        assert (await green.counts())["events"] == 3

        await green.activate()
        assert await green.active_version() == 2
        assert await blue.active_version() == 2
        await blue.activate()  # switching back and forth is allowed
        assert await green.active_version() == 1
        await green.activate()

        await blue.close()
        await green.drop_version(1)
        assert await green.active_version() == 2
        assert await green.checkpoint() == 3
        assert await green.get_run("r1") == WORLD_RUNS[0]
        assert seqs(await green.events()) == [1, 2, 3]

        # the old version's rows are gone: starting it again finds fresh, empty tables
        reborn = await open_backend(namespace, 1)
        assert await reborn.checkpoint() == 0
        assert await reborn.dump() == {table: [] for table in TABLES}
        assert await reborn.active_version() == 2

    async def test_drop_version_of_missing_tables_is_harmless(
        self, open_backend: OpenBackend
    ) -> None:
        backend = await open_backend(schema_version=5)
        await backend.drop_version(4)
        await backend.drop_version(4)
        assert await backend.checkpoint() == 0

    async def test_drop_version_refuses_own_and_active_versions(
        self, open_backend: OpenBackend
    ) -> None:
        namespace = new_namespace()
        old = await open_backend(namespace, 1)
        new = await open_backend(namespace, 2)
        await old.activate()
        with pytest.raises(ValueError, match="own"):
            await new.drop_version(2)
        with pytest.raises(ValueError, match="active"):
            await new.drop_version(1)
        await new.activate()
        await new.drop_version(1)

    async def test_namespaces_are_isolated(self, open_backend: OpenBackend) -> None:
        one = await open_backend()
        other = await open_backend()
        await one.commit(world_changes())
        await one.activate()
        assert await other.checkpoint() == 0
        assert await other.active_version() is None
        assert await other.get_run("r1") is None


__all__ = ["OpenBackend", "ReadModelSuite", "new_namespace"]
