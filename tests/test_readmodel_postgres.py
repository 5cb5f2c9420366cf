"""The read-model suite on PostgreSQL (asyncpg), against a real server.

``$JETLEDGER_TEST_PG_URL`` picks the server (default: the ``jetledger`` role and
``jetledger_test`` database that ``ops/ci/services.sh`` creates on 127.0.0.1:5432).
An unreachable server FAILS these tests, it does not skip them: set
``JETLEDGER_SKIP_POSTGRES=1`` to leave PostgreSQL out on purpose. Every test uses its
own namespace and drops its tables at teardown.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from readmodel_suite import ReadModelSuite
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from projections.contract import ReadModelBackend
from projections.sql_backend import SqlReadModel

PG_URL = os.environ.get(
    "JETLEDGER_TEST_PG_URL",
    "postgresql+asyncpg://jetledger:jetledger@127.0.0.1:5432/jetledger_test",
)
SKIP = os.environ.get("JETLEDGER_SKIP_POSTGRES") == "1"
CONNECT_TIMEOUT_S = 10.0

pytestmark = pytest.mark.skipif(SKIP, reason="JETLEDGER_SKIP_POSTGRES=1")


async def _reachable(url: str) -> str | None:
    """None when a query goes through, else why not."""
    probe = SqlReadModel(url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            async with probe.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as error:  # refused, timed out, auth, unknown database: all reasons
        return f"{type(error).__name__}: {error}"
    finally:
        await probe.close()
    return None


@pytest.fixture(autouse=True)
async def _require_postgres() -> AsyncIterator[None]:
    problem = await _reachable(PG_URL)
    if problem is not None:
        pytest.fail(
            f"PostgreSQL at {PG_URL} is not reachable ({problem}). Start it, point "
            "JETLEDGER_TEST_PG_URL at a server, or set JETLEDGER_SKIP_POSTGRES=1 to skip.",
            pytrace=False,
        )
    yield


class TestPostgresReadModel(ReadModelSuite):
    integrity_error = IntegrityError

    async def make_backend(self, namespace: str, schema_version: int) -> ReadModelBackend:
        return SqlReadModel(PG_URL, namespace=namespace, schema_version=schema_version)

    async def discard_backend(self, backend: ReadModelBackend) -> None:
        assert isinstance(backend, SqlReadModel)
        try:
            await backend.drop_namespace()
        finally:
            await backend.close()


async def test_text_keys_use_the_c_collation() -> None:
    """Orderings must match SQLite's byte order whatever the server's locale is."""
    model = SqlReadModel(PG_URL, namespace="tcollate")
    try:
        await model.start()
        async with model.engine.connect() as conn:
            collation = await conn.scalar(
                text(
                    "SELECT collation_name FROM information_schema.columns "
                    "WHERE table_name = 'tcollate_v1_runs' AND column_name = 'run_id'"
                )
            )
        assert collation == "C"
    finally:
        await model.drop_namespace()
        await model.close()
