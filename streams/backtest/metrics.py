"""The comparison of a backtest: per detector, a configuration's alerts judged against the
simulator's labels and analysts' reviews, and against a baseline configuration (pure, no I/O).

Truth of an alert: an analyst's latest review when there is one ('confirmed' = true positive,
'rejected' = false positive), else whether it matches a label (`models.evaluation`); without
labels or a review it is unjudged and counts in neither precision nor precision at k. Recall
counts labels found. Everything here is a function of the alerts, so two runs over the same
input and configuration give the same figures (no wall-clock values).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from models.evaluation import match_labels

AlertRow = Mapping[str, Any]
DEFAULT_TOP_K = 20


@dataclass(frozen=True)
class Figures:
    """One configuration's figures for one detector."""

    alerts: int
    judged: int  # alerts with a verdict (review or labels)
    true_positives: int
    labels: int
    labels_found: int
    precision_at_k: float | None
    k: int
    amount_at_risk_fen: int

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.judged if self.judged else None

    @property
    def recall(self) -> float | None:
        return self.labels_found / self.labels if self.labels else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(precision=self.precision, recall=self.recall, f1=self.f1)
        return out


@dataclass(frozen=True)
class DetectorComparison:
    detector_id: str
    candidate: Figures
    baseline: Figures | None
    gained: int  # alert ids of the candidate not raised by the baseline
    lost: int  # alert ids of the baseline not raised by the candidate
    retriggered: int = 0
    """Gained ids that are a lost finding raised at another event (same entity, shared
    evidence): e.g. a raised count threshold fires on a later event of the same burst, and the
    alert id hashes the triggering event. gained − retriggered are new findings."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector_id": self.detector_id,
            "candidate": self.candidate.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
            "gained": self.gained,
            "lost": self.lost,
            "retriggered": self.retriggered,
        }


def rank_key(alert: AlertRow) -> tuple[float, int, str]:
    """Analysts' review order: score desc, then money at risk desc (alert id breaks ties)."""
    return (-float(alert["score"]), -int(alert["amount_at_risk_fen"]), str(alert["alert_id"]))


def verdicts(
    alerts: Sequence[AlertRow],
    labels: Sequence[Mapping[str, Any]],
    reviews: Mapping[str, str],
) -> tuple[list[bool | None], dict[str, int], dict[str, set[int]]]:
    """Per alert: True/False/None (unjudged); plus labels and labels found per detector."""
    hits, n_labels, found = match_labels(alerts, labels)
    have_labels = bool(labels)
    out: list[bool | None] = []
    for alert, hit in zip(alerts, hits, strict=True):
        outcome = reviews.get(alert["alert_id"])
        if outcome == "confirmed":
            out.append(True)
        elif outcome == "rejected":
            out.append(False)
        else:
            out.append(hit if have_labels else None)
    return out, n_labels, found


def figures(
    alerts: Sequence[AlertRow],
    labels: Sequence[Mapping[str, Any]],
    reviews: Mapping[str, str],
    k: int = DEFAULT_TOP_K,
) -> dict[str, Figures]:
    """Per detector id (those with alerts or labels): the figures of one configuration."""
    verdict, n_labels, found = verdicts(alerts, labels, reviews)
    by_det: dict[str, list[tuple[AlertRow, bool | None]]] = defaultdict(list)
    for alert, v in zip(alerts, verdict, strict=True):
        by_det[alert["detector_id"]].append((alert, v))
    out: dict[str, Figures] = {}
    for det in sorted(set(by_det) | set(n_labels)):
        rows = by_det.get(det, [])
        judged = [v for _, v in rows if v is not None]
        ranked = [v for _, v in sorted(rows, key=lambda r: rank_key(r[0])) if v is not None][:k]
        out[det] = Figures(
            alerts=len(rows),
            judged=len(judged),
            true_positives=sum(1 for v in judged if v),
            labels=n_labels.get(det, 0),
            labels_found=len(found.get(det, ())),
            precision_at_k=(sum(ranked) / len(ranked)) if ranked else None,
            k=len(ranked),
            amount_at_risk_fen=sum(int(a["amount_at_risk_fen"]) for a, _ in rows),
        )
    return out


def compare(
    candidate: Sequence[AlertRow],
    baseline: Sequence[AlertRow] | None,
    labels: Sequence[Mapping[str, Any]],
    reviews: Mapping[str, str] | None = None,
    k: int = DEFAULT_TOP_K,
) -> list[DetectorComparison]:
    """Per detector, in id order: the candidate's figures, the baseline's, and the alert ids
    gained and lost (the alert id leaves the configuration out, so one finding has one id)."""
    reviews = reviews or {}
    cand = figures(candidate, labels, reviews, k)
    base = figures(baseline, labels, reviews, k) if baseline is not None else {}
    ids_c: dict[str, set[str]] = defaultdict(set)
    ids_b: dict[str, set[str]] = defaultdict(set)
    for a in candidate:
        ids_c[a["detector_id"]].add(a["alert_id"])
    for a in baseline or ():
        ids_b[a["detector_id"]].add(a["alert_id"])
    retriggered = _retriggered(candidate, baseline or (), ids_c, ids_b)
    empty = Figures(0, 0, 0, 0, 0, None, 0, 0)
    out = []
    for det in sorted(set(cand) | set(base)):
        c = cand.get(det, empty)
        if det not in cand and det in base:  # labels are the same for both configurations
            b0 = base[det]
            c = Figures(0, 0, 0, b0.labels, 0, None, 0, 0)
        out.append(
            DetectorComparison(
                det,
                c,
                base.get(det, empty) if baseline is not None else None,
                gained=len(ids_c[det] - ids_b[det]) if baseline is not None else 0,
                lost=len(ids_b[det] - ids_c[det]) if baseline is not None else 0,
                retriggered=retriggered.get(det, 0),
            )
        )
    return out


def _retriggered(
    candidate: Sequence[AlertRow],
    baseline: Sequence[AlertRow],
    ids_c: Mapping[str, set[str]],
    ids_b: Mapping[str, set[str]],
) -> dict[str, int]:
    """Per detector: gained alerts that share the entity and an evidence event with a lost one."""
    lost: dict[tuple[str, str], list[set[str]]] = defaultdict(list)
    for a in baseline:
        if a["alert_id"] not in ids_c[a["detector_id"]]:
            lost[(a["detector_id"], a["entity_id"])].append(set(a["evidence_event_ids"]))
    out: Counter[str] = Counter()
    for a in candidate:
        det = a["detector_id"]
        if a["alert_id"] in ids_b.get(det, ()):
            continue
        evidence = set(a["evidence_event_ids"])
        if any(evidence & ev for ev in lost.get((det, a["entity_id"]), ())):
            out[det] += 1
    return dict(out)


def totals(rows: Sequence[DetectorComparison]) -> dict[str, Any]:
    """Sums over detectors (precision and recall pooled, not averaged)."""
    t: Counter[str] = Counter()
    for r in rows:
        for side, f in (("candidate", r.candidate), ("baseline", r.baseline)):
            if f is None:
                continue
            t[f"{side}_alerts"] += f.alerts
            t[f"{side}_judged"] += f.judged
            t[f"{side}_tp"] += f.true_positives
            t[f"{side}_labels"] += f.labels
            t[f"{side}_found"] += f.labels_found
        t["gained"] += r.gained
        t["lost"] += r.lost
        t["retriggered"] += r.retriggered
    out: dict[str, Any] = dict(t)
    for side in ("candidate", "baseline"):
        j, lab = t[f"{side}_judged"], t[f"{side}_labels"]
        out[f"{side}_precision"] = t[f"{side}_tp"] / j if j else None
        out[f"{side}_recall"] = t[f"{side}_found"] / lab if lab else None
    return out


def alerts_per_day(alerts: Sequence[AlertRow], day_of: Any) -> dict[str, int]:
    """Alerts per local day of their triggering event (`day_of(ms) -> 'YYYY-MM-DD'`)."""
    c = Counter(day_of(int(a["event_time"])) for a in alerts)
    return dict(sorted(c.items()))
