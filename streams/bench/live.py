"""The live pipeline: a producer at a fixed or maximal rate, a worker subprocess, the sink.

Measured: the worker's throughput (input records it committed per second, as events/s) and
the latency from an event's produce time (wall clock, recorded here) to its alert being stored
in ClickHouse (the sink's insert of the batch holding the alert has returned, so the row is
queryable), joined through the alert's triggering event id. The stored alerts are counted in
ClickHouse at the end as a check.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaException, Message, TopicPartition

from schemas.codec import CodecError
from streams.bench.latency import LatencyReport, SeenAlert, join_latencies
from streams.bench.workload import BenchTopics, Workload
from streams.config import Settings
from streams.kafka.clients import make_offsets_reader
from streams.run import Offsets
from streams.simulator import SimRecord
from streams.simulator.events import SIM_LABELS
from streams.simulator.output import produce_to_kafka
from streams.sink.service import SINK_ROLES, Sink
from streams.stack.topics import admin_client
from streams.store.client import Store
from streams.worker.process import WorkerProcess
from streams.worker.routing import INPUT_ROLES

log = logging.getLogger(__name__)


class TimedSink(Sink):
    """The sink, noting for each alert when the batch holding it was stored."""

    def __init__(self, settings: Settings, store: Store, **kwargs: Any) -> None:
        super().__init__(settings, store, **kwargs)
        self.seen: list[SeenAlert] = []
        self._batch: list[tuple[str, str, str, int]] = []
        self._alerts_topic = settings.topics.alerts.name

    def _handle(self, msg: Message) -> None:
        super()._handle(msg)
        if msg.error() is not None or msg.topic() != self._alerts_topic or not msg.value():
            return
        try:
            rec = self.codec.decode(msg.value(), expect="Alert")
        except CodecError:
            return
        trigger = rec["evidence_event_ids"][-1] if rec["evidence_event_ids"] else ""
        self._batch.append((rec["alert_id"], rec["detector_id"], trigger, int(rec["detected_at"])))

    def flush(self) -> None:
        super().flush()
        if self._batch and not self._pending:  # stored and committed
            now = time.time()
            self.seen.extend(SeenAlert(*a, stored_at_s=now) for a in self._batch)
            self._batch.clear()


@dataclass
class LiveResult:
    phase: str
    offered_eps: float | None  # None: as fast as the producer goes
    events: int
    input_records: int  # events + the producer's watermark records
    produce_s: float = 0.0
    worker_eps: float = 0.0  # events/s the worker committed (one worker process)
    worker_records_eps: float = 0.0
    drain_s: float = 0.0  # produce start -> worker committed every input record
    latency: LatencyReport = field(default_factory=LatencyReport)
    alerts_seen: int = 0
    alerts_stored: int = 0  # distinct alert ids in ClickHouse at the end
    timed_out: bool = False

    @property
    def produced_eps(self) -> float:
        return self.events / self.produce_s if self.produce_s > 0 else 0.0


class ProfiledWorker(WorkerProcess):
    """A worker run under pyinstrument (a dev extra): its session is saved to `profile_path`
    (`.pyisession`) when the worker stops (SIGTERM ends faust's loop, then pyinstrument
    writes)."""

    def __init__(self, *args: Any, profile_path: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile_path = profile_path

    def command(self) -> list[str]:
        profiler = ["-m", "pyinstrument", "-r", "pyisession", "-i", "0.002"]
        worker = super().command()  # [python, "-m", "streams.cli", ...]
        return [worker[0], *profiler, "-o", str(self.profile_path), *worker[1:]]


class BareFaustWorker(WorkerProcess):
    """faust's per-record floor (`streams/bench/bare_faust.py`): the worker's consumer set-up
    acknowledging every record and doing nothing else."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "streams.bench.bare_faust"]


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker subprocess bound to these settings' topics and group."""
    env = os.environ.copy()
    env.update(
        {
            "FUNDWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "FUNDWATCH_WORKER_APP_ID": settings.worker_app_id,
            "FUNDWATCH_DATA_DIR": str(settings.data_dir),
            "FUNDWATCH_WORKER_STATE": settings.worker_state,
            "FUNDWATCH_WORKER_STATE_HOT_GROUPS": str(settings.worker_state_hot_groups),
        }
    )
    for role in type(settings.topics).model_fields:
        spec = getattr(settings.topics, role)
        env[f"FUNDWATCH_TOPICS__{role.upper()}__NAME"] = spec.name
        env[f"FUNDWATCH_TOPICS__{role.upper()}__RETENTION_MS"] = str(spec.retention_ms)
    return env


def wait_group_stable(
    settings: Settings, group: str, alive: Any, timeout_s: float = 120, members: int = 1
) -> float:
    """Block until the consumer group is STABLE with `members` members (the workers have their
    partitions); returns the seconds waited."""
    admin = admin_client(settings)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if not alive():
            raise RuntimeError("the worker exited before joining its group")
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
            if desc.state == ConsumerGroupState.STABLE and len(desc.members) >= members:
                return time.monotonic() - t0
        except KafkaException:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"worker group {group} not stable after {timeout_s:.0f}s")


class CommitMonitor(threading.Thread):
    """Samples the worker group's committed offsets on the input topics every `every_s`."""

    def __init__(self, settings: Settings, every_s: float = 0.25) -> None:
        super().__init__(name="bench-commit-monitor", daemon=True)
        self.settings = settings
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        s = self.settings
        consumer = make_offsets_reader(s, s.worker_app_id)
        try:
            names = [getattr(s.topics, r).name for r in INPUT_ROLES]
            meta = consumer.list_topics(timeout=10)
            tps = [TopicPartition(n, p) for n in names for p in meta.topics[n].partitions]
            while not self.stop_event.is_set():
                try:
                    committed = consumer.committed(tps, timeout=10)
                    self.samples.append(
                        (time.monotonic(), sum(max(tp.offset, 0) for tp in committed))
                    )
                except KafkaException as exc:
                    log.debug("committed offsets unavailable: %s", exc)
                self.stop_event.wait(self.every_s)
        finally:
            consumer.close()


def throughput(samples: list[tuple[float, int]], total: int, t_start: float) -> tuple[float, float]:
    """(records/s, seconds to drain) from commit samples: between the first sample with a
    commit and the first with every record committed (commit points at both ends, so the
    worker's start-up and commit interval do not count); falls back to start -> end. A worker
    that never caught up (the phase timed out) gives the rate up to its last sample and a
    drain time of 0."""
    first = next(((t, c) for t, c in samples if c > 0), None)
    last = next(((t, c) for t, c in samples if c >= total), None)
    if last is None:
        if first is None or samples[-1][0] <= first[0]:
            return 0.0, 0.0
        return (samples[-1][1] - first[1]) / (samples[-1][0] - first[0]), 0.0
    drain = last[0] - t_start
    if first is not None and last[0] - first[0] > 0.5 and last[1] > first[1]:
        return (last[1] - first[1]) / (last[0] - first[0]), drain
    return (last[1] / drain if drain > 0 else 0.0), drain


def run_live(
    base: Settings,
    run_id: str,
    phase: str,
    workload: Workload,
    events: int,
    rate: float | None,
    store: Store,
    work_dir: Path,
    immediate: set[str] | None,
    timeout_s: float = 600,
    say: Any = print,
    profile_path: Path | None = None,
    bare: bool = False,
    workers: int = 1,
) -> LiveResult:
    """One live phase on topics of its own: start the worker (wait for its group), then
    produce `events` events at `rate` (None: max) while the sink stores everything. `bare`
    runs faust's floor (`BareFaustWorker`) in place of the worker; `workers` > 1 runs that many
    worker processes in one group (the figure is then the group's)."""
    topics = BenchTopics(base, run_id, phase, work_dir / phase).create()
    settings = topics.settings
    records = workload.prefix(events)
    n_events = sum(1 for r in records if r.topic != SIM_LABELS)
    result = LiveResult(phase, rate, n_events, 0)
    log_path = work_dir / phase / "worker.log"

    def plain_worker(name: str, log: Path) -> WorkerProcess:
        return WorkerProcess(
            settings, workload.registry_dir, name=name, env=worker_env(settings), log_path=log
        )

    worker: WorkerProcess
    if bare:
        worker = BareFaustWorker(settings, None, name="bare", env=worker_env(settings),
                                 log_path=log_path)  # fmt: skip
    elif profile_path is not None:
        worker = ProfiledWorker(
            settings,
            workload.registry_dir,
            name="bench",
            env=worker_env(settings),
            log_path=log_path,
            profile_path=profile_path,
        )
    else:
        worker = plain_worker("bench", log_path)
    others = [
        plain_worker(f"bench-{i}", work_dir / phase / f"worker-{i}.log")
        for i in range(2, workers + 1)
    ]
    db = Store(store.settings, database=f"fwbench_{run_id}_{phase}").open(lock=False)
    db.ensure_schema()
    sink = TimedSink(settings, db, roles=SINK_ROLES, group_id=settings.consumer_group)
    produced_at: dict[str, float] = {}
    errors: list[BaseException] = []
    produce_span: list[float] = []

    def timed(recs: list[SimRecord]) -> Iterator[SimRecord]:
        now = time.time
        for rec in recs:
            yield rec  # resumed right after produce() of this record returned
            if rec.topic != SIM_LABELS:
                produced_at[rec.record["event_id"]] = now()

    def produce() -> None:
        t0 = time.monotonic()
        try:
            produce_to_kafka(settings, timed(records), rate=rate)
        except BaseException as exc:
            errors.append(exc)
        produce_span.extend([t0, time.monotonic()])

    try:
        worker.start()
        for other in others:
            other.start()
        waited = wait_group_stable(
            settings,
            settings.worker_app_id,
            lambda: worker.alive() and all(o.alive() for o in others),
            members=workers,
        )
        say(
            f"  {phase}: worker joined its group in {waited:.1f}s; producing {n_events:,} events "
            f"at {'max rate' if rate is None else f'{rate:,.0f} ev/s'}"
        )
        monitor = CommitMonitor(settings)
        monitor.start()
        producer = threading.Thread(target=produce, name="bench-producer", daemon=True)
        t_start = time.monotonic()
        producer.start()
        inputs = [getattr(settings.topics, r).name for r in INPUT_ROLES]
        sink_topics = [getattr(settings.topics, r).name for r in SINK_ROLES]
        offsets = Offsets(settings, sink_topics)
        state = {"worker_ok": 0, "last": 0.0, "said": t_start}
        deadline = t_start + timeout_s

        def until() -> bool:
            now = time.monotonic()
            if now > deadline:
                result.timed_out = True
                return True
            if now - state["said"] > 10:
                state["said"] = now
                done = monitor.samples[-1][1] if monitor.samples else 0
                say(
                    f"  {phase}: {now - t_start:.0f}s, worker committed {done:,} input records, "
                    f"{len(sink.seen):,} alerts stored"
                )
            if producer.is_alive() or now - state["last"] < 0.5:
                return False
            state["last"] = now
            if state["worker_ok"] < 2:
                if not worker.alive():
                    raise RuntimeError(f"the worker exited: see {work_dir / phase / 'worker.log'}")
                try:
                    committed, end = worker.progress()
                except KafkaException:
                    return False
                state["worker_ok"] = state["worker_ok"] + 1 if committed >= end else 0
                return False
            ends = offsets.read()
            return all(sink.committed.get(k, 0) >= v for k, v in ends.items() if v > 0)

        try:
            sink.run(until=until)
        finally:
            monitor.stop_event.set()
            producer.join(60)
            monitor.join(15)
            ends = offsets.read()
            offsets.close()
        if errors:
            raise errors[0]
        result.input_records = sum(v for (t, _), v in ends.items() if t in inputs)
        result.produce_s = produce_span[1] - produce_span[0] if produce_span else 0.0
        rps, result.drain_s = throughput(monitor.samples, result.input_records, t_start)
        result.worker_records_eps = rps
        share = n_events / result.input_records if result.input_records else 0.0
        result.worker_eps = rps * share
        result.latency = join_latencies(produced_at, sink.seen, immediate)
        result.alerts_seen = len({a.alert_id for a in sink.seen})
        result.alerts_stored = int(
            db.scalar(f"SELECT uniqExact(alert_id) FROM `{db.database}`.alerts")
        )
    finally:
        worker.stop()
        for other in others:
            other.stop()
        try:
            db.client.command(f"DROP DATABASE IF EXISTS `{db.database}`")
        finally:
            db.close()
        topics.delete()
    return result
