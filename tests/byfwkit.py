"""The real by-framework package, run from its own Python 3.12 virtualenv.

by-framework 0.2.1 needs Python >= 3.12 and redis-py 7.4.0 (8.x breaks its worker
start-up), so it cannot live in our venv. :func:`byframework_python` builds a venv once
per machine under ``~/.cache/jetledger-tests/byframework-venv-<hash of the pins>`` and
returns its interpreter; :class:`ByframeworkApps` starts workers from
``tests/byframework_apps`` exactly as by-framework's README does and runs its scenario
client. Nothing of by-framework is vendored or modified.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PINS = ("by-framework==0.2.1", "redis==7.4.0")
APPS_DIR = Path(__file__).with_name("byframework_apps")
CACHE_DIR = Path.home() / ".cache" / "jetledger-tests"
VENV_BUILD_SECONDS = 600.0
WORKER_READY_SECONDS = 30.0
WORKER_STOP_SECONDS = 5.0


class ByframeworkUnavailable(Exception):
    """No Python >= 3.12 on this machine, or the pinned packages could not be installed."""


def find_python312() -> str | None:
    """A working Python 3.12: a pyenv build first, else ``python3.12`` on PATH.

    A pyenv shim on PATH may exist without 3.12 being selected, so each candidate is run.
    """
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.12*/bin/python")))
    on_path = shutil.which("python3.12")
    for candidate in [*reversed(candidates), *([on_path] if on_path else [])]:
        probe = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info >= (3, 12)"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    return None


def byframework_python() -> Path:
    """The interpreter of the cached by-framework venv, built on first use."""
    digest = hashlib.sha256("\n".join(PINS).encode()).hexdigest()[:12]
    venv = CACHE_DIR / f"byframework-venv-{digest}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    base = find_python312()
    if base is None:
        raise ByframeworkUnavailable(
            "by-framework needs Python >= 3.12: no python3.12 on PATH or under ~/.pyenv"
        )
    shutil.rmtree(venv, ignore_errors=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    steps = [[base, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", *PINS]]
    for step in steps:
        done = subprocess.run(
            step, capture_output=True, text=True, timeout=VENV_BUILD_SECONDS, check=False
        )
        if done.returncode != 0:
            raise ByframeworkUnavailable(f"{' '.join(step)} failed: {done.stderr[-2000:]}")
    (venv / ".complete").write_text("\n".join(PINS))
    return python


@dataclass
class ByframeworkApps:
    """Workers and scenario runs against one Redis endpoint (real or the adapter)."""

    python: Path
    port: int
    db: int
    log_dir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, worker_class: str, worker_id: str) -> subprocess.Popen[bytes]:
        """``python -m by_framework --worker-class ... --worker-id ...``, the README's way."""
        log = (self.log_dir / f"{worker_id}.log").open("wb")
        command = [
            str(self.python), "-m", "by_framework",
            "--worker-class", f"echo_worker.{worker_class}",
            "--worker-id", worker_id,
            "--redis-host", "127.0.0.1",
            "--redis-port", str(self.port),
            "--redis-db", str(self.db),
            "--workspace", str(self.log_dir / f"workspace-{worker_id}"),
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": str(APPS_DIR),
            "BY_FRAMEWORK_OBSERVABILITY_ENABLED": "false",
        }
        worker = subprocess.Popen(command, cwd=APPS_DIR, env=env, stdout=log, stderr=log)
        self.workers.append(worker)
        return worker

    def wait_online(self, redis_client: Any, worker_ids: list[str]) -> None:
        """Until every worker holds the online lease ``send_message`` checks."""
        deadline = time.monotonic() + WORKER_READY_SECONDS
        keys = [f"byai_gateway:registry:worker:online:{worker_id}" for worker_id in worker_ids]
        while time.monotonic() < deadline:
            if any(worker.poll() is not None for worker in self.workers):
                raise AssertionError(f"a worker exited at start-up:\n{self.logs()}")
            if all(redis_client.exists(key) for key in keys):
                return
            time.sleep(0.1)
        raise AssertionError(f"workers {worker_ids} not online in time:\n{self.logs()}")

    def scenario(self, name: str, session_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """Run one scenario of ``byframework_apps/scenarios.py``; its JSON answer."""
        command = [
            str(self.python), str(APPS_DIR / "scenarios.py"), name,
            "--port", str(self.port), "--db", str(self.db),
            "--session", session_id, "--timeout", str(timeout),
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout + 30, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"scenario {name} failed:\n{done.stderr}\n{self.logs()}")
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period: never leave a worker behind."""
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(WORKER_STOP_SECONDS)
        self.workers.clear()


if __name__ == "__main__":  # build the venv by hand: python tests/byfwkit.py
    sys.stdout.write(f"{byframework_python()}\n")
