"""SQLite commits run in a write process of the backend's own: it goes away with the
backend (close, or its parent killed), a crashed one fails that commit only and is
replaced, and a commit it did not finish leaves nothing behind (G4)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from readmodel_suite import changes_of, event_row

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


async def test_a_killed_write_process_fails_one_commit_and_is_replaced(tmp_path: Path) -> None:
    backend = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path / 'rm.db'}")
    await backend.start()
    try:
        await backend.commit(changes_of(1, events=[event_row(1)]))
        os.kill(writer_pid(backend), signal.SIGKILL)
        with pytest.raises(RuntimeError, match="write process"):
            await backend.commit(changes_of(2, events=[event_row(2)]))
        assert await backend.checkpoint() == 1
        await backend.commit(changes_of(2, events=[event_row(2)]))
        assert await backend.checkpoint() == 2
        assert [row.seq for row in await backend.events()] == [1, 2]
    finally:
        await backend.close()


OWNER = """
import asyncio, sys
sys.path[:0] = {paths!r}
from readmodel_suite import changes_of, event_row
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
