"""The read-model suite on SQLite (aiosqlite), plus what only SQLite has: the file, WAL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from readmodel_suite import ReadModelSuite, changes_of, new_namespace, run_row
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from projections.contract import ReadModelBackend
from projections.sql_backend import DEFAULT_URL, SqlReadModel


class TestSqliteReadModel(ReadModelSuite):
    integrity_error = IntegrityError

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.url = f"sqlite+aiosqlite:///{tmp_path}/readmodel.db"

    async def make_backend(self, namespace: str, schema_version: int) -> ReadModelBackend:
        return SqlReadModel(self.url, namespace=namespace, schema_version=schema_version)


async def test_default_url_creates_the_jetledger_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = SqlReadModel(namespace=new_namespace())
    assert DEFAULT_URL.endswith("/./.jetledger/readmodel.db")
    try:
        await model.start()
        assert model.name == "sqlite"
        assert (tmp_path / ".jetledger" / "readmodel.db").is_file()
    finally:
        await model.close()


async def test_nested_directories_are_created(tmp_path: Path) -> None:
    model = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path}/a/b/rm.db")
    try:
        await model.start()
        assert (tmp_path / "a" / "b" / "rm.db").is_file()
    finally:
        await model.close()


async def test_wal_and_busy_timeout_are_on(tmp_path: Path) -> None:
    model = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path}/rm.db")
    try:
        await model.start()
        async with model.engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA busy_timeout")) == 30_000
    finally:
        await model.close()


async def test_drop_version_refuses_own_and_active_versions(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/rm.db"
    old, new = SqlReadModel(url, schema_version=1), SqlReadModel(url, schema_version=2)
    try:
        await old.start()
        await new.start()
        await old.activate()
        with pytest.raises(ValueError, match="own"):
            await new.drop_version(2)
        with pytest.raises(ValueError, match="active"):
            await new.drop_version(1)
        await new.activate()
        await new.drop_version(1)
    finally:
        await old.close()
        await new.close()


async def test_drop_namespace_leaves_other_namespaces(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/rm.db"
    doomed, kept = SqlReadModel(url, namespace="doomed"), SqlReadModel(url, namespace="kept")
    try:
        await doomed.start()
        await kept.start()
        await doomed.activate()
        await doomed.drop_namespace()
        async with kept.engine.connect() as conn:
            names = {
                row[0]
                for row in await conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'table'")
                )
            }
        assert not any(name.startswith("doomed_") for name in names)
        assert "kept_meta" in names
        assert "kept_v1_runs" in names
    finally:
        await doomed.close()
        await kept.close()


async def test_naive_datetimes_are_refused(tmp_path: Path) -> None:
    model = SqlReadModel(f"sqlite+aiosqlite:///{tmp_path}/rm.db")
    try:
        await model.start()
        naive = run_row("r1", 1, created_at=datetime(2025, 1, 1))
        with pytest.raises(ValueError, match="naive"):
            await model.commit(changes_of(1, runs=[naive]))
        assert await model.checkpoint() == 0
    finally:
        await model.close()


@pytest.mark.parametrize("namespace", ["", "1abc", "UPPER", "a-b", "x" * 25, 'a"; drop'])
def test_bad_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        SqlReadModel(namespace=namespace)


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="sqlite and postgresql"):
        SqlReadModel("mysql+aiomysql://localhost/x")
