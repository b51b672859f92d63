"""The sink's /metrics and /health: a collector that reads `SinkStats` at scrape time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.ops.metrics import MetricsServer, health_verdict
from streams.sink.service import Sink


class SinkCollector(Collector):
    """Counters and gauges of one `Sink`, read lazily from its stats (no hot-path cost)."""

    def __init__(self, sink: Sink, started: float | None = None) -> None:
        self.sink = sink
        self.started = started if started is not None else time.time()

    def collect(self) -> Iterator[Metric]:
        stats = self.sink.stats
        role_of = self.sink.role_of
        topics = list(stats.topics.items())
        labels = ["topic", "role"]

        def per_topic(name: str, doc: str, attr: str) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=labels)
            for topic, t in topics:
                m.add_metric([topic, role_of.get(topic, "")], getattr(t, attr))
            return m

        yield per_topic("fundwatch_sink_records_read", "Records read, per topic", "read")
        yield per_topic(
            "fundwatch_sink_records_stored", "Records whose rows are stored and committed", "stored"
        )
        yield per_topic(
            "fundwatch_sink_records_control", "Control records (watermarks) read", "control"
        )
        dead = CounterMetricFamily(
            "fundwatch_sink_dead_letters",
            "Records the sink dead-lettered, per source topic and reason code",
            labels=[*labels, "reason"],
        )
        for (topic, reason), n in dict(stats.dead_by_reason).items():
            dead.add_metric([topic, role_of.get(topic, ""), reason], n)
        yield dead
        rows = CounterMetricFamily(
            "fundwatch_sink_rows_stored", "Rows inserted, per table", labels=["table"]
        )
        for table, n in dict(stats.rows).items():
            rows.add_metric([table], n)
        yield rows
        alerts = CounterMetricFamily(
            "fundwatch_sink_alerts", "Alerts read for storing, per detector", labels=["detector"]
        )
        for detector, n in dict(stats.alerts_by_detector).items():
            alerts.add_metric([detector], n)
        yield alerts
        yield CounterMetricFamily(
            "fundwatch_sink_batches", "Batches stored and committed", value=stats.batches
        )
        yield CounterMetricFamily(
            "fundwatch_sink_store_failures",
            "Failed store inserts (each is retried with backoff)",
            value=stats.store_failures,
        )
        yield CounterMetricFamily(
            "fundwatch_sink_commit_failures",
            "Offset commits given up (left to the next batch's commit; rows already stored)",
            value=stats.commit_failures,
        )
        yield GaugeMetricFamily(
            "fundwatch_sink_store_up",
            "1 while the store accepts inserts",
            value=int(stats.store_up),
        )
        lag = GaugeMetricFamily(
            "fundwatch_sink_consumer_lag",
            "Records behind the end of the topic (librdkafka statistics)",
            labels=labels,
        )
        for topic, t in topics:
            lag.add_metric([topic, role_of.get(topic, "")], t.lag)
        yield lag
        yield GaugeMetricFamily(
            "fundwatch_sink_assigned_partitions", "Partitions assigned", value=stats.assigned
        )
        yield GaugeMetricFamily(
            "fundwatch_sink_last_batch_timestamp_seconds",
            "When the last batch was committed (0: none yet)",
            value=stats.last_flush_ms / 1000,
        )
        yield GaugeMetricFamily(
            "fundwatch_sink_start_time_seconds", "When the process started", value=self.started
        )
        for hist in (stats.batch_records, stats.flush_seconds, stats.latency):
            yield from hist.collect()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """503 while the store fails, or when records wait and no batch completes."""
        stats = self.sink.stats
        problems = []
        if not stats.store_up:
            problems.append("store unavailable")
        if stats.state in ("starting", "stopped"):
            problems.append(f"sink {stats.state}")
        return health_verdict(
            state=stats.state,
            started=self.started,
            last_batch=stats.last_flush_ms / 1000 if stats.last_flush_ms else None,
            lag=sum(t.lag for _, t in list(stats.topics.items())),
            stall_s=self.sink.settings.health_stall_seconds,
            problems=problems,
            assigned_partitions=stats.assigned,
            group=self.sink.group_id,
        )


def serve_sink_metrics(sink: Sink) -> MetricsServer | None:
    """Start the sink's endpoint (None when FUNDWATCH_METRICS_ENABLED=false)."""
    settings = sink.settings
    if not settings.metrics_enabled:
        return None
    registry = CollectorRegistry(auto_describe=False)
    collector = SinkCollector(sink)
    registry.register(collector)
    return MetricsServer(
        settings,
        "sink",
        f"{sink.group_id}-{os.getpid()}",
        registry,
        collector.health,
        port=settings.sink_metrics_port,
    ).start()
