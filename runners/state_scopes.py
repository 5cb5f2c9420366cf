"""Where a handler's state lives: its scopes and their keys in the ``jl_state`` bucket.

``ctx.set_state(scope, key, value)`` records ``state.updated`` and keeps the value in
KV under a key made of the scope, the id the run has in that scope (its session, its
user, its agent type, or none for ``global``) and the handler's key, each encoded as a
subject token. Separate from :mod:`runners.context` because the naming of state keys is
a rule of its own that readers of the bucket must share, not part of emitting output.
"""

from __future__ import annotations

from typing import Literal

from eventstore.subjects import encode_token
from runners.worker import Command

STATE_BUCKET = "jl_state"
Scope = Literal["session", "user", "agent_type", "global"]


def scope_id(command: Command, scope: Scope) -> str:
    """The id the run of ``command`` has in ``scope`` (empty for ``global``)."""
    ids = {
        "session": command.session_id,
        "user": command.user_code or "",
        "agent_type": command.agent_type,
        "global": "",
    }
    if scope not in ids:
        raise ValueError(f"unknown state scope {scope!r}: use session, user, agent_type or global")
    return ids[scope]


def state_key(command: Command, scope: Scope, key: str) -> str:
    """The KV key of ``key`` in ``scope`` for the run of ``command``."""
    return ".".join(encode_token(part) for part in (scope, scope_id(command, scope), key))


__all__ = ["STATE_BUCKET", "Scope", "scope_id", "state_key"]
