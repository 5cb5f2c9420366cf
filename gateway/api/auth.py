"""Bearer tokens: who may call the API and what they may see.

Tokens come from a JSON or TOML file (``--tokens`` / ``JETLEDGER_API_TOKENS_FILE``) and/or
the JSON in ``JETLEDGER_API_TOKENS``. Either holds a list of tokens, or an object with a
``tokens`` list (TOML: ``[[tokens]]`` tables)::

    {"tokens": [
      {"token": "s3cr3t-web", "name": "web", "scopes": ["read", "write"],
       "user_codes": ["alice"], "sessions": null, "expires_at": "2027-01-01T00:00:00Z"}
    ]}

* ``scopes``: ``read`` (GET routes), ``write`` (commands), ``admin`` (``/v1/workers``,
  ``/metrics``, state outside the ``session`` / ``user`` scopes; admin implies the others).
* ``user_codes`` / ``sessions``: optional restriction. A restricted token sees only the
  sessions it lists and the sessions whose ``user_code`` it lists (and their runs, events,
  transcripts, groups, streams); list routes leave the rest out, single-object routes
  answer 404, commands elsewhere 403.
* ``expires_at``: optional RFC 3339 time after which the token is refused (401).

No token configured means local mode: no auth, loopback only.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Scope = Literal["read", "write", "admin"]


class TokenConfigError(ValueError):
    """The token file or ``JETLEDGER_API_TOKENS`` cannot be used."""


class TokenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=16, description="The bearer secret (at least 16 characters).")
    name: str = ""
    scopes: list[Scope] = Field(min_length=1)
    user_codes: list[str] | None = None
    sessions: list[str] | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request."""

    name: str
    scopes: frozenset[str]
    user_codes: frozenset[str] | None = None
    sessions: frozenset[str] | None = None

    @property
    def restricted(self) -> bool:
        return self.user_codes is not None or self.sessions is not None

    def has(self, scope: Scope) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def sees_session(self, session_id: str | None, user_code: str | None) -> bool:
        """Whether this caller may see a session with that id and owner."""
        if not self.restricted:
            return True
        if self.sessions is not None and session_id in self.sessions:
            return True
        return self.user_codes is not None and user_code in self.user_codes


LOCAL = Principal(name="local", scopes=frozenset({"read", "write", "admin"}))
"""The caller in local mode (no tokens configured)."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    principal: Principal
    expires_at: datetime | None


class TokenTable:
    """Tokens by SHA-256 digest, so the secrets are not kept in memory as given."""

    def __init__(self, specs: Iterable[TokenSpec]) -> None:
        self._entries: dict[str, TokenEntry] = {}
        for index, spec in enumerate(specs):
            digest = _digest(spec.token)
            if digest in self._entries:
                raise TokenConfigError(f"token #{index + 1} ({spec.name!r}) is listed twice")
            expires = spec.expires_at
            if expires is not None and expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            self._entries[digest] = TokenEntry(
                Principal(
                    name=spec.name or f"token-{index + 1}",
                    scopes=frozenset(spec.scopes),
                    user_codes=None if spec.user_codes is None else frozenset(spec.user_codes),
                    sessions=None if spec.sessions is None else frozenset(spec.sessions),
                ),
                expires,
            )

    @property
    def local_mode(self) -> bool:
        return not self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> TokenEntry | None:
        return self._entries.get(_digest(token))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_tokens(document: Any, origin: str) -> list[TokenSpec]:
    items = document.get("tokens") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise TokenConfigError(f"{origin}: expected a list of tokens or {{'tokens': [...]}}")
    try:
        return [TokenSpec.model_validate(item) for item in items]
    except ValidationError as exc:
        raise TokenConfigError(f"{origin}: {exc}") from exc


def load_tokens(tokens_file: str, tokens_json: str) -> TokenTable:
    """The tokens of ``tokens_file`` (JSON, or TOML by ``.toml`` suffix) plus ``tokens_json``."""
    specs: list[TokenSpec] = []
    if tokens_file:
        path = Path(tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
            document = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as exc:
            raise TokenConfigError(f"cannot read tokens file {path}: {exc}") from exc
        specs += parse_tokens(document, str(path))
    if tokens_json.strip():
        try:
            document = json.loads(tokens_json)
        except ValueError as exc:
            raise TokenConfigError(f"JETLEDGER_API_TOKENS is not JSON: {exc}") from exc
        specs += parse_tokens(document, "JETLEDGER_API_TOKENS")
    return TokenTable(specs)


__all__ = [
    "LOCAL",
    "Principal",
    "Scope",
    "TokenConfigError",
    "TokenEntry",
    "TokenSpec",
    "TokenTable",
    "load_tokens",
    "parse_tokens",
]
