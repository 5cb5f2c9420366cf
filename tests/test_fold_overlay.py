"""The projector folds batch N+1 while batch N commits: its load may see the database
before N's commit, and ``overlay`` lays N's rows over it. Whatever the load saw and
wherever batches are cut, the rows must equal a fold of the whole log in one batch."""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fold import FakeReadModel, Log, _as_tables, project, story

from eventstore.catalog import MessageDelta, MessageDeltaData
from eventstore.envelope import Event
from projections.contract import BatchKeys, Changes, Snapshot, SourceRecord
from projections.fold import fold, keys_for
from projections.overlay import overlay


@dataclass
class DedupingReadModel(FakeReadModel):
    """Also answers which of a batch's event ids are already stored, as backends do."""

    def load(self, keys: BatchKeys) -> Snapshot:
        snapshot = super().load(keys)
        stored = {row.id for row in self.events}
        snapshot.known_event_ids = keys.event_ids & stored
        return snapshot


def project_overlapped(
    records: list[SourceRecord], cuts: list[int], sees_pending: list[bool]
) -> FakeReadModel:
    """Fold like the projector's pipeline: batch N+1 is loaded while N is uncommitted
    (``sees_pending[n]`` False) or already committed (True), then N's rows are laid over."""
    model = DedupingReadModel()
    bounds = [0, *sorted({cut for cut in cuts if 0 < cut < len(records)}), len(records)]
    pending: Changes | None = None
    as_folded: Changes | None = None

    def commit_pending() -> None:
        nonlocal pending
        assert pending is not None
        # the next fold read these rows through the overlay and must not have changed
        # them: a backend may still be turning them into parameters meanwhile
        assert pending == as_folded
        model.commit(pending)
        pending = None

    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        batch = records[start:stop]
        keys = keys_for(batch)
        committed = pending
        if pending is not None and sees_pending[index % len(sees_pending)]:
            commit_pending()  # the load happens to start after N committed
        snapshot = model.load(keys)
        if committed is not None:
            overlay(snapshot, keys, committed)
        changes = fold(batch, snapshot)
        if pending is not None:
            commit_pending()
        pending, as_folded = changes, copy.deepcopy(changes)
    if pending is not None:
        commit_pending()
    return model


def project_pipelined(
    records: list[SourceRecord], cuts: list[int], depth: int, committed_before_load: list[int]
) -> FakeReadModel:
    """Fold like the projector with ``depth`` commits in flight: before each load the
    database has committed some of the in-flight batches, oldest first (how many:
    ``committed_before_load``, cycled), and the load's result gets every in-flight batch
    laid over it in order, whether or not the database already had it."""
    model = DedupingReadModel()
    bounds = [0, *sorted({cut for cut in cuts if 0 < cut < len(records)}), len(records)]
    in_flight: list[Changes] = []  # as the projector sees them: not known to be committed
    written = 0  # how many of in_flight the database has committed
    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        batch = records[start:stop]
        keys = keys_for(batch)
        for changes in in_flight[
            written : written + committed_before_load[index % len(committed_before_load)]
        ]:
            model.commit(changes)
            written += 1
        snapshot = model.load(keys)
        for changes in in_flight:
            overlay(snapshot, keys, changes)
        folded = fold(batch, snapshot)
        while len(in_flight) >= depth:  # the projector awaits the oldest commit
            if written == 0:
                model.commit(in_flight[0])
            else:
                written -= 1
            in_flight.pop(0)
        in_flight.append(folded)
    for changes in in_flight[written:]:
        model.commit(changes)
    return model


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_pipelined_folds_equal_one_fold(seed: int, data: st.DataObject) -> None:
    rng = random.Random(seed)
    records = with_republished_events(story(rng), rng)
    n = len(records)
    cuts = data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=12), label="cuts")
    depth = data.draw(st.integers(1, 3), label="depth")
    committed = data.draw(
        st.lists(st.integers(0, 3), min_size=1, max_size=5), label="committed_before_load"
    )
    whole = project(records)
    pipelined = project_pipelined(records, cuts, depth, committed)
    assert _as_tables(pipelined) == _as_tables(whole)
    assert pipelined.checkpoint == n


def with_republished_events(log: Log, rng: random.Random) -> list[SourceRecord]:
    """The story plus a few events republished later (same id, new seq), as after the
    dedupe window: they must be projected once, across batches too."""
    records = list(log.records)
    events = [record.item for record in records if isinstance(record.item, Event)]
    for event in rng.sample(events, min(3, len(events))):
        records.append(SourceRecord(len(records) + 1, "jl.data.x.y.out", event))
    return records


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_overlapped_folds_equal_one_fold(seed: int, data: st.DataObject) -> None:
    rng = random.Random(seed)
    records = with_republished_events(story(rng), rng)
    n = len(records)
    cuts = data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=12), label="cuts")
    sees = data.draw(st.lists(st.booleans(), min_size=1, max_size=5), label="sees_pending")

    whole = project(records)
    overlapped = project_overlapped(records, cuts, sees)

    assert _as_tables(overlapped) == _as_tables(whole)
    assert overlapped.checkpoint == n
    one_by_one = project_overlapped(records, list(range(1, n)), [False])
    assert _as_tables(one_by_one) == _as_tables(whole)


def test_overlay_takes_pending_rows_and_event_ids_for_the_batch_keys_only() -> None:
    log = Log()
    first = log.add(
        MessageDelta, MessageDeltaData(text="a"), session_id="s1", run_id="r1", agent_type="x"
    )
    log.add(MessageDelta, MessageDeltaData(text="b"), session_id="s2", run_id="r2")
    pending = fold(log.records, Snapshot())
    stale = fold(log.records[:1], Snapshot())  # what the database held before
    keys = BatchKeys(
        run_ids={"r1", "r9"},
        session_ids={"s1"},
        turn_ids={"assistant:r1"},
        event_ids={first.id, "other"},
    )
    snapshot = Snapshot(runs={"r1": stale.runs["r1"]}, sessions=dict(stale.sessions))
    overlay(snapshot, keys, pending)
    assert snapshot.runs == {"r1": pending.runs["r1"]}
    assert snapshot.sessions["s1"] is pending.sessions["s1"]
    assert snapshot.turns == {"assistant:r1": pending.turns["assistant:r1"]}
    assert "r2" not in snapshot.runs and "s2" not in snapshot.sessions
    assert snapshot.known_event_ids == {first.id}
