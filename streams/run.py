"""`fundwatch run`: the whole slice on one machine, with live progress.

It brings the local broker up (or checks a remote one), opens the store and serves queries on it,
starts `fundwatch simulate` as a child process producing to Kafka, and runs the sink in this
process until every produced record is stored (bounded) or Ctrl-C (unbounded). What was produced
is measured from the topics' end offsets, not taken on trust from the producer.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.config import Settings
from streams.progress import Dashboard
from streams.worker.process import WorkerProcess

log = logging.getLogger(__name__)

INPUT_ROLES = ("settlement", "trace_scan", "face_verify", "sim_labels")
OUTPUT_ROLES = ("alerts", "aggregates", "dead_letters")
SIM_STOP_GRACE_S = 60.0
"""How long a stopped run waits for the simulator to deliver what it had queued (an unbounded
simulator produces as fast as it can: on a busy machine flushing took more than 15 s)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--days",
        type=int,
        default=None,
        metavar="N",
        help="simulate N days of the preset's world, exit 0 once all is stored",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        metavar="N",
        help="simulate N events, exit 0 once all are stored (default: unbounded, until Ctrl-C)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="EPS",
        help="offered load in events/s (default: as fast as possible)",
    )
    parser.add_argument("--preset", default="small", help="simulated world size (default: small)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (default: 7)")
    parser.add_argument(
        "--no-sim",
        action="store_true",
        help="do not simulate: only ingest what arrives on the topics",
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="do not start a detection worker (ingest raw events only)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="log lines instead of the live dashboard (default when not a TTY)",
    )


@dataclass
class Offsets:
    """End offsets per (topic, partition), read with a group-less consumer."""

    settings: Settings
    topics: list[str]
    _consumer: Consumer | None = field(default=None, init=False)

    def read(self) -> dict[tuple[str, int], int]:
        if self._consumer is None:
            conf = {**self.settings.kafka_common(), "group.id": "fundwatch-offsets-probe"}
            self._consumer = Consumer(conf)
        out: dict[tuple[str, int], int] = {}
        metadata = self._consumer.list_topics(timeout=10)
        for topic in self.topics:
            for partition in metadata.topics[topic].partitions:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10, cached=False
                )
                out[(topic, partition)] = high
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from streams.sink.service import Sink
    from streams.stack import local_kafka
    from streams.stack.topics import ensure_topics
    from streams.store.client import Store, StoreError
    from streams.store.owner import QueryServer

    if settings.is_local_kafka:
        local_kafka.ensure_broker(settings)
    ensure_topics(settings, settings.topics.all())
    try:
        store = Store(settings).open()
    except StoreError as exc:
        print(f"fundwatch run: {exc}", file=sys.stderr)
        return 1
    store.ensure_schema()
    if not args.no_sim and not _bounded(args) and settings.validate_wall_clock:
        # An unbounded simulation runs ahead of real time by design: its events would soon be
        # "more than a day in the future". The worker child reads the same switch from the env.
        log.info("unbounded simulation: event times are not checked against the wall clock")
        settings = settings.model_copy(update={"validate_wall_clock": False})
        os.environ["FUNDWATCH_VALIDATE_WALL_CLOCK"] = "false"
    server = QueryServer(store).start() if store.embedded else None
    sink = Sink(settings, store)
    watched = [getattr(settings.topics, r).name for r in INPUT_ROLES]
    outputs = [getattr(settings.topics, r).name for r in OUTPUT_ROLES]
    offsets = Offsets(settings, [*watched, *outputs])
    start_offsets = offsets.read()
    sim = None if args.no_sim else _start_simulator(args)
    worker = None
    if not args.no_worker:
        registry = _registry_dir(settings, args, sim)
        worker = WorkerProcess(
            settings, registry, log_path=settings.data_dir / "logs" / "worker.log"
        ).start()
    done = _Completion(sim, worker, sink, offsets, watched, outputs)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sink.stop())
    plain = args.plain or not sys.stderr.isatty()
    dashboard = Dashboard(sink, offsets, start_offsets, sim, plain=plain)
    started = time.monotonic()
    try:
        with dashboard:
            sink.run(until=done if _bounded(args) else None)
    finally:
        if worker is not None:
            worker.stop()
        if sim is not None and sim.poll() is None:
            sim.send_signal(signal.SIGINT)  # it stops producing and flushes what it queued
            try:
                sim.wait(SIM_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("the simulator was still flushing %.0fs after the stop: killed",
                            SIM_STOP_GRACE_S)  # fmt: skip
                sim.kill()
                sim.wait()
        final = offsets.read()
        offsets.close()
        if server is not None:
            server.close()
        counts = _summary_counts(store, settings)
        store.close()
    elapsed = time.monotonic() - started
    produced = {
        t: sum(final[k] - start_offsets.get(k, 0) for k in final if k[0] == t) for t in watched
    }
    dashboard.print_summary(produced, counts, elapsed, settings)
    if sim is not None and sim.returncode not in (0, -signal.SIGINT, 130):
        print(f"fundwatch run: the simulator failed (exit {sim.returncode})", file=sys.stderr)
        return 1
    if _bounded(args) and not done.reached:
        print("fundwatch run: stopped before every event was stored", file=sys.stderr)
        return 1
    return 0


def _registry_dir(settings: Settings, args: argparse.Namespace, sim) -> Path | None:
    """The reference data the worker judges against: the simulator's, once it is written."""
    if sim is None:
        return settings.registry_dir
    directory = settings.data_dir / "sim" / f"{args.seed}-{args.preset}"
    deadline = time.monotonic() + 120
    while not (directory / "drugs.jsonl").exists():
        if sim.poll() is not None or time.monotonic() > deadline:
            log.warning("the simulator wrote no reference data in %s", directory)
            return None
        time.sleep(0.1)
    return directory


def _bounded(args: argparse.Namespace) -> bool:
    return args.events is not None or args.days is not None


def _start_simulator(args: argparse.Namespace) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "streams.cli",
        "simulate",
        "--to",
        "kafka",
        "--quiet",
        "--preset",
        args.preset,
        "--seed",
        str(args.seed),
    ]
    if args.events is not None:
        cmd += ["--events", str(args.events)]
    if args.days is not None:
        cmd += ["--days", str(args.days)]
    if not _bounded(args):
        cmd += ["--forever"]
    if args.rate:
        cmd += ["--rate", str(args.rate)]
    log.info("starting simulator: %s", " ".join(cmd[2:]))
    return subprocess.Popen(cmd, env=os.environ.copy())


class _Completion:
    """True once the simulator has exited, the worker has caught up with everything it reads,
    and the sink has committed past everything written to its topics, outputs included."""

    def __init__(self, sim, worker, sink, offsets: Offsets, watched, outputs) -> None:
        self.sim, self.worker, self.sink, self.offsets = sim, worker, sink, offsets
        self.watched, self.outputs = watched, outputs
        self.targets: dict[tuple[str, int], int] | None = None
        self.reached = False
        self._worker_stable = 0
        self._last_check = 0.0

    def __call__(self) -> bool:
        if self.sim is not None and self.sim.poll() is None:
            return False
        if time.monotonic() - self._last_check < 0.5:
            return False
        self._last_check = time.monotonic()
        if self.worker is not None and self._worker_stable < 2:
            if not self.worker.alive():
                raise RuntimeError("the worker exited: see .local/logs/worker.log")
            try:
                committed, end = self.worker.progress()
            except KafkaException:  # the group coordinator may still be loading
                return False
            self._worker_stable = self._worker_stable + 1 if committed >= end else 0
            return False
        ends = self.offsets.read()
        if self.targets is None:
            self.targets = {k: v for k, v in ends.items() if k[0] in self.watched}
        targets = {**self.targets, **{k: v for k, v in ends.items() if k[0] in self.outputs}}
        committed = self.sink.committed
        self.reached = all(committed.get(k, 0) >= v for k, v in targets.items() if v > 0)
        return self.reached


def _summary_counts(store, settings: Settings) -> dict[str, int]:
    from streams.store.tables import TABLES

    out = {}
    for table in TABLES:
        out[table.name] = int(
            store.scalar(f"SELECT count() FROM `{store.database}`.`{table.name}` FINAL")
        )
    return out
