"""Fault injection for the crash tests of G1/G5: ``kill -9`` at a named step boundary.

Off unless ``JETLEDGER_FAULT_KILL_AT`` names a point; then the first process to reach it
creates the ``JETLEDGER_FAULT_MARKER`` file and kills itself with SIGKILL, so exactly one
crash happens per test however many workers share the environment. Production never sets
these variables; the check is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Literal

FaultPoint = Literal[
    "before_dispatch", "after_dispatch", "after_waiting", "after_resumed", "before_terminal"
]


def fault_point(name: FaultPoint) -> None:
    if os.environ.get("JETLEDGER_FAULT_KILL_AT") != name:
        return
    marker = os.environ.get("JETLEDGER_FAULT_MARKER")
    if not marker:
        return
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return  # someone crashed here already
    os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["FaultPoint", "fault_point"]
