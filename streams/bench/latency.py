"""Latency from an event's produce time to its alert being stored, and percentiles.

The simulator's record timestamp is the *event* time, so the wall-clock produce time of every
event is recorded by the benchmark itself (`event id -> time.time()`), and joined with each
alert's triggering event (`evidence_event_ids[-1]`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default); None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(ordered[lo])
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class SeenAlert:
    """An alert as the benchmark's sink saw it: when it was detected (the worker's wall clock,
    ms) and when the batch holding it was stored (wall clock, s)."""

    alert_id: str
    detector_id: str
    trigger_event_id: str
    detected_at_ms: int
    stored_at_s: float


@dataclass
class LatencyReport:
    """Percentiles (seconds) of produce -> stored, and its two parts: produce -> detected
    (Kafka, the worker's batching and reorder buffer) and detected -> stored (alerts topic,
    sink batching, the ClickHouse insert)."""

    joined: int = 0  # alerts raised by their triggering event, with a known produce time
    timer: int = 0  # alerts fired later by an event-time timer (absence checks): not counted
    unmatched: int = 0  # triggering event not produced by this run (should be 0)
    p50_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    detect_p50_s: float | None = None
    detect_p99_s: float | None = None
    store_p50_s: float | None = None
    store_p99_s: float | None = None
    by_detector_p50_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return dict(vars(self))


def join_latencies(
    produced_at: Mapping[str, float],
    alerts: Iterable[SeenAlert],
    immediate: set[str] | None = None,
) -> LatencyReport:
    """Join alerts with the produce time of their triggering event.

    `immediate`: ids of the alerts raised by processing their triggering event (known from an
    in-process run of the same events); the others fire later, when event time passes a
    deadline, and their delay is by design, so they are counted apart. None counts every
    alert. An alert id seen twice (a re-delivery) counts once, at its first store.
    """
    report = LatencyReport()
    first: dict[str, SeenAlert] = {}
    for alert in alerts:
        if alert.alert_id not in first or alert.stored_at_s < first[alert.alert_id].stored_at_s:
            first[alert.alert_id] = alert
    total: list[float] = []
    detect: list[float] = []
    store: list[float] = []
    per_detector: dict[str, list[float]] = {}
    for alert in first.values():
        if immediate is not None and alert.alert_id not in immediate:
            report.timer += 1
            continue
        t0 = produced_at.get(alert.trigger_event_id)
        if t0 is None:
            report.unmatched += 1
            continue
        detected = alert.detected_at_ms / 1000
        total.append(alert.stored_at_s - t0)
        detect.append(detected - t0)
        store.append(alert.stored_at_s - detected)
        per_detector.setdefault(alert.detector_id, []).append(alert.stored_at_s - t0)
    report.joined = len(total)
    report.p50_s, report.p99_s = percentile(total, 50), percentile(total, 99)
    report.max_s = max(total) if total else None
    report.detect_p50_s, report.detect_p99_s = percentile(detect, 50), percentile(detect, 99)
    report.store_p50_s, report.store_p99_s = percentile(store, 50), percentile(store, 99)
    report.by_detector_p50_s = {
        d: percentile(v, 50) or 0.0 for d, v in sorted(per_detector.items())
    }
    return report
