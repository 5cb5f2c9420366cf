"""Waking a waiting parent (G5): the ``command.resume`` a child's end publishes.

The resume's id is derived from the parent and the child, so however often it is sent
(a redelivered child command, a crash between the child's terminal event and this
publish) the log keeps one within the duplicate window, and the parent's journal
(``run.resumed`` recorded with an expected sequence) absorbs any later copy.
"""

from __future__ import annotations

import logging

from nats.js.errors import NotFoundError

from eventstore.catalog import CommandAsk, CommandResume, CommandResumeData, CommandSteer, ReplyTo
from eventstore.codec import decode
from eventstore.envelope import Event
from eventstore.store import EventStore
from runners.journal import Journal
from runners.steering import ask_from_steer

log = logging.getLogger(__name__)


async def notify_parent(
    store: EventStore, reply_to: ReplyTo, child_run_id: str, terminal: Event
) -> None:
    """Tell the parent named by ``reply_to`` that ``child_run_id`` ended with ``terminal``."""
    status = terminal.type.removeprefix("run.")
    result = getattr(terminal.data, "result", None)
    await store.append(
        CommandResume(
            id=f"resume-{reply_to.run_id}-{child_run_id}",
            session_id=reply_to.session_id,
            run_id=reply_to.run_id,
            agent_type=reply_to.agent_type,
            causation_id=terminal.id,
            data=CommandResumeData(
                reason="child_completed",
                child_run_id=child_run_id,
                status=status,
                result=result,
            ),
        )
    )
    log.debug("woke parent %s: child %s %s", reply_to.run_id, child_run_id, status)


async def command_at(store: EventStore, seq: int) -> CommandAsk | None:
    """The ``command.ask`` stored at ``seq`` (the command a run was started by); a
    ``command.steer`` that started a run is read back as its equivalent ask."""
    try:
        raw = await store.js.get_msg(store.settings.stream, seq=seq, direct=True)
    except NotFoundError:
        return None
    item = decode(raw.data or b"", seq=seq, subject=raw.subject or "", stored_at=raw.time)
    if isinstance(item, CommandSteer):
        return ask_from_steer(item)
    return item if isinstance(item, CommandAsk) else None


async def started_by(store: EventStore, journal: Journal) -> CommandAsk | None:
    """The ``command.ask`` that started the journal's run; ``None`` if it never started."""
    first = journal.first_start
    if first is None:
        return None
    return await command_at(store, first.data.command_seq or 0)


__all__ = ["command_at", "notify_parent", "started_by"]
