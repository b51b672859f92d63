"""`fundwatch worker`: run one detection worker (start several to share the partitions)."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from streams.config import Settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", default="worker-1",
        help="worker name: the transactional id <app id>-<name>, and for the faust engine its "
        "RocksDB state in <data_dir>/worker/<app id>/<name> (default worker-1)",
    )  # fmt: skip
    parser.add_argument(
        "--engine", choices=("transactional", "faust"), default=None,
        help="transactional (default): confluent-kafka, a batch's outputs, states and offsets "
        "in one Kafka transaction; faust: the faust-streaming agent with RocksDB tables "
        "(default FUNDWATCH_WORKER_ENGINE)",
    )  # fmt: skip
    parser.add_argument(
        "--state", choices=("packed", "objects"), default=None,
        help="transactional engine: the detector state in memory, packed (default: about 265 "
        "B per tracked person) or as Python objects (about 3.6 KB, faster); default "
        "FUNDWATCH_WORKER_STATE (docs/worker.md)",
    )  # fmt: skip
    parser.add_argument(
        "--registry", type=Path, default=None, metavar="DIR",
        help="reference data (institutions.jsonl, drugs.jsonl); default FUNDWATCH_REGISTRY_DIR "
        "or <data_dir>/registry",
    )  # fmt: skip


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack.topics import ensure_topics

    if args.registry is not None:
        settings = settings.model_copy(update={"registry_dir": args.registry})
    if args.engine is not None:
        settings = settings.model_copy(update={"worker_engine": args.engine})
    if args.state is not None:
        settings = settings.model_copy(update={"worker_state": args.state})
    if settings.worker_engine == "transactional":
        return run_transactional(settings, args.name)
    ensure_topics(settings, settings.topics.all())
    return run_faust(settings, args.name)


def run_transactional(settings: Settings, name: str) -> int:
    from streams.stack.topics import ensure_topics
    from streams.worker.build import tune_gc
    from streams.worker.metrics import WorkerMetrics
    from streams.worker.transactional import TransactionalWorker, WorkerFailed, changelog_spec

    # SIGTERM/SIGINT from here on: during start-up, exit 0 before consuming anything; once
    # running, finish and commit the batch in flight
    holder: dict[str, TransactionalWorker] = {}
    requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        requested.append(signum)
        if "worker" in holder:
            holder["worker"].request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tune_gc()
    ensure_topics(settings, [*settings.topics.all(), changelog_spec(settings)])
    worker = holder["worker"] = TransactionalWorker(settings, name)
    if requested:
        log.info("worker %s stopped during start-up", name)
        worker.consumer.close()
        return 0
    metrics = WorkerMetrics(settings, worker, lambda: worker.processor, name)
    worker.metrics = metrics
    server = metrics.serve()  # /metrics and /health
    try:
        worker.run(install_signals=False)
    except WorkerFailed as exc:
        log.error("worker %s stopped: %s", name, exc)
        return 1
    finally:
        if server is not None:
            server.close()
    return 0


def run_faust(settings: Settings, name: str) -> int:
    from faust.worker import Worker

    from streams.worker.app import create_app
    from streams.worker.build import tune_gc

    tune_gc()
    app = create_app(settings, name)
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
