"""``jetledger server``: the embedded nats-server in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType

from eventstore.embedded import EmbeddedNatsServer
from eventstore.errors import EventStoreError

DEFAULT_STORE = Path(".jetledger") / "nats"
"""Where the log lives when no store is given, relative to the working directory."""

_WATCH_INTERVAL = 0.2  # how fast a stop signal or a dead server is noticed
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_server(host: str, port: int, store: Path | None) -> int:
    """Serve NATS with JetStream until SIGINT or SIGTERM; return the exit code.

    The first stdout line is exactly the url clients connect to, and nothing else goes to
    stdout, so scripts can read it::

        url=$(jetledger server --port 0 | head -n 1)

    Must run in the main thread (it installs signal handlers). Returns 1 when the server
    cannot start or dies while serving.
    """
    store_dir = (store or DEFAULT_STORE).resolve()
    stop_signals: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        # Only record it: the handler can interrupt anything, so the loop below stops.
        stop_signals.append(signum)

    # Installed before the start, so a Ctrl-C during it still ends in a clean stop.
    previous = {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS}
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
        server = EmbeddedNatsServer(host=host, port=port, store_dir=store_dir)
        return _serve(server, stop_signals)
    except (EventStoreError, ValueError, OSError) as exc:
        print(f"jetledger server: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(server: EmbeddedNatsServer, stop_signals: list[int]) -> int:
    url = server.start_blocking()
    try:
        print(url, flush=True)
        version = ".".join(map(str, server.version))
        print(
            f"nats-server v{version} with JetStream, store {server.store_dir} "
            f"(log {server.log_file}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop_signals:
            if not server.running:
                print(
                    f"jetledger server: nats-server exited unexpectedly; see {server.log_file}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            time.sleep(_WATCH_INTERVAL)
        return 0
    finally:
        server.stop_blocking()


__all__ = ["DEFAULT_STORE", "run_server"]
