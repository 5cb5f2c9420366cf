"""Realistic event streams for projection tests and benchmarks: sessions with runs that
stream deltas, call tools, set state, fan out to child runs and end."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

from eventstore.catalog import (
    CommandAsk,
    CommandAskData,
    GroupDispatched,
    GroupDispatchedData,
    GroupMember,
    MessageDelta,
    MessageDeltaData,
    RunCompleted,
    RunCompletedData,
    RunFailed,
    RunFailedData,
    RunStarted,
    RunStartedData,
    StateUpdated,
    StateUpdatedData,
    ToolCallCompleted,
    ToolCallCompletedData,
    ToolCallStarted,
    ToolCallStartedData,
)
from eventstore.catalog_common import ErrorInfo
from eventstore.envelope import Event

_counter = itertools.count()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_events(
    session_id: str,
    run_id: str,
    *,
    text: str,
    chunks: int = 3,
    agent_type: str = "echo",
    parent_run_id: str | None = None,
    root_run_id: str | None = None,
    group_id: str | None = None,
    worker_id: str = "w1",
    fail: bool = False,
    tool: bool = False,
) -> list[Event]:
    """One run from its command to its terminal event."""
    envelope = {
        "session_id": session_id,
        "run_id": run_id,
        "agent_type": agent_type,
        "parent_run_id": parent_run_id,
        "root_run_id": root_run_id or run_id,
        "group_id": group_id,
        "user_code": "u1",
    }
    out: list[Event] = [
        CommandAsk(**envelope, data=CommandAskData(content=f"please: {text[:20]}")),
        RunStarted(**envelope, worker_id=worker_id, data=RunStartedData(attempt=1)),
    ]
    if tool:
        out.append(
            ToolCallStarted(
                **envelope,
                worker_id=worker_id,
                data=ToolCallStartedData(
                    tool_call_id=f"tc-{run_id}", tool_name="search", parameters={"q": text[:10]}
                ),
            )
        )
        out.append(
            ToolCallCompleted(
                **envelope,
                worker_id=worker_id,
                data=ToolCallCompletedData(
                    tool_call_id=f"tc-{run_id}", tool_name="search", result={"hits": 3}
                ),
            )
        )
        out.append(
            StateUpdated(
                **envelope,
                worker_id=worker_id,
                data=StateUpdatedData(scope="session", key="last_query", value=text[:10]),
            )
        )
    size = max(1, len(text) // chunks)
    for index, start in enumerate(range(0, len(text), size)):
        out.append(
            MessageDelta(
                **envelope,
                worker_id=worker_id,
                data=MessageDeltaData(text=text[start : start + size], index=index),
            )
        )
    if fail:
        out.append(
            RunFailed(
                **envelope,
                worker_id=worker_id,
                data=RunFailedData(
                    error=ErrorInfo(type="RuntimeError", message="boom"), code="runner.exception"
                ),
            )
        )
    else:
        out.append(
            RunCompleted(**envelope, worker_id=worker_id, data=RunCompletedData(content=text))
        )
    return out


def session_events(
    session_id: str, runs: int, *, chunks: int = 3, min_words: int = 1
) -> Iterator[tuple[str, str, Event]]:
    """Events of ``runs`` runs in one session, interleaved pairwise; yields
    ``(run_id, expected assistant text, event)``."""
    pending = []
    for n in range(runs):
        run_id = new_id("run")
        text = f"answer {n} for {session_id}: " + "lorem ipsum " * max(min_words, n % 5 + 1)
        pending.append(
            (
                run_id,
                text,
                run_events(
                    session_id, run_id, text=text, chunks=chunks, tool=n % 3 == 0, fail=n % 11 == 10
                ),
            )
        )
    # interleave two runs at a time, keeping each run's own order
    for first, second in itertools.zip_longest(pending[0::2], pending[1::2]):
        streams = [s for s in (first, second) if s is not None]
        iters = [iter(s[2]) for s in streams]
        alive = list(range(len(iters)))
        while alive:
            for i in list(alive):
                event = next(iters[i], None)
                if event is None:
                    alive.remove(i)
                else:
                    yield streams[i][0], streams[i][1], event


def three_level_tree(session_id: str) -> tuple[str, list[Event]]:
    """A root run that fans out (group of 2) where one child calls a grandchild."""
    root = new_id("root")
    children = [new_id("child"), new_id("child")]
    grandchild = new_id("grand")
    group_id = new_id("grp")
    events: list[Event] = run_events(session_id, root, text="root done", agent_type="planner")[:2]
    events.append(
        GroupDispatched(
            session_id=session_id,
            run_id=root,
            root_run_id=root,
            group_id=group_id,
            agent_type="planner",
            worker_id="w1",
            data=GroupDispatchedData(
                strategy="all",
                members=[
                    GroupMember(index=i, run_id=c, agent_type="worker", content=f"part {i}")
                    for i, c in enumerate(children)
                ],
            ),
        )
    )
    member = {"agent_type": "worker", "parent_run_id": root, "root_run_id": root}
    events += run_events(session_id, children[0], text="child zero", group_id=group_id, **member)
    child1 = run_events(
        session_id, children[1], text="child one", group_id=group_id, fail=True, **member
    )
    events += child1[:2]
    events += run_events(
        session_id,
        grandchild,
        text="grand",
        agent_type="leaf",
        parent_run_id=children[1],
        root_run_id=root,
    )
    events += child1[2:]
    events += run_events(session_id, root, text="root done", agent_type="planner")[2:]
    return root, events
