"""The worker's /metrics and /health.

Counters are read lazily from the processor's `WorkerStats` at scrape time; the agent reports
each finished batch (`batch_done`: sizes, outputs per topic role, latency histograms). Consumer
lag is computed at scrape time from faust's consumer: the end (highwater) of each assigned
partition minus the offset faust last committed for it. The lag includes the records the
event-time reorder buffer holds (read, not yet committable), so /health judges a stall by the
records not yet read instead: a quiet input with held records is not a stuck worker.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.config import Settings
from streams.ops.metrics import (
    LATENCY_BUCKETS,
    SECONDS_BUCKETS,
    SIZE_BUCKETS,
    BulkHistogram,
    MetricsServer,
    health_verdict,
)
from streams.worker.processor import Batch, BatchProcessor
from streams.worker.state_table import PackedTable


class WorkerMetrics(Collector):
    """Metrics of one worker process; `processor()` returns its BatchProcessor once created."""

    def __init__(
        self,
        settings: Settings,
        app: Any,
        processor: Callable[[], BatchProcessor | None],
        name: str = "worker-1",
    ) -> None:
        self.settings = settings
        self.app = app
        self.processor = processor
        self.name = name
        self.started = time.time()
        self.last_batch: float | None = None
        self.out: Counter = Counter()  # records produced, per output role
        self.held = 0  # records the reorder buffers hold (uncommitted)
        self.state_keys: int | None = None  # detector states held (transactional engine)
        self.state_loads = self.state_packs = 0  # of a packed state table
        self._last_committed: dict[Any, int] = {}
        self.batch_records = BulkHistogram(
            "fundwatch_worker_batch_records", "Records per batch", SIZE_BUCKETS
        )
        self.batch_seconds = BulkHistogram(
            "fundwatch_worker_batch_seconds",
            "Time to process a batch and deliver its outputs and state",
            SECONDS_BUCKETS,
        )
        self.latency = BulkHistogram(
            "fundwatch_worker_latency_seconds",
            "From the record timestamp (event time) to its outputs being delivered",
            LATENCY_BUCKETS,
        )

    # -- called by the agent, on the event loop ------------------------------------------------
    def batch_done(self, events: list[Any], batch: Batch | None, started: float) -> None:
        """Account for a finished batch (`started`: time.monotonic() before it)."""
        now = time.time()
        self.last_batch = now
        self.batch_records.observe(len(events))
        self.batch_seconds.observe(time.monotonic() - started)
        if batch is None:
            return
        for rec in batch.out:
            self.out[rec.role] += 1
        times = (_record_time(ref) for ref in batch.done)
        self.latency.observe_many(now - t for t in times if t)
        proc = self.processor()
        if proc is not None:
            self.held = proc.held_records()
            table = getattr(proc, "table", None)
            if isinstance(table, (dict, PackedTable)):  # not a faust table: len() reads RocksDB
                self.state_keys = len(table)
            if isinstance(table, PackedTable):
                self.state_loads, self.state_packs = table.loads, table.packs

    # -- read by the HTTP thread ---------------------------------------------------------------
    def stalled(self) -> list[str]:
        """Assigned partitions with records to commit whose committed offset has not moved
        since the previous call, each with what faust and the processor know about it."""
        consumer = getattr(self.app, "_consumer", None)
        proc = self.processor()
        if consumer is None or proc is None:
            return []
        out = []
        try:
            previous, self._last_committed = self._last_committed, {}
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                done = consumer._committed_offset.get(tp) or 0
                self._last_committed[tp] = done
                if high is None or high <= done or previous.get(tp) != done:
                    continue
                out.append(
                    f"{tp.topic}[{tp.partition}]: committed {done}, end {high}, faust read to "
                    f"{consumer._read_offset.get(tp)}, {len(consumer._acked.get(tp) or ())} "
                    f"acknowledged not committed; processor: {proc.reading(tp.topic, tp.partition)}"
                    f"; {proc.why_held(tp.topic, tp.partition)}"
                )
        except Exception:  # a rebalance under way: nothing to say this time
            return []
        return out

    def lag(self) -> tuple[dict[str, int], int, int]:
        """(lag per topic, records not yet read, assigned partitions), from faust's consumer
        (or the transactional engine's); empty before it runs."""
        if callable(getattr(self.app, "lag", None)):
            return self.app.lag()
        consumer = getattr(self.app, "_consumer", None)
        if consumer is None:
            return {}, 0, 0
        try:
            assigned = list(consumer.assignment())
            committed = consumer._committed_offset  # defaultdicts: read with .get
            read = consumer._read_offset  # the last offset read, per partition
            lags: dict[str, int] = {}
            unread = 0
            for tp in assigned:
                high = consumer.highwater(tp)
                if high is None:
                    continue
                done = committed.get(tp) or 0
                lags[tp.topic] = lags.get(tp.topic, 0) + max(0, high - done)
                last = read.get(tp)
                unread += max(0, high - (last + 1 if last is not None else done))
        except Exception:  # not started, or a rebalance under way: report nothing this time
            return {}, 0, 0
        return lags, unread, len(assigned)

    def collect(self) -> Iterator[Metric]:
        proc = self.processor()
        stats = proc.stats if proc is not None else None

        def counter(name: str, doc: str, label: str, values: Any) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=[label])
            for key, n in dict(values or {}).items():
                m.add_metric([key], n)
            return m

        yield counter(
            "fundwatch_worker_records_read",
            "Records read, per source topic role",
            "role",
            stats and stats.read,
        )
        yield counter(
            "fundwatch_worker_records_processed",
            "Events judged by the detectors, per source topic role",
            "role",
            stats and stats.processed,
        )
        yield counter(
            "fundwatch_worker_records_unkeyed",
            "Valid input records no detector keys (e.g. stock-in scans), per source topic role",
            "role",
            stats and stats.unkeyed,
        )
        yield counter(
            "fundwatch_worker_records_control",
            "Watermark records read, per source topic role",
            "role",
            stats and stats.control,
        )
        yield counter(
            "fundwatch_worker_dead_letters",
            "Records dead-lettered, per reason code",
            "reason",
            stats and stats.dead_lettered,
        )
        yield counter(
            "fundwatch_worker_alerts",
            "Alerts raised, per detector",
            "detector",
            stats and stats.alerts,
        )
        yield counter(
            "fundwatch_worker_records_out",
            "Records produced, per output role (alerts, aggregates, dead_letters, repartition)",
            "role",
            self.out,
        )
        yield CounterMetricFamily(
            "fundwatch_worker_batches", "Batches processed", value=stats.batches if stats else 0
        )
        lags, _, assigned = self.lag()
        lag = GaugeMetricFamily(
            "fundwatch_worker_consumer_lag",
            "Records between the last commit and the end of the assigned partitions",
            labels=["topic"],
        )
        for topic, n in sorted(lags.items()):
            lag.add_metric([topic], n)
        yield lag
        yield GaugeMetricFamily(
            "fundwatch_worker_assigned_partitions", "Partitions assigned", value=assigned
        )
        yield GaugeMetricFamily(
            "fundwatch_worker_held_records",
            "Records waiting in the event-time reorder buffers (not yet committable)",
            value=self.held,
        )
        if self.state_keys is not None:
            yield GaugeMetricFamily(
                "fundwatch_worker_state_keys",
                "Detector states (and checkpoints) the worker holds in memory",
                value=self.state_keys,
            )
        yield CounterMetricFamily(
            "fundwatch_worker_state_group_loads",
            "Packed state: entity groups decoded again after leaving the hot set",
            value=self.state_loads,
        )
        yield CounterMetricFamily(
            "fundwatch_worker_state_group_packs",
            "Packed state: entity groups encoded (changed, then pushed out of the hot set)",
            value=self.state_packs,
        )
        yield GaugeMetricFamily(
            "fundwatch_worker_last_batch_timestamp_seconds",
            "When the last batch finished (0: none yet)",
            value=self.last_batch or 0,
        )
        yield GaugeMetricFamily(
            "fundwatch_worker_start_time_seconds", "When the process started", value=self.started
        )
        for hist in (self.batch_records, self.batch_seconds, self.latency):
            yield from hist.collect()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """503 when the app is not running, or records wait and no batch completes."""
        lags, unread, assigned = self.lag()
        state = str(getattr(self.app, "state", "unknown"))
        problems = [] if state == "running" else [f"app {state}"]
        return health_verdict(
            state=state,
            started=self.started,
            last_batch=self.last_batch,
            lag=sum(lags.values()),
            waiting=unread,
            stall_s=self.settings.health_stall_seconds,
            problems=problems,
            unread=unread,
            held=self.held,
            assigned_partitions=assigned,
            app_id=self.settings.worker_app_id,
        )

    def serve(self) -> MetricsServer | None:
        """Start the endpoint (None when FUNDWATCH_METRICS_ENABLED=false)."""
        if not self.settings.metrics_enabled:
            return None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return MetricsServer(
            self.settings,
            "worker",
            f"{self.settings.worker_app_id}-{self.name}",
            registry,
            self.health,
            port=self.settings.worker_metrics_port,
        ).start()


def _record_time(ref: Any) -> float | None:
    """A finished record's timestamp in seconds: a faust event or a confluent-kafka message."""
    message = getattr(ref, "message", None)
    if message is not None:
        return message.timestamp
    kind, ms = ref.timestamp()
    return ms / 1000.0 if kind else None
