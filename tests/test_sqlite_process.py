"""SQLite commits run in a write process of the backend's own: it goes away with the
backend (close, or its parent killed), a crashed one fails the commits it owes and is
replaced, a commit it did not finish leaves nothing behind (G4), and pipelined commits
apply in order with no gap behind a failed one."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from readmodel_suite import changes_of, event_row
from sqlalchemy.exc import IntegrityError

from projections.sql_backend import SqlReadModel


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[1].split()[0] != "Z"


def writer_pid(backend: SqlReadModel) -> int:
    writer = backend._sqlite_writer
    assert writer is not None and writer._process is not None
    return writer._process.pid


async def test_the_write_process_ends_with_close(tmp_path: Path) -> None:
    backend = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path / 'rm.db'}")
    await backend.start()
    await backend.commit(changes_of(1, events=[event_row(1)]))
    pid = writer_pid(backend)
    assert alive(pid)
    await backend.close()
    assert not alive(pid)
    # the backend can be used again after close: a new write process
    await backend.start()
    await backend.commit(changes_of(2, events=[event_row(2)]))
    assert await backend.checkpoint() == 2
    assert writer_pid(backend) != pid
    await backend.close()


async def wait_until_replaced(backend: SqlReadModel, pid: int) -> None:
    """Until the backend's reader thread has seen ``pid`` end (it then clears it)."""
    writer = backend._sqlite_writer
    assert writer is not None
    deadline = time.monotonic() + 10
    while writer._process is not None and writer._process.pid == pid:
        assert time.monotonic() < deadline, "the end of the write process went unnoticed"
        await asyncio.sleep(0.01)


async def test_a_write_process_killed_while_idle_is_replaced(tmp_path: Path) -> None:
    backend = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path / 'rm.db'}")
    await backend.start()
    try:
        await backend.commit(changes_of(1, events=[event_row(1)]))
        pid = writer_pid(backend)
        os.kill(pid, signal.SIGKILL)
        await wait_until_replaced(backend, pid)
        assert not alive(pid)  # reaped, not left as a zombie
        await backend.commit(changes_of(2, events=[event_row(2)]))
        assert writer_pid(backend) != pid
        assert await backend.checkpoint() == 2
        assert [row.seq for row in await backend.events()] == [1, 2]
    finally:
        await backend.close()


async def test_a_killed_write_process_fails_the_commits_it_owes_and_is_replaced(
    tmp_path: Path,
) -> None:
    backend = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path / 'rm.db'}")
    await backend.start()
    try:
        await backend.commit(changes_of(1, events=[event_row(1)]))
        pid = writer_pid(backend)
        os.kill(pid, signal.SIGSTOP)  # it cannot answer: both requests stay owed
        owed = [
            asyncio.create_task(backend.commit(changes_of(2, events=[event_row(2)]))),
            asyncio.create_task(backend.commit(changes_of(3, events=[event_row(3)]))),
        ]
        await asyncio.sleep(0.2)
        assert not any(task.done() for task in owed)
        os.kill(pid, signal.SIGKILL)
        for task in owed:
            with pytest.raises(RuntimeError, match="write process"):
                await task
        assert await backend.checkpoint() == 1
        await backend.commit(changes_of(2, events=[event_row(2)]))
        assert await backend.checkpoint() == 2
        assert [row.seq for row in await backend.events()] == [1, 2]
    finally:
        await backend.close()


async def test_a_cancelled_commit_still_orders_the_next_one(tmp_path: Path) -> None:
    """A caller cancelled while its batch is being written leaves the batch in flight:
    it is applied, its reply does not get lost, and the next batch still follows it."""
    backend = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path / 'rm.db'}")
    await backend.start()
    try:
        await backend.commit(changes_of(1, events=[event_row(1)]))
        pid = writer_pid(backend)
        os.kill(pid, signal.SIGSTOP)
        try:
            cancelled = asyncio.create_task(backend.commit(changes_of(2, events=[event_row(2)])))
            await asyncio.sleep(0.2)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            following = asyncio.create_task(backend.commit(changes_of(3, events=[event_row(3)])))
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.wait_for(following, 30)
        assert await backend.checkpoint() == 3
        assert [row.seq for row in await backend.events()] == [1, 2, 3]
        await backend.commit(changes_of(4, events=[event_row(4)]))
        assert writer_pid(backend) == pid
    finally:
        await backend.close()


async def test_pipelined_commits_apply_in_order(tmp_path: Path) -> None:
    backend = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path / 'rm.db'}")
    await backend.start()
    try:
        assert backend.commit_pipeline_depth == 2
        await asyncio.gather(
            *(backend.commit(changes_of(seq, events=[event_row(seq)])) for seq in range(1, 6))
        )
        assert await backend.checkpoint() == 5
        assert [row.seq for row in await backend.events()] == [1, 2, 3, 4, 5]
    finally:
        await backend.close()


async def test_a_batch_queued_behind_a_failed_one_is_refused_not_applied(tmp_path: Path) -> None:
    """No gap: batch 3 was sent while batch 2 was unanswered; 2 fails (a duplicate event
    id), so 3 must not be applied on top of 1."""
    backend = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path / 'rm.db'}")
    await backend.start()
    try:
        await backend.commit(changes_of(1, events=[event_row(1)]))
        duplicate = replace(event_row(2), id=event_row(1).id)
        second, third = await asyncio.gather(
            backend.commit(changes_of(2, events=[duplicate])),
            backend.commit(changes_of(3, events=[event_row(3)])),
            return_exceptions=True,
        )
        assert isinstance(second, IntegrityError)
        assert isinstance(third, ValueError)
        assert "earlier batch was not written" in str(third)
        assert await backend.checkpoint() == 1
        assert [row.seq for row in await backend.events()] == [1]
        # the caller may go on from where the read model is
        await backend.commit(changes_of(3, events=[event_row(2), event_row(3)]))
        assert await backend.checkpoint() == 3
    finally:
        await backend.close()


OWNER = """
import asyncio, sys
sys.path[:0] = {paths!r}
from readmodel_suite import changes_of, event_row
from sqlalchemy.exc import IntegrityError
from projections.sql_backend import SqlReadModel

async def main() -> None:
    backend = SqlReadModel("sqlite+aiosqlite:///{db}")
    await backend.start()
    await backend.commit(changes_of(1, events=[event_row(1)]))
    print(backend._sqlite_writer._process.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_write_process_dies_with_a_killed_owner(tmp_path: Path) -> None:
    tests = str(Path(__file__).parent)
    root = str(Path(__file__).parent.parent)
    script = OWNER.format(paths=[tests, root], db=tmp_path / "rm.db")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        ready, _, _ = select.select([owner.stdout], [], [], 60)
        assert ready, "the owner never committed"
        child = int(owner.stdout.readline())
        assert alive(child)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
