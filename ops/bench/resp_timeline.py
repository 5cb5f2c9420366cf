"""Run ``jetledger redis`` with every command's start and end written to a file, by hand.

    python ops/bench/resp_timeline.py LOG redis --port P --nats-url URL

A launcher for ``resp_trace.py --timeline``: it wraps ``Connection.run`` (every command
a client sends, and each command an ``EXEC`` runs) so that each one appends
``start end connection name key`` (``time.perf_counter`` seconds) to ``LOG``; then it runs
the ``jetledger`` command line with the remaining arguments. Nothing else changes.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def main() -> None:
    log = open(sys.argv[1], "a", buffering=1 << 16)  # noqa: SIM115 - open for the process's life
    sys.argv = ["jetledger", *sys.argv[2:]]
    # Imported after argv is set: the command line reads it when it is built.
    from gateway import cli  # noqa: PLC0415
    from gateway.resp import connection  # noqa: PLC0415

    original = connection.Connection.run

    async def run(self: Any, spec: Any, args: list[bytes]) -> Any:
        started = time.perf_counter()
        try:
            return await original(self, spec, args)
        finally:
            key = args[0].decode("utf-8", "replace") if args else "-"
            log.write(f"{started:.6f} {time.perf_counter():.6f} {id(self)} {spec.name} {key}\n")

    connection.Connection.run = run  # type: ignore[method-assign]
    try:
        cli.main()
    finally:
        log.flush()


if __name__ == "__main__":
    main()
