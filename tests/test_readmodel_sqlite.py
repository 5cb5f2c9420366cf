"""The read-model suite on SQLite (aiosqlite), plus what only SQLite has: the file, WAL."""

from __future__ import annotations

from pathlib import Path

import pytest
from readmodel_suite import ReadModelSuite, new_namespace, started
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
    assert DEFAULT_URL.endswith("/./.jetledger/readmodel.db")
    async with started(SqlReadModel(namespace=new_namespace())) as model:
        assert model.name == "sqlite"
        assert (tmp_path / ".jetledger" / "readmodel.db").is_file()


async def test_nested_directories_are_created(tmp_path: Path) -> None:
    async with started(SqlReadModel(f"sqlite+aiosqlite:///{tmp_path}/a/b/rm.db")):
        assert (tmp_path / "a" / "b" / "rm.db").is_file()


async def test_wal_and_busy_timeout_are_on(tmp_path: Path) -> None:
    async with (
        started(SqlReadModel(f"sqlite+aiosqlite:///{tmp_path}/rm.db")) as model,
        model.engine.connect() as conn,
    ):
        assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
        assert await conn.scalar(text("PRAGMA busy_timeout")) == 30_000


async def test_drop_namespace_leaves_other_namespaces(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/rm.db"
    async with (
        started(SqlReadModel(url, namespace="doomed")) as doomed,
        started(SqlReadModel(url, namespace="kept")) as kept,
    ):
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


@pytest.mark.parametrize("namespace", ["", "1abc", "UPPER", "a-b", "x" * 25, 'a"; drop'])
def test_bad_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        SqlReadModel(namespace=namespace)


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="sqlite and postgresql"):
        SqlReadModel("mysql+aiomysql://localhost/x")
