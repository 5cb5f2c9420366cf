"""``python -m runners --worker-class module:Class --worker-id W [--nats-url URL]``."""

from __future__ import annotations

import argparse
import logging
import sys

from runners.app import load_worker_class, run_worker
from runners.registry import DuplicateWorkerError, LeaseLostError


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runners", description=__doc__)
    parser.add_argument("--worker-class", required=True, help="package.module:ClassName")
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--nats-url", default="")
    parser.add_argument("--max-concurrency", type=int, default=None)
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
        )
    except (DuplicateWorkerError, LeaseLostError) as exc:
        sys.exit(f"python -m runners: {exc}")


if __name__ == "__main__":
    main()
