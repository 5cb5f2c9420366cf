"""Choosing a read-model backend from a URL.

* ``sqlite+aiosqlite:///path.db`` (default ``./.jetledger/readmodel.db``) or a plain
  ``*.db`` / ``*.sqlite`` path -> SQLite
* ``postgresql+asyncpg://user:pass@host/db`` (``postgresql://`` is accepted) -> PostgreSQL
* ``duckdb:///path.duckdb`` or a plain ``*.duckdb`` path -> DuckDB
"""

from __future__ import annotations

from pathlib import Path

from projections.contract import SCHEMA_VERSION, ReadModelBackend

DEFAULT_DB_URL = "sqlite+aiosqlite:///./.jetledger/readmodel.db"


class UnknownBackendError(ValueError):
    """The URL names no backend jetledger has."""


def normalize_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    if "://" not in url:
        suffix = Path(url).suffix
        if suffix == ".duckdb":
            return f"duckdb:///{url}"
        if suffix in (".db", ".sqlite", ".sqlite3"):
            return f"sqlite+aiosqlite:///{url}"
    return url


def open_backend(
    url: str = DEFAULT_DB_URL, *, namespace: str = "jl", schema_version: int = SCHEMA_VERSION
) -> ReadModelBackend:
    """A backend for ``url`` (not started yet: call ``await backend.start()``)."""
    url = normalize_url(url)
    if url.startswith("duckdb:///"):
        from projections.duckdb_backend import DuckDbReadModel  # noqa: PLC0415 (heavy, optional)

        return DuckDbReadModel(
            url.removeprefix("duckdb:///"), namespace=namespace, schema_version=schema_version
        )
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        from projections.sql_backend import SqlReadModel  # noqa: PLC0415 (only when asked)

        return SqlReadModel(url, namespace=namespace, schema_version=schema_version)
    raise UnknownBackendError(
        f"unknown read-model database URL {url!r}: use sqlite+aiosqlite:///file.db, "
        "postgresql+asyncpg://user:password@host/db or duckdb:///file.duckdb"
    )


__all__ = ["DEFAULT_DB_URL", "UnknownBackendError", "normalize_url", "open_backend"]
