"""The child processes of ``jetledger up``: one ``jetledger`` subcommand each, its output
appended to a log file, stopped with SIGTERM and, past a deadline, SIGKILL.

Each child gets a session of its own, so a terminal's Ctrl-C reaches only ``up``, which
then stops the children in order (workers drain before the server they drain to goes
away). On Linux a child also gets SIGTERM when ``up`` itself dies, even by SIGKILL, so a
crashed ``up`` leaves no orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
_LOG_TAIL_BYTES = 4096
_REAP_TIMEOUT = 5.0  # the kernel reaps a SIGKILLed process at once; longer means a stuck host


class ChildError(RuntimeError):
    """A child process of ``jetledger up`` could not be started or stopped."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One ``jetledger <subcommand>`` process whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ChildError(f"{self.name} has not been started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended (negative: killed by that signal)."""
        return None if self._process is None else self._process.poll()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, env: dict[str, str]) -> None:
        """Start ``python -m gateway.cli <args>`` (the interpreter running ``up``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"== {stamp} jetledger {' '.join(self.args)}\n".encode())
            log.flush()
            try:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli", *self.args],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - up is single-threaded when it spawns
                )
            except OSError as exc:
                raise ChildError(f"cannot start {self.name}: {exc}") from exc

    def new_output(self) -> str:
        """What the child wrote to its log since this start (the log is shared by runs)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the log, for error messages."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(self._log_offset, self.log_path.stat().st_size - _LOG_TAIL_BYTES))
                data = log.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(data.splitlines()[-lines:])

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM); it drains or commits, then exits."""
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.running:
            assert self._process is not None
            self._process.kill()
            try:
                self._process.wait(_REAP_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise ChildError(f"{self.name} (pid {self.pid}) survived SIGKILL") from exc

    async def wait(self, timeout: float, poll_interval: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit; ``False`` if it is still up.

        Polled, not ``Popen.wait`` in a thread: a thread blocked in ``wait`` could not be
        abandoned when a second Ctrl-C asks to hurry."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(poll_interval)
        return not self.running


def stop_stale_nats_server(pid_file: Path, store_dir: Path, timeout: float) -> int | None:
    """Stop a nats-server that an ``up`` killed by SIGKILL left running on ``store_dir``
    (it runs in a session of its own and does not die with ``up``); return its pid.

    Only a process that is a nats-server with ``store_dir`` on its command line is touched,
    so a recycled pid is left alone. Callers hold the data directory's lock, so no live
    ``up`` owns that server."""
    try:
        pid = int(pid_file.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None  # no pid file, the process is gone, or no /proc on this system
    if not argv[0].endswith(b"nats-server") or str(store_dir).encode() not in argv:
        return None
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # a clean JetStream shutdown, as in EmbeddedNatsServer
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    return pid


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; an exited process nobody reaped yet (a zombie) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # the state follows "(comm)"


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child: ours, unbuffered output (logs appear as written), and
    ``extra`` for settings the user did not set explicitly."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in extra.items():
        env.setdefault(key, value)
    return env


__all__ = ["Child", "ChildError", "child_env", "process_alive", "stop_stale_nats_server"]
