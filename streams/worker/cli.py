"""`fundwatch worker`: run one detection worker (start several to share the partitions)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from streams.config import Settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", default="worker-1",
        help="worker name: its RocksDB state lives in <data_dir>/worker/<app id>/<name> "
        "(default worker-1)",
    )  # fmt: skip
    parser.add_argument(
        "--registry", type=Path, default=None, metavar="DIR",
        help="reference data (institutions.jsonl, drugs.jsonl); default FUNDWATCH_REGISTRY_DIR "
        "or <data_dir>/registry",
    )  # fmt: skip


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from faust.worker import Worker

    from streams.stack.topics import ensure_topics
    from streams.worker.app import create_app

    if args.registry is not None:
        settings = settings.model_copy(update={"registry_dir": args.registry})
    ensure_topics(settings, settings.topics.all())
    app = create_app(settings, args.name)
    level = logging.getLogger().getEffectiveLevel()
    loglevel = "info" if level <= logging.INFO else "warn"
    # aiokafka formats a debug record for every message it sends unless its own logger says
    # no first: ~5% of a live worker's time in the benchmark's profile (docs/performance.md)
    logging.getLogger("aiokafka").setLevel(max(level, logging.WARNING))
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    metrics = app.fundwatch_metrics.serve()  # /metrics and /health
    try:
        worker.execute_from_commandline()  # handles SIGTERM/SIGINT: finish the batch, commit
    finally:
        if metrics is not None:
            metrics.close()
    return 0
