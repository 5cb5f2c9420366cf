"""The live tail over Server-Sent Events, through uvicorn on a real socket: replay then
live with no gap or duplicate, heartbeats, run streams that end, and a client that
disconnects mid-run and resumes with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from apikit import WAIT, api_world, asgi_client, served
from projectkit import sqlite_url
from scenario import new_id, run_events
from test_api_commands import ECHO, worker
from workerkit import run_history

from eventstore.envelope import Event
from eventstore.subjects import session_filter
from gateway.api.fanout import FanOut, TailClosed


async def frames(
    source: httpx.Response | AsyncIterator[str], *, comments: list[str] | None = None
) -> AsyncIterator[dict[str, str]]:
    """SSE frames of a streaming response (or of its lines); comments go to ``comments``."""
    frame: dict[str, str] = {}
    lines = source.aiter_lines() if isinstance(source, httpx.Response) else source
    async for line in lines:
        if line == "":
            if "data" in frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


async def take(stream: AsyncIterator[dict[str, str]], count: int) -> list[dict[str, str]]:
    taken: list[dict[str, str]] = []
    async with asyncio.timeout(WAIT):
        async for frame in stream:
            taken.append(frame)
            if len(taken) == count:
                break
    return taken


async def test_session_tail_replays_then_follows_live_with_heartbeats(
    nats_url: str, tmp_path: Path
) -> None:
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        # a session's tail carries what its runs emit (jl.data.<sid>.>), not the commands
        whole_run = run_events("tail-s", new_id("run"), text="first run")
        await world.append(whole_run)
        first = emitted(whole_run)
        await world.append(run_events("elsewhere", new_id("run"), text="not this session"))
        async with (
            served(world.app()) as base,
            httpx.AsyncClient(base_url=base, timeout=WAIT) as http,
        ):
            comments: list[str] = []
            async with http.stream("GET", "/v1/sessions/tail-s/stream") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                stream = frames(response, comments=comments)
                replayed = await take(stream, len(first))
                assert [json.loads(f["data"])["id"] for f in replayed] == [e.id for e in first]
                assert [f["event"] for f in replayed] == [e.type for e in first]
                ids = [int(f["id"]) for f in replayed]
                assert ids == sorted(ids)

                second = run_events("tail-s", new_id("run"), text="second run")
                await world.append(second)
                second = emitted(second)
                live = await take(stream, len(second))
                assert [json.loads(f["data"])["id"] for f in live] == [e.id for e in second]
                assert int(live[0]["id"]) > ids[-1]
                # idle now: heartbeats (0.5 s in tests) keep the stream open
                async with asyncio.timeout(WAIT):
                    while not any("heartbeat" in c for c in comments):
                        await world.append(run_events("elsewhere", new_id("run"), text="x"))
                        await asyncio.sleep(0.6)
                        await anext_or_none(stream, 0.1)
            # ?after= starts after a sequence
            async with http.stream(
                "GET", "/v1/sessions/tail-s/stream", params={"after": ids[-1]}
            ) as response:
                rest = await take(frames(response), len(second))
                assert [json.loads(f["data"])["id"] for f in rest] == [e.id for e in second]


def emitted(events: list[Event]) -> list[Event]:
    return [event for event in events if not event.type.startswith("command.")]


async def anext_or_none(stream: AsyncIterator[dict[str, str]], seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await anext(stream)
    except TimeoutError:
        return


async def test_disconnect_mid_run_and_resume_with_last_event_id(
    nats_url: str, tmp_path: Path
) -> None:
    async with (
        api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world,
        worker(world, ECHO, "echo"),
    ):
        app = world.app()
        async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
            sent = await http.post(
                "/v1/sessions/resume/messages",
                json={
                    "agent_type": "echo",
                    "content": "0123456789",
                    "metadata": {"chunks": 10, "delay": 0.15},
                },
            )
            run_id = sent.json()["run_id"]
            async with http.stream("GET", f"/v1/runs/{run_id}/stream") as response:
                before = await take(frames(response), 3)  # then the client goes away
            last_id = before[-1]["id"]
            async with http.stream(
                "GET", f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": last_id}
            ) as response:
                after = [frame async for frame in frames(response)]  # ends by itself
            assert after[-1]["event"] == "run.completed"

        history = emitted(await run_history(world.store, run_id))
        received = [json.loads(f["data"])["id"] for f in before + after]
        assert received == [event.id for event in history], "a gap or a duplicate"
        assert history[-1].type == "run.completed"
        assert [f["event"] for f in before + after].count("message.delta") == 10


async def test_bad_last_event_id_and_unknown_restricted_stream(
    nats_url: str, tmp_path: Path
) -> None:
    async with (
        api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world,
        asgi_client(world.app()) as api,
    ):
        response = await api.get("/v1/sessions/s/stream", headers={"Last-Event-ID": "twelve"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_last_event_id"
        negative = await api.get("/v1/runs/r/stream", params={"after": -3})
        assert negative.status_code == 422


async def test_many_tails_share_one_reader_and_each_gets_everything(
    nats_url: str, tmp_path: Path
) -> None:
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        app = world.app()
        async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
            tails = 20
            opened = asyncio.Semaphore(0)
            received: list[list[str]] = [[] for _ in range(tails)]
            expected = emitted(run_events("shared", new_id("run"), text="x" * 40, chunks=20))

            async def tail(index: int) -> None:
                async with http.stream("GET", "/v1/sessions/shared/stream") as response:
                    lines = response.aiter_lines()
                    assert (await anext(lines)).startswith("retry:")  # joined by now
                    opened.release()
                    async for frame in frames(lines):
                        received[index].append(json.loads(frame["data"])["id"])
                        if len(received[index]) == len(expected):
                            return

            tasks = [asyncio.create_task(tail(i)) for i in range(tails)]
            async with asyncio.timeout(WAIT):
                for _ in range(tails):
                    await opened.acquire()
            fanout = app.state.context.fanout
            assert len(fanout._hubs) == 1  # one reader of the log for all 20 tails
            await world.append(expected)
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*tasks)
            assert all(ids == [e.id for e in expected] for ids in received)


async def test_a_slow_tail_is_closed_and_resumes_without_loss(
    nats_url: str, tmp_path: Path
) -> None:
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        fanout = FanOut(world.store, queue_frames=5)
        try:
            events = emitted(run_events("slow", new_id("run"), text="y" * 30, chunks=15))
            subject = session_filter("slow", world.settings.root)
            tail = fanout.frames(
                await fanout.join(subject), 1, ends_at_terminal=False, heartbeat=0.2
            )
            assert await anext(tail) is None  # replayed nothing, following live, idle
            await world.append(events)  # far more than the 5 frames it may queue, unread
            seen: list[int] = []
            with pytest.raises(TailClosed) as closed:
                async with asyncio.timeout(WAIT):
                    while True:
                        frame = await anext(tail)
                        if frame is not None:
                            seen.append(frame.seq)
            assert closed.value.code == "slow_consumer"
            assert 0 < len(seen) < len(events)
            await tail.aclose()
            resumed = fanout.frames(
                await fanout.join(subject),
                seen[-1] + 1,
                ends_at_terminal=True,
                heartbeat=0.5,
            )
            async with contextlib.aclosing(resumed):
                async for frame in resumed:
                    if frame is not None:
                        seen.append(frame.seq)
            assert len(seen) == len(events) and seen == sorted(set(seen))
        finally:
            await fanout.close()
