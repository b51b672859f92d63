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


def score(
    alerts: Iterable[Mapping[str, Any]], labels: Iterable[Mapping[str, Any]]
) -> dict[str, DetectorScore]:
    """Per detector id: labels, labels found, alerts, alerts matching a label."""
    events_of_label: dict[str, list[set[str]]] = defaultdict(list)
    for label in labels:
        events_of_label[label["expected_detector"]].append(set(label["event_ids"]))
    found: dict[str, set[int]] = defaultdict(set)
    n_alerts: dict[str, int] = defaultdict(int)
    matched: dict[str, int] = defaultdict(int)
    for alert in alerts:
        det = alert["detector_id"]
        n_alerts[det] += 1
        evidence = set(alert["evidence_event_ids"])
        hit = False
        for i, events in enumerate(events_of_label.get(det, ())):
            if evidence & events:
                found[det].add(i)
                hit = True
        if hit:
            matched[det] += 1
    kinds = {s.detector_id: s.kind for s in SCENARIOS}
    out = {}
    for det in sorted(set(events_of_label) | set(n_alerts)):
        out[det] = DetectorScore(
            det, kinds.get(det, "?"), len(events_of_label.get(det, ())), len(found[det]),
            n_alerts[det], matched[det],
        )  # fmt: skip
    return out
