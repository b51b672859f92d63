"""Score alerts against ground truth: recall and precision per detector.

An alert matches a label when the detector is the label's expected detector and the alert's
evidence shares at least one event with the label's events. Recall counts labels with a
matching alert; precision counts alerts that match a label. Labels come from the simulator
(`sim_labels`) today and from analysts' confirmed reviews later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models.catalogue import SCENARIOS


@dataclass(frozen=True, slots=True)
class DetectorScore:
    detector_id: str
    kind: str
    labels: int
    labels_found: int
    alerts: int
    alerts_matched: int

    @property
    def recall(self) -> float | None:
        return self.labels_found / self.labels if self.labels else None

    @property
    def precision(self) -> float | None:
        return self.alerts_matched / self.alerts if self.alerts else None


def match_labels(
    alerts: Iterable[Mapping[str, Any]], labels: Iterable[Mapping[str, Any]]
) -> tuple[list[bool], dict[str, int], dict[str, set[int]]]:
    """The matching rule of `score`, per alert: (whether each alert, in order, matches a label;
    labels per detector; indexes of the labels found per detector). The backtest ranks alerts
    and needs the verdict of each one, not only the counts."""
    events_of_label: dict[str, list[set[str]]] = defaultdict(list)
    for label in labels:
        events_of_label[label["expected_detector"]].append(set(label["event_ids"]))
    found: dict[str, set[int]] = defaultdict(set)
    hits: list[bool] = []
    for alert in alerts:
        det = alert["detector_id"]
        evidence = set(alert["evidence_event_ids"])
        hit = False
        for i, events in enumerate(events_of_label.get(det, ())):
            if evidence & events:
                found[det].add(i)
                hit = True
        hits.append(hit)
    return hits, {d: len(v) for d, v in events_of_label.items()}, dict(found)


def score(
    alerts: Iterable[Mapping[str, Any]], labels: Iterable[Mapping[str, Any]]
) -> dict[str, DetectorScore]:
    """Per detector id: labels, labels found, alerts, alerts matching a label."""
    alerts = list(alerts)
    hits, n_labels, found = match_labels(alerts, labels)
    n_alerts: dict[str, int] = defaultdict(int)
    matched: dict[str, int] = defaultdict(int)
    for alert, hit in zip(alerts, hits, strict=True):
        det = alert["detector_id"]
        n_alerts[det] += 1
        if hit:
            matched[det] += 1
    kinds = {s.detector_id: s.kind for s in SCENARIOS}
    out = {}
    for det in sorted(set(n_labels) | set(n_alerts)):
        out[det] = DetectorScore(
            det, kinds.get(det, "?"), n_labels.get(det, 0), len(found.get(det, ())),
            n_alerts[det], matched[det],
        )  # fmt: skip
    return out
