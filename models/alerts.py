"""The alert a detector raises, and the one place alerts are made.

The id is a hash of what the finding is about (detector, version, entity, triggering event), never
of when it was found, so re-processing the same events gives the same ids and sinks stay idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_EVIDENCE = 50
"""Evidence ids kept per alert (the most recent ones, triggering event last): bounded alerts."""


class _DetectorLike(Protocol):
    id: str
    version: str
    kind: str


@dataclass(slots=True)
class Alert:
    """One finding, with the fields of `schemas/avro/alert.avsc` plus `late`.

    `late` is not in the Avro contract: it marks an alert raised by an event that arrived behind
    the watermark (processed anyway, never dropped), so a reviewer can discount it.
    """

    alert_id: str
    detector_id: str
    detector_version: str
    kind: str
    severity: int
    score: float
    entity_type: str
    entity_id: str
    institution_id: str | None
    region_code: str | None
    event_time: int
    detected_at: int
    amount_at_risk_fen: int
    evidence_event_ids: list[str] = field(default_factory=list)
    explanation: str = ""
    config_version: str | None = None
    late: bool = False

    def to_record(self) -> dict[str, Any]:
        """The dict the Avro codec encodes (alert.avsc fields only)."""
        return {
            "alert_id": self.alert_id,
            "detector_id": self.detector_id,
            "detector_version": self.detector_version,
            "kind": self.kind,
            "severity": self.severity,
            "score": self.score,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "institution_id": self.institution_id,
            "region_code": self.region_code,
            "event_time": self.event_time,
            "detected_at": self.detected_at,
            "amount_at_risk_fen": self.amount_at_risk_fen,
            "evidence_event_ids": list(self.evidence_event_ids),
            "explanation": self.explanation,
            "config_version": self.config_version,
        }


def alert_id(
    detector_id: str, version: str, entity_type: str, entity_id: str, trigger_event_id: str
) -> str:
    """First 32 hex chars of SHA-256 over the '|'-joined parts (docs/detection.md)."""
    raw = f"{detector_id}|{version}|{entity_type}|{entity_id}|{trigger_event_id}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def make_alert(
    detector: _DetectorLike,
    entity_type: str,
    entity_id: str,
    trigger_event: Mapping[str, Any],
    evidence: Sequence[str],
    score: float,
    severity: int,
    amount_at_risk_fen: int,
    explanation_zh: str,
    institution_id: str | None = None,
    region_code: str | None = None,
    detected_at_ms: int = 0,
) -> Alert:
    """Build an alert: the only constructor detectors use.

    `trigger_event` needs `event_id` and `event_time`. Evidence is de-duplicated, the triggering
    event moved last and the list capped at `MAX_EVIDENCE`. The explanation is prefixed with
    `[detector_id]`. `detected_at_ms` stays 0 inside detectors: the runner stamps the wall clock.
    """
    trigger_id = trigger_event["event_id"]
    seen = {trigger_id}
    ids: list[str] = []
    for eid in evidence:
        if eid not in seen:
            seen.add(eid)
            ids.append(eid)
    ids.append(trigger_id)
    if len(ids) > MAX_EVIDENCE:
        ids = ids[-MAX_EVIDENCE:]
    return Alert(
        alert_id=alert_id(detector.id, detector.version, entity_type, entity_id, trigger_id),
        detector_id=detector.id,
        detector_version=detector.version,
        kind=detector.kind,
        severity=min(3, max(1, int(severity))),
        score=float(score),
        entity_type=entity_type,
        entity_id=entity_id,
        institution_id=institution_id,
        region_code=region_code,
        event_time=int(trigger_event["event_time"]),
        detected_at=detected_at_ms,
        amount_at_risk_fen=int(amount_at_risk_fen),
        evidence_event_ids=ids,
        explanation=f"[{detector.id}] {explanation_zh}",
        config_version=getattr(detector, "config_version", None),
    )
