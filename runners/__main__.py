"""``python -m runners --worker-class module:Class --worker-id W [--nats-url URL]
[--plugin-dir DIR]``."""

from __future__ import annotations

import argparse
import logging
import sys

from runners.app import load_worker_class, run_worker
from runners.plugin_loading import PluginLoadError
from runners.registry import DuplicateWorkerError, LeaseLostError


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runners", description=__doc__)
    parser.add_argument("--worker-class", required=True, help="package.module:ClassName")
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--nats-url", default="")
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument(
        "--plugin-dir",
        default=None,
        help="import the PLUGINS of every *.py file here (or JETLEDGER_WORKER_PLUGIN_DIR)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_worker(
            load_worker_class(args.worker_class),
            worker_id=args.worker_id,
            nats_url=args.nats_url,
            max_concurrency=args.max_concurrency,
            plugin_dir=args.plugin_dir,
        )
    except (DuplicateWorkerError, LeaseLostError, PluginLoadError) as exc:
        sys.exit(f"python -m runners: {exc}")


if __name__ == "__main__":
    main()
