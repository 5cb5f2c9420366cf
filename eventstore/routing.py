"""Which subject an event is stored on (DESIGN §3).

* commands go to ``ctrl.worker.<id>`` when their payload names a ``target_worker_id``,
  else to ``ctrl.agent_type.<agent_type>`` (competing workers of that type);
* the four terminal types go to the run's ``.end`` subject (G2);
* every other run-scoped event goes to the run's ``.out`` subject;
* system events go to ``sys.<kind>``.
"""

from __future__ import annotations

import functools

from eventstore import subjects
from eventstore.envelope import Event, SystemEvent
from eventstore.errors import SubjectError

TERMINAL_TYPES = frozenset({"run.completed", "run.failed", "run.cancelled", "run.dead_lettered"})

SYS_KINDS = {
    "worker.started": "worker",
    "worker.stopped": "worker",
    "plugins.reloaded": "plugins",
    "ingest.rejected": "rejected",
}


def subject_for(event: Event, root: str = subjects.DEFAULT_ROOT) -> str:
    """The subject ``event`` is appended to; raises SubjectError if it cannot be routed."""
    if event.type.startswith("command."):
        return _command_subject(event, root)
    if isinstance(event, SystemEvent) or event.type in SYS_KINDS:
        return subjects.sys_subject(SYS_KINDS.get(event.type, event.type.split(".")[0]), root)
    if event.session_id is None or event.run_id is None:
        raise SubjectError(f"{event.type} needs session_id and run_id to be routed")
    return _run_subject(root, event.session_id, event.run_id, event.type in TERMINAL_TYPES)


@functools.lru_cache(maxsize=16_384)
def _run_subject(root: str, session_id: str, run_id: str, terminal: bool) -> str:
    # Runs emit many events in a row; building and escaping their subject once is enough.
    if terminal:
        return subjects.run_end_subject(session_id, run_id, root)
    return subjects.run_out_subject(session_id, run_id, root)


def _command_subject(event: Event, root: str) -> str:
    target_worker = getattr(event.data, "target_worker_id", None)
    if isinstance(target_worker, str) and target_worker:
        return subjects.worker_subject(target_worker, root)
    if event.agent_type:
        return subjects.agent_type_subject(event.agent_type, root)
    raise SubjectError(
        f"{event.type} needs agent_type (or data.target_worker_id) to be routed to a worker"
    )


__all__ = ["SYS_KINDS", "TERMINAL_TYPES", "subject_for"]
