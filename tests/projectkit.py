"""Shared helpers for tests that project a test's own stream: read models opened by URL,
and the ``jetledger`` CLI run as a real subprocess pointed at that stream."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO

from readmodel_suite import started

from eventstore.settings import StoreSettings
from projections.backends import open_backend
from projections.contract import SCHEMA_VERSION, ReadModelBackend

REPO = Path(__file__).resolve().parents[1]
CLI_TIMEOUT = 60


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def read_model(
    url: str, *, schema_version: int = SCHEMA_VERSION
) -> AbstractAsyncContextManager[ReadModelBackend]:
    """A started backend for ``url``, closed on exit whatever the test did."""
    return started(open_backend(url, schema_version=schema_version))


def store_env(settings: StoreSettings) -> dict[str, str]:
    """The environment that points a CLI subprocess at the test's own stream."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JETLEDGER_")}
    env.update(
        {
            "JETLEDGER_STREAM": settings.stream,
            "JETLEDGER_ROOT": settings.root,
            "JETLEDGER_KV_BUCKETS": settings.kv_buckets[0],
            "JETLEDGER_OBJECT_BUCKET": settings.object_bucket,
            "PYTHONPATH": str(REPO),
        }
    )
    return env


async def cli(settings: StoreSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``jetledger *args`` to completion (bounded) without blocking the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", *args],
        env=store_env(settings),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def spawn_project(
    settings: StoreSettings,
    nats_url: str,
    db_url: str,
    *,
    capture_output: bool = True,
    log_file: IO[str] | None = None,
) -> subprocess.Popen[str]:
    """``jetledger project`` in the background (the caller stops it). Without
    ``capture_output`` its output goes to ``log_file`` (a file nobody has to drain, for
    a process killed mid-way) or is discarded."""
    output: int | IO[str] = subprocess.PIPE if capture_output else (log_file or subprocess.DEVNULL)
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "project", "--nats-url", nats_url, "--db", db_url],
        env=store_env(settings),
        stdout=output,
        stderr=output,
        text=True,
    )
