"""What every command route shares: the answer body and ``?wait=`` (read-your-writes:
return once the read model's checkpoint has reached the command's sequence)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel

from gateway.api.context import ApiContext

WaitSeconds = Annotated[
    float | None,
    Query(
        ge=0,
        le=3600,
        description="Return only once the read model reflects the command, waiting at most "
        "this many seconds (capped by the wait_max_seconds setting).",
    ),
]


class CommandAccepted(BaseModel):
    """A command stored in the log. ``reflected`` says whether the read model already
    includes it (``checkpoint >= seq``)."""

    run_id: str | None
    session_id: str
    event_id: str | None
    seq: int
    reflected: bool
    checkpoint: int


async def reflected(context: ApiContext, seq: int, wait: float | None) -> tuple[bool, int]:
    """``(checkpoint >= seq, checkpoint)``, polling up to ``wait`` seconds (capped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait or 0.0, context.settings.wait_max_seconds)
    while True:
        checkpoint = await context.backend.checkpoint()
        if checkpoint >= seq:
            return True, checkpoint
        if loop.time() >= deadline:
            return False, checkpoint
        await asyncio.sleep(context.settings.wait_poll_seconds)


async def accepted(
    context: ApiContext,
    *,
    run_id: str | None,
    session_id: str,
    event_id: str,
    seq: int,
    wait: float | None,
) -> CommandAccepted:
    done, checkpoint = await reflected(context, seq, wait)
    return CommandAccepted(
        run_id=run_id,
        session_id=session_id,
        event_id=event_id,
        seq=seq,
        reflected=done,
        checkpoint=checkpoint,
    )


__all__ = ["CommandAccepted", "WaitSeconds", "accepted", "reflected"]
