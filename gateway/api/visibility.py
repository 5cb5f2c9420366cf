"""What a (possibly restricted) token may see: sessions it lists, sessions owned by the
user codes it lists, and everything inside those sessions."""

from __future__ import annotations

from gateway.api.auth import Principal
from gateway.api.errors import ApiError, NotFound
from projections.contract import ReadModelBackend
from projections.rows import EventRow, RunRow, SessionRow


class Visibility:
    """Per-request checks; session owners are looked up once per request."""

    def __init__(self, principal: Principal, backend: ReadModelBackend) -> None:
        self.principal = principal
        self.backend = backend
        self._owners: dict[str, str | None] = {}

    @property
    def everything(self) -> bool:
        return not self.principal.restricted

    async def session_id(self, session_id: str | None) -> bool:
        principal = self.principal
        if not principal.restricted:
            return True
        if session_id is None:
            return False  # system events belong to no session: unrestricted tokens only
        if principal.sessions is not None and session_id in principal.sessions:
            return True
        if principal.user_codes is None:
            return False
        if session_id not in self._owners:
            row = await self.backend.get_session(session_id)
            self._owners[session_id] = row.user_code if row is not None else None
        return self._owners[session_id] in principal.user_codes

    async def session(self, row: SessionRow) -> bool:
        self._owners.setdefault(row.session_id, row.user_code)
        return await self.session_id(row.session_id)

    async def run(self, row: RunRow) -> bool:
        return await self.session_id(row.session_id)

    async def event(self, row: EventRow) -> bool:
        return await self.session_id(row.session_id)

    async def require_session(self, session_id: str) -> None:
        """404 (not 403: a restricted token must not learn which sessions exist)."""
        if not await self.session_id(session_id):
            raise NotFound("session", session_id)

    async def require_command_session(self, session_id: str, user_code: str | None) -> None:
        """A command to a session this token may not act on is refused with 403; a new
        session is allowed to a token restricted by user code when it acts as one of them."""
        principal = self.principal
        if not principal.restricted or await self.session_id(session_id):
            return
        if (
            principal.user_codes is not None
            and await self.backend.get_session(session_id) is None
            and user_code in principal.user_codes
        ):
            return
        raise ApiError(
            403,
            "forbidden_session",
            f"this token may not act on session {session_id!r}",
            {"session_id": session_id},
        )


__all__ = ["Visibility"]
