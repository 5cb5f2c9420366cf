"""The README's quick start, run as written: ``jetledger up`` in a fresh directory serves,
the ``send`` command it prints gets the echo, the HTTP API shows the transcript and tails
the session, Ctrl-C stops every process cleanly, and a second ``up`` continues.

Everything runs as subprocesses of the venv's ``jetledger`` script, as a user would.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway.up_children import process_alive

JETLEDGER = Path(sys.executable).parent / "jetledger"
READY_WITHIN = 90.0  # two cores shared with other suites: four Python processes start
STOP_WITHIN = 30.0
SEND_WITHIN = 60.0
PROJECTED_WITHIN = 20.0

pytestmark = pytest.mark.slow


class Up:
    """A running ``jetledger up`` whose output is collected by reader threads."""

    def __init__(self, cwd: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JETLEDGER_")}
        env |= {"JETLEDGER_UP_STOP_TIMEOUT": "15", "JETLEDGER_UP_READY_TIMEOUT": "80"}
        self.cwd = cwd
        self.process = subprocess.Popen(
            [str(JETLEDGER), "up", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        for stream, sink in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=_collect, args=(stream, sink), daemon=True).start()

    def wait_ready(self) -> str:
        """The banner, once ``up`` printed it (fails with ``up``'s output otherwise)."""
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if any(line.startswith("Ctrl-C stops everything") for line in self.out):
                return "".join(self.out)
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop_now()
        pytest.fail(f"jetledger up is not ready:\n{''.join(self.out)}\n{''.join(self.err)}")

    def interrupt(self) -> int:
        """Ctrl-C; the exit code once ``up`` has exited."""
        self.process.send_signal(signal.SIGINT)
        return self.wait_exit()

    def wait_exit(self) -> int:
        try:
            return self.process.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            self.stop_now()
            pytest.fail(f"jetledger up did not exit within {STOP_WITHIN}s:\n{''.join(self.err)}")

    def stop_now(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_WITHIN)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def _collect(stream: object, sink: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line)


def banner_facts(banner: str) -> tuple[str, list[str], dict[str, int]]:
    """The API URL, the printed send command (as argv) and the pid of every part."""
    api_url = re.search(r"jetledger is up: (http://127\.0\.0\.1:\d+)", banner)
    assert api_url is not None, banner
    send_line = next(line for line in banner.splitlines() if " send " in line)
    pids = {name: int(pid) for name, pid in re.findall(r"^  (\S+)\s+pid (\d+)", banner, re.M)}
    assert set(pids) == {"nats-server", "projector", "api", "worker"}, banner
    return api_url.group(1), shlex.split(send_line.strip()), pids


def run_printed(argv: list[str], cwd: Path, text: str) -> list[str]:
    """Run the printed send command with ``text`` as its message; its stdout lines."""
    argv = [text if arg == "hello" else arg for arg in argv]
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=SEND_WITHIN, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def transcript_text(api_url: str, expected: list[str]) -> str:
    """The demo session's transcript once it mentions every ``expected`` string."""
    deadline = time.monotonic() + PROJECTED_WITHIN
    body = ""
    while time.monotonic() < deadline:
        response = httpx.get(f"{api_url}/v1/sessions/demo/transcript", timeout=5)
        body = response.text
        if response.status_code == 200 and all(item in body for item in expected):
            return body
        time.sleep(0.2)
    pytest.fail(f"the transcript never showed {expected}: {body}")


def first_sse_event_with(api_url: str, needle: str) -> str:
    """Follow the session's SSE tail until an event mentions ``needle``."""
    with httpx.stream(
        "GET",
        f"{api_url}/v1/sessions/demo/stream",
        params={"after": 0},
        timeout=httpx.Timeout(10.0),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:") and needle in line:
                return line
    pytest.fail(f"the stream ended without {needle!r}")


def assert_all_gone(pids: dict[str, int]) -> None:
    left = {name: pid for name, pid in pids.items() if process_alive(pid)}
    assert not left, f"processes left behind: {left}"


def test_quick_start_runs_as_written_and_a_second_up_continues(tmp_path: Path) -> None:
    first = Up(tmp_path)
    api_url, send_argv, pids = banner_facts(first.wait_ready())
    try:
        sent = run_printed(send_argv, tmp_path, "hello from the README")
        run_id, reply = sent[0], sent[-1]
        assert reply == "hello from the README"
        transcript_text(api_url, [run_id, "hello from the README"])
        assert run_id in first_sse_event_with(api_url, run_id)
    finally:
        code = first.interrupt()
    assert code == 0, "".join(first.err)
    assert "stopped cleanly" in "".join(first.err)
    assert_all_gone(pids)

    second = Up(tmp_path)
    api_url, send_argv, pids = banner_facts(second.wait_ready())
    try:
        # The read model survived: the first run is there before anything new is sent.
        transcript_text(api_url, [run_id])
        again = run_printed(send_argv, tmp_path, "and again")
        assert again[-1] == "and again"
        transcript_text(api_url, [run_id, again[0], "and again"])
    finally:
        code = second.interrupt()
    assert code == 0, "".join(second.err)
    assert_all_gone(pids)


def test_a_dead_part_stops_the_rest_and_a_second_up_is_refused(tmp_path: Path) -> None:
    up = Up(tmp_path, "--port", "0")
    _api_url, _send_argv, pids = banner_facts(up.wait_ready())
    try:
        busy = subprocess.run(
            [str(JETLEDGER), "up"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert busy.returncode == 1
        assert f"another 'jetledger up' (pid {up.process.pid})" in busy.stderr
        os.kill(pids["worker"], signal.SIGKILL)
        code = up.wait_exit()
    finally:
        up.stop_now()
    assert code == 1
    err = "".join(up.err)
    assert f"worker (pid {pids['worker']}) exited unexpectedly with code -9" in err
    assert_all_gone(pids)


def wait_gone(pids: dict[str, int], within: float) -> dict[str, int]:
    """The processes of ``pids`` still running after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(process_alive(p) for p in pids.values()):
        time.sleep(0.1)
    return {name: pid for name, pid in pids.items() if process_alive(pid)}


def test_a_killed_up_takes_its_children_along_and_the_next_up_recovers(tmp_path: Path) -> None:
    first = Up(tmp_path, "--port", "0")
    _api_url, _send_argv, pids = banner_facts(first.wait_ready())
    first.process.kill()  # SIGKILL: up cannot stop anything itself
    first.process.wait(STOP_WITHIN)
    children = {name: pid for name, pid in pids.items() if name != "nats-server"}
    assert wait_gone(children, STOP_WITHIN) == {}
    # nats-server is not up's child process (no parent-death signal): the next up stops it.
    assert process_alive(pids["nats-server"])

    second = Up(tmp_path, "--port", "0")
    banner = second.wait_ready()
    try:
        assert f"stopped nats-server {pids['nats-server']}" in banner
        assert not process_alive(pids["nats-server"])
        _api_url, send_argv, new_pids = banner_facts(banner)
        assert run_printed(send_argv, tmp_path, "after a crash")[-1] == "after a crash"
    finally:
        code = second.interrupt()
    assert code == 0, "".join(second.err)
    assert_all_gone(new_pids)
