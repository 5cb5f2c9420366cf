"""``jetledger up``: the whole system as one process tree (DESIGN §6).

An embedded nats-server (or an existing one), the projector into SQLite (or ``--db``),
the HTTP API and the echo demo worker, all under one data directory. :class:`System`
starts them in dependency order, waits until the API answers and the worker polls, then
watches them; :meth:`System.shutdown` stops them in the reverse order (the worker drains
and the API closes while NATS is still there, then the projector commits, then NATS).
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from eventstore.embedded import EmbeddedNatsServer
from gateway.client import GatewayClient
from gateway.up_children import Child, child_env, stop_stale_nats_server
from gateway.up_settings import UpOptions, UpSettings
from projections.backends import open_backend

DEFAULT_NATS_PORT = 4222
DEFAULT_API_PORT = 8000
DEMO_AGENT_TYPE = "echo"
DEMO_WORKER_CLASS = "runners.examples.echo:EchoWorker"
_API_LINE = re.compile(r"^jetledger api: serving (http://\S+)\s*$", re.MULTILINE)


class UpError(RuntimeError):
    """``up`` could not bring the system up, or a part of it died."""


class ChildDied(UpError):
    """A child exited while it should have been serving."""


@dataclass(slots=True)
class Ready:
    """What a started system serves, for the banner."""

    nats_url: str
    api_url: str
    db_url: str
    nats_pid: int | None
    children: list[Child] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class System:
    """The process tree of ``up``. Use :meth:`start`, :meth:`watch`, :meth:`shutdown`."""

    def __init__(self, options: UpOptions, settings: UpSettings) -> None:
        self.options = options
        self.settings = settings
        self.nats: EmbeddedNatsServer | None = None
        self.children: list[Child] = []
        self._notes: list[str] = []
        self._reported: set[str] = set()
        """Children whose death was already reported by :meth:`watch` or :meth:`start`."""

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    async def start(self) -> Ready:
        """Start everything; return once the API answers and the worker polls."""
        self.options.logs_dir.mkdir(parents=True, exist_ok=True)
        nats_url = self.options.nats_url or await self._start_nats()
        db_url = self.options.resolved_db_url
        client = GatewayClient(nats_url, worker_probe_timeout=self.settings.poll_interval)
        # Connecting provisions the stream and buckets once, before three children race to.
        await asyncio.wait_for(client.connect(), self.settings.ready_timeout)
        try:
            await asyncio.wait_for(_create_read_model(db_url), self.settings.ready_timeout)
            self._spawn(nats_url, db_url)
            api_url = await self._until_ready(client)
        finally:
            await client.close()
        return Ready(
            nats_url=nats_url,
            api_url=api_url,
            db_url=db_url,
            nats_pid=None if self.nats is None else self.nats.pid,
            children=list(self.children),
            notes=list(self._notes),
        )

    async def watch(self) -> ChildDied:
        """Return (as an error to report) when a child or the nats-server exits."""
        while True:
            if died := self._dead_child():
                return died
            await asyncio.sleep(self.settings.poll_interval)

    async def shutdown(self, hurry: asyncio.Event) -> list[str]:
        """Stop everything, in order; return the problems (empty: all stopped cleanly).

        ``hurry`` (a second Ctrl-C) kills whatever is still running at once."""
        problems: list[str] = []
        by_name = {child.name: child for child in self.children}
        for stage in (("worker", "api"), ("projector",)):
            group = [by_name[name] for name in stage if name in by_name]
            for child in group:
                child.terminate()
            outcomes = await asyncio.gather(*(self._stop_child(c, hurry) for c in group))
            problems += [problem for problem in outcomes if problem]
        if self.nats is not None:
            timeout = 0.0 if hurry.is_set() else self.settings.stop_timeout
            await self.nats.stop(timeout)
            (self.options.data_dir / "nats.pid").unlink(missing_ok=True)
            if self.nats.returncode not in (0, None) and "nats-server" not in self._reported:
                problems.append(f"nats-server exited with code {self.nats.returncode}")
        return problems

    # -- internals ----------------------------------------------------------------------

    async def _start_nats(self) -> str:
        host = "127.0.0.1"
        store_dir = (self.options.data_dir / "nats").resolve()
        store_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.options.data_dir / "nats.pid"
        # First: a stale server may hold port 4222 as well as the store.
        stale = await asyncio.to_thread(
            stop_stale_nats_server, pid_file, store_dir, self.settings.stop_timeout
        )
        if stale is not None:
            self._notes.append(f"stopped nats-server {stale}, left running by a killed 'up'")
        port = DEFAULT_NATS_PORT if port_is_free(host, DEFAULT_NATS_PORT) else 0
        if port == 0:
            self._notes.append(
                f"port {DEFAULT_NATS_PORT} is taken (another nats-server?): NATS serves on a "
                "free port instead; the commands below use it"
            )
        self.nats = EmbeddedNatsServer(
            host=host,
            port=port,
            store_dir=store_dir,
            log_file=(self.options.logs_dir / "nats-server.log").resolve(),
            startup_timeout=self.settings.nats_start_timeout,
        )
        url = await self.nats.start()
        pid_file.write_text(f"{self.nats.pid}\n")
        return url

    def _api_port(self) -> int:
        requested = self.options.api_port
        if requested is not None:
            return requested
        if port_is_free(self.options.api_host, DEFAULT_API_PORT):
            return DEFAULT_API_PORT
        self._notes.append(f"port {DEFAULT_API_PORT} is taken: the API serves on a free port")
        return 0

    def _spawn(self, nats_url: str, db_url: str) -> None:
        logs = self.options.logs_dir
        nats = ["--nats-url", nats_url]
        host, port = self.options.api_host, str(self._api_port())
        specs = [
            ("projector", ["project", "--db", db_url, *nats]),
            ("api", ["api", "--host", host, "--port", port, "--db", db_url, *nats]),
            (
                "worker",
                [
                    *("worker", "--worker-class", DEMO_WORKER_CLASS),
                    *("--worker-id", self.settings.worker_id, *nats),
                ],
            ),
        ]
        # The worker must finish draining before up gives up on it.
        drain = f"{max(1.0, self.settings.stop_timeout * 0.75):g}"
        env = child_env({"JETLEDGER_WORKER_DRAIN_TIMEOUT": drain})
        for name, args in specs:
            child = Child(name, args, logs / f"{name}.log")
            self.children.append(child)
            child.start(env)

    async def _until_ready(self, client: GatewayClient) -> str:
        deadline = time.monotonic() + self.settings.ready_timeout
        api_url: str | None = None
        healthy = worker_polls = False
        async with httpx.AsyncClient(timeout=max(1.0, self.settings.poll_interval)) as http:
            while True:
                if died := self._dead_child():
                    raise died
                if api_url is None and (match := _API_LINE.search(self.child("api").new_output())):
                    api_url = match.group(1)
                if api_url is not None and not healthy:
                    healthy = await _answers(http, f"{api_url}/healthz")
                if not worker_polls:
                    worker_polls = await client.has_live_worker(DEMO_AGENT_TYPE)
                if api_url is not None and healthy and worker_polls:
                    return api_url
                if time.monotonic() > deadline:
                    raise UpError(self._not_ready(api_url, healthy, worker_polls))
                await asyncio.sleep(self.settings.poll_interval)

    def _not_ready(self, api_url: str | None, healthy: bool, worker_polls: bool) -> str:
        waiting = []
        if api_url is None:
            waiting.append("the API never printed its URL")
        elif not healthy:
            waiting.append(f"{api_url}/healthz never answered 200")
        if not worker_polls:
            waiting.append(f"the {DEMO_AGENT_TYPE} worker never polled")
        names = ["api"] if api_url is None or not healthy else []
        names += [] if worker_polls else ["worker"]
        tails = "".join(
            f"\nlast lines of {self.child(n).log_path}:\n{self.child(n).log_tail()}" for n in names
        )
        return (
            f"not ready within {self.settings.ready_timeout:g}s "
            f"(JETLEDGER_UP_READY_TIMEOUT): {'; '.join(waiting)}{tails}"
        )

    def _dead_child(self) -> ChildDied | None:
        if self.nats is not None and not self.nats.running:
            self._reported.add("nats-server")
            return ChildDied(
                f"nats-server (pid {self.nats.pid}) exited unexpectedly with code "
                f"{self.nats.returncode}; see {self.nats.log_file}"
            )
        for child in self.children:
            if (code := child.returncode) is not None:
                self._reported.add(child.name)
                return ChildDied(
                    f"{child.name} (pid {child.pid}) exited unexpectedly with code {code}; "
                    f"last lines of {child.log_path}:\n{child.log_tail()}"
                )
        return None

    async def _stop_child(self, child: Child, hurry: asyncio.Event) -> str | None:
        if child.returncode is None:
            stopped = asyncio.create_task(
                child.wait(self.settings.stop_timeout, self.settings.poll_interval)
            )
            hurried = asyncio.create_task(hurry.wait())
            await asyncio.wait((stopped, hurried), return_when=asyncio.FIRST_COMPLETED)
            hurried.cancel()
            stopped.cancel()
            if child.running:
                child.kill()
                return f"{child.name} (pid {child.pid}) did not stop in time and was killed"
        code = child.returncode
        # Killed by our SIGTERM: a child still starting up, before its own handler existed.
        if code in (0, -signal.SIGTERM) or child.name in self._reported:
            return None
        return f"{child.name} (pid {child.pid}) exited with code {code} while stopping"


async def _create_read_model(db_url: str) -> None:
    """Create the read model's tables once, before the projector and the API start: both
    create them when missing, and two processes doing so at once collide ("table ...
    already exists" on a fresh SQLite file)."""
    backend = open_backend(db_url)
    try:
        await backend.start()
    finally:
        await backend.close()


async def _answers(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


def jetledger_command() -> str:
    """How a user runs the same ``jetledger`` from this directory, for the examples."""
    script = Path(sys.executable).parent / "jetledger"
    if not script.exists():
        return f"{sys.executable} -m gateway.cli"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script.absolute())


__all__ = [
    "ChildDied",
    "Ready",
    "System",
    "UpError",
    "UpOptions",
    "UpSettings",
    "jetledger_command",
    "port_is_free",
]
