"""Timer schedule subjects and their purge (see :mod:`runners.timers`).

Apart from :mod:`runners.timers` so that the cancel walk, which :mod:`runners.timers`
itself uses, can disarm the timers of the runs it ends.
"""

from __future__ import annotations

import logging

from nats.errors import Error as NatsError

from eventstore.provision import timer_root
from eventstore.store import EventStore
from eventstore.subjects import encode_token

log = logging.getLogger(__name__)


def timer_subject(store: EventStore, session_id: str, run_id: str, name: str) -> str:
    """``<root>_timers.<session>.<run>.<name>``: where the run's timer ``name`` waits."""
    return ".".join(
        (timer_root(store.settings), encode_token(session_id), encode_token(run_id), name)
    )


async def disarm(store: EventStore, session_id: str, run_id: str, name: str = ">") -> None:
    """Remove the run's timer ``name`` (``w<step>`` or ``deadline``; ``>``: all of them)
    before it fires. Best effort: a failure is logged and the timer fires harmlessly."""
    subject = timer_subject(store, session_id, run_id, name)
    try:
        await store.js.purge_stream(store.settings.stream, subject=subject)
    except (NatsError, TimeoutError) as exc:
        log.info("timer %s not disarmed (%s); it will fire without effect", subject, exc)


__all__ = ["disarm", "timer_subject"]
