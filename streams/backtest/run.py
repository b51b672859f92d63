"""Run a backtest: read a range of history, judge it with a rule configuration (and a baseline)
in this process or on one process per CPU (`parallel`), store the alerts and a run record, and
compare (docs/backtest.md).

Isolation from the live pipeline: the detectors (the same objects a worker builds from the
configuration) run in the worker's `BatchProcessor` over the in-memory state table the worker
keeps (`docs/worker.md`), not a faust table: no changelog, nothing produced to Kafka. Kafka is
read by an assigned consumer of a throwaway group that commits nothing; alerts go to
`backtest_alerts` under a run id, never to `alerts`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.alerts import Alert
from models.reference import Registry
from models.rules.config import RuleConfig, load_rule_config
from streams.backtest import metrics
from streams.backtest.parallel import Judged, backtest_workers, judge_in_processes
from streams.backtest.replica import Replica, judge
from streams.backtest.sources import (
    SourceStats,
    clickhouse_records,
    kafka_records,
    show_time,
)
from streams.config import Settings
from streams.privacy import Pseudonymizer
from streams.sink.rows import Lineage, alert_rows
from streams.store.client import Store
from streams.worker.build import replay_gc
from streams.worker.routing import INPUT_ROLES

log = logging.getLogger(__name__)
Source = Literal["kafka", "clickhouse"]
BASELINE_SUFFIX = ".baseline"
"""The baseline's alerts are stored under `<run id>.baseline` (one alert id per run id)."""


def default_run_id(
    config_label: str, baseline_label: str | None, source: str, from_ms: int, to_ms: int
) -> str:
    """`bt-` + 16 hex of a hash of the inputs: the same inputs give the same id, so a re-run
    replaces its rows (ReplacingMergeTree keyed by (run_id, alert_id))."""
    raw = f"{config_label}|{baseline_label or ''}|{source}|{from_ms}|{to_ms}"
    return "bt-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def finding_key(alert: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(detector, entity type, stored entity id, triggering event): what identifies a finding
    across sources. A ClickHouse-sourced run sees pseudonyms where Kafka has person ids, so its
    person alerts have other alert ids (the id hashes the entity) but the same finding keys."""
    return (
        alert["detector_id"],
        alert["entity_type"],
        alert["entity_id"],
        alert["evidence_event_ids"][-1],
    )


@dataclass
class BacktestSpec:
    """What to run: the range, the configurations, where the input comes from."""

    from_ms: int
    to_ms: int
    config: str = "default"
    baseline: str | None = None
    source: Source = "kafka"
    run_id: str | None = None
    labels_path: Path | None = None
    top_k: int = metrics.DEFAULT_TOP_K


@dataclass
class BacktestResult:
    run_id: str
    config_label: str
    baseline_label: str | None
    source: str
    from_ms: int
    to_ms: int
    stats: SourceStats
    alerts: list[dict[str, Any]]  # as stored: person entity ids are pseudonyms
    baseline_alerts: list[dict[str, Any]] | None
    comparison: list[metrics.DetectorComparison]
    labels: int
    reviews: int
    started_ms: int
    finished_ms: int
    elapsed_s: float
    per_day: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.stats.valid / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def metrics_json(self) -> str:
        """The compared figures (deterministic: no wall-clock values) plus the input counts."""
        return json.dumps(
            {
                "detectors": [r.to_dict() for r in self.comparison],
                "totals": metrics.totals(self.comparison),
                "alerts_per_day": self.per_day,
                "labels": self.labels,
                "reviews": self.reviews,
                "invalid_by_reason": dict(sorted(self.stats.invalid.items())),
                "out_of_range": self.stats.out_of_range,
                "watermarks": self.stats.control,
            },
            sort_keys=True,
            ensure_ascii=False,
        )


class _Identity:
    """A pseudonymizer for input that is pseudonymised already (the ClickHouse source)."""

    @staticmethod
    def pseudonym(value: str) -> str:
        return value


def load_labels(
    store: Store | None, path: Path | None, from_ms: int, to_ms: int
) -> list[dict[str, Any]]:
    """Ground truth: a labels.jsonl file when given, else the store's `sim_labels` in range."""
    if path is not None:
        out = []
        for line in path.read_text().splitlines():
            if line.strip():
                label = json.loads(line)
                if from_ms <= int(label.get("event_time", from_ms)) < to_ms:
                    out.append(label)
        return out
    if store is None:
        return []
    rows = store.query_rows(
        f"SELECT label_id, expected_detector, event_ids FROM `{store.database}`.sim_labels FINAL "
        "WHERE event_time >= fromUnixTimestamp64Milli({f:Int64}) "
        "AND event_time < fromUnixTimestamp64Milli({u:Int64}) ORDER BY label_id",
        {"f": from_ms, "u": to_ms},
    )
    return [{"label_id": r[0], "expected_detector": r[1], "event_ids": list(r[2])} for r in rows]


def load_reviews(store: Store | None) -> dict[str, str]:
    """alert id -> the latest review outcome, if the `reviews` table exists (`fundwatch review`)."""
    if store is None:
        return {}
    exists = store.scalar(f"EXISTS TABLE `{store.database}`.reviews")
    if not exists:
        return {}
    rows = store.query_rows(  # the latest review decides, as in the alert_outcomes view
        "SELECT alert_id, argMax(toString(outcome), (reviewed_at, review_id)) "
        f"FROM `{store.database}`.reviews FINAL GROUP BY alert_id"
    )
    return {r[0]: r[1] for r in rows if r[1] in ("confirmed", "rejected")}


def judge_range(
    settings: Settings,
    spec: BacktestSpec,
    store: Store | None,
    rule_sets: Sequence[RuleConfig],
    registry: Registry,
    stats: SourceStats,
    now: int,
    on_total: Callable[[int], None] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> list[Judged]:
    """Judge the range with every rule set on the processes `backtest_workers` gives (one per
    CPU for a Kafka source, by default), or in this process: one read of the input, a `Replica`
    per rule set."""
    workers = backtest_workers(settings, spec.source)
    log.info(
        "backtest: judging on %d process(es), the states as %s (FUNDWATCH_BACKTEST_STATE)",
        workers, settings.backtest_state,
    )  # fmt: skip
    if workers > 1:
        return judge_in_processes(
            settings, spec.from_ms, spec.to_ms, rule_sets, registry, workers, stats, now,
            on_total, on_read,
        )  # fmt: skip
    if spec.source == "kafka":
        source = kafka_records(settings, spec.from_ms, spec.to_ms, stats, on_read)
    elif spec.source == "clickhouse":
        if store is None:
            raise ValueError("a ClickHouse-sourced backtest needs the store")
        source = clickhouse_records(settings, store, spec.from_ms, spec.to_ms, stats, on_read)
    else:
        raise ValueError(f"unknown source {spec.source!r} (kafka or clickhouse)")
    if on_total is not None:
        on_total(stats.total)
    replicas = [
        Replica.for_rules(rules, registry, settings, source.partitions, now) for rules in rule_sets
    ]
    with replay_gc():
        judge(source, replicas, spec.to_ms)
    marks = len(source.topics) * source.partitions
    return [Judged(r.alerts, r.proc.stats, marks) for r in replicas]


def _as_stored(alerts: Sequence[Alert], pseudo: Any) -> list[dict[str, Any]]:
    out = []
    for a in sorted(alerts, key=lambda a: (a.event_time, a.detector_id, a.alert_id)):
        rec = a.to_record()
        if rec["entity_type"] == "person":
            rec["entity_id"] = pseudo.pseudonym(rec["entity_id"])
        out.append(rec)
    return out


def run_backtest(
    settings: Settings,
    spec: BacktestSpec,
    store: Store,
    registry: Registry,
    on_total: Callable[[int], None] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Replay, judge, compare, store. `store` must be open (the caller owns the lock)."""
    if spec.to_ms <= spec.from_ms:
        raise ValueError("--to must be after --from")
    rules = load_rule_config(spec.config)
    base_rules = load_rule_config(spec.baseline) if spec.baseline else None
    base_label = base_rules.label if base_rules is not None else None
    run_id = spec.run_id or default_run_id(
        rules.label, base_label, spec.source, spec.from_ms, spec.to_ms
    )
    started = int(time.time() * 1000)
    stats = SourceStats()
    rule_sets = [rules] if base_rules is None else [rules, base_rules]
    if spec.source not in ("kafka", "clickhouse"):
        raise ValueError(f"unknown source {spec.source!r} (kafka or clickhouse)")
    pseudo: Any = Pseudonymizer.from_settings(settings) if spec.source == "kafka" else _Identity()
    log.info("backtest %s: %s source", run_id, spec.source)
    t0 = time.perf_counter()
    judged = judge_range(settings, spec, store, rule_sets, registry, stats, started,
                         on_total, on_read)  # fmt: skip
    elapsed = time.perf_counter() - t0
    cand, base = judged[0], (judged[1] if base_rules is not None else None)
    ps = cand.stats
    stats.valid = ps.valid_events()
    stats.control = sum(ps.control[r] for r in INPUT_ROLES) - cand.end_marks
    stats.invalid = Counter(ps.dead_lettered)
    alerts = _as_stored(list(cand.alerts.values()), pseudo)
    base_alerts = _as_stored(list(base.alerts.values()), pseudo) if base is not None else None

    labels = load_labels(store, spec.labels_path, spec.from_ms, spec.to_ms)
    reviews = load_reviews(store)
    comparison = metrics.compare(alerts, base_alerts, labels, reviews, spec.top_k)
    day = lambda ms: show_time(ms)[:10]  # noqa: E731
    per_day = {"candidate": metrics.alerts_per_day(alerts, day)}
    if base_alerts is not None:
        per_day["baseline"] = metrics.alerts_per_day(base_alerts, day)
    result = BacktestResult(
        run_id=run_id,
        config_label=rules.label,
        baseline_label=base_label,
        source=spec.source,
        from_ms=spec.from_ms,
        to_ms=spec.to_ms,
        stats=stats,
        alerts=alerts,
        baseline_alerts=base_alerts,
        comparison=comparison,
        labels=len(labels),
        reviews=len(reviews),
        started_ms=started,
        finished_ms=int(time.time() * 1000),
        elapsed_s=elapsed,
        per_day=per_day,
    )
    write_result(store, result, rules.version)
    log.info(
        "backtest %s: %d events, %d invalid, %d alerts (%s) in %.1fs",
        run_id, stats.valid, stats.invalid_total, len(alerts), rules.label, elapsed,
    )  # fmt: skip
    return result


def write_result(store: Store, result: BacktestResult, config_version: str) -> None:
    """`backtest_alerts` (candidate under the run id, baseline under `<run id>.baseline`) and
    one `backtest_runs` row."""
    store.ensure_schema()
    lineage = Lineage(0, 0, 0, 0)
    same = _Identity()
    for run_id, alerts in (
        (result.run_id, result.alerts),
        (result.run_id + BASELINE_SUFFIX, result.baseline_alerts or []),
    ):
        rows = [(run_id, *alert_rows(a, lineage, same)[0][1]) for a in alerts]  # type: ignore[arg-type]
        for i in range(0, len(rows), 50_000):
            store.insert_rows("backtest_alerts", rows[i : i + 50_000])
    s = result.stats
    store.insert_rows(
        "backtest_runs",
        [
            (
                result.run_id, result.config_label, config_version, result.baseline_label,
                result.source, result.from_ms, result.to_ms, s.events_read, s.valid,
                s.invalid_total, len(result.alerts), len(result.baseline_alerts or []),
                result.started_ms, result.finished_ms, result.elapsed_s, result.events_per_s,
                result.metrics_json(),
            )
        ],
    )  # fmt: skip
