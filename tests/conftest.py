"""Fixtures for the whole suite: a real nats-server per test, never a mock of the broker.

Each test gets its own embedded server on a free port with its store under ``tmp_path``
(the server log is kept there too, for post-mortems). Set ``JETLEDGER_NATS_URL`` to run
against an external server instead; tests that kill or restart the server use
``killable_nats_server``, which always starts an embedded one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from respkit import adapter, adapter_server, resp_endpoint, resp_target  # noqa: F401 - RESP fixtures

from eventstore.embedded import EmbeddedNatsServer

EXTERNAL_URL_ENV_VAR = "JETLEDGER_NATS_URL"


class NatsServerHandle(Protocol):
    """What every test may rely on: where to connect."""

    @property
    def url(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ExternalNatsServer:
    """A server the suite did not start and must not stop: only its url is known."""

    url: str


@asynccontextmanager
async def embedded_nats_server(store_dir: Path) -> AsyncIterator[EmbeddedNatsServer]:
    """A started embedded server that is stopped on exit, whatever the test did to it."""
    server = EmbeddedNatsServer(store_dir=store_dir)
    await server.start()
    try:
        yield server
    finally:
        # stop() also copes with a server the test killed and never restarted.
        await server.stop()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServerHandle]:
    """The server a test talks to: embedded, or ``$JETLEDGER_NATS_URL`` when that is set."""
    external_url = os.environ.get(EXTERNAL_URL_ENV_VAR)
    if external_url:
        yield ExternalNatsServer(external_url)
        return
    async with embedded_nats_server(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def killable_nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    """Always an embedded server, for tests that ``kill()``, ``stop()`` or ``restart()`` it."""
    async with embedded_nats_server(tmp_path / "nats-killable") as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServerHandle) -> str:
    """The url of :func:`nats_server`."""
    return nats_server.url
