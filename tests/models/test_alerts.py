"""Alert ids, the alert builder and the Avro record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fastavro import parse_schema
from fastavro.validation import validate

from models.alerts import MAX_EVIDENCE, Alert, alert_id, make_alert

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"


class _Det:
    id = "cross_institution_frequency"
    version = "1"
    kind = "suspicious"
    config_version = "cfg-7"


def _alert(**kw) -> Alert:
    args = dict(
        detector=_Det(),
        entity_type="person",
        entity_id="RY1",
        trigger_event={"event_id": "S9", "event_time": 1_000},
        evidence=["S1", "S9", "S2", "S1"],
        score=1.2,
        severity=1,
        amount_at_risk_fen=500,
        explanation_zh="24小时内在6家不同机构就诊(阈值5)",
        institution_id="H1",
        region_code="440305",
    )
    args.update(kw)
    return make_alert(**args)


def test_alert_id_is_sha256_prefix_of_joined_parts() -> None:
    raw = "d|1|person|RY1|S9"
    assert (
        alert_id("d", "1", "person", "RY1", "S9") == hashlib.sha256(raw.encode()).hexdigest()[:32]
    )
    assert len(alert_id("d", "1", "person", "RY1", "S9")) == 32


def test_alert_id_ignores_wall_clock() -> None:
    a, b = _alert(detected_at_ms=1), _alert(detected_at_ms=2)
    assert a.alert_id == b.alert_id == alert_id(_Det.id, "1", "person", "RY1", "S9")
    assert a.detected_at != b.detected_at


def test_evidence_deduplicated_trigger_last() -> None:
    assert _alert().evidence_event_ids == ["S1", "S2", "S9"]


def test_evidence_is_capped_keeping_the_trigger() -> None:
    a = _alert(evidence=[f"E{i}" for i in range(200)])
    assert len(a.evidence_event_ids) == MAX_EVIDENCE
    assert a.evidence_event_ids[-1] == "S9"


def test_explanation_prefixed_and_metadata_from_detector() -> None:
    a = _alert(severity=7)
    assert a.explanation == "[cross_institution_frequency] 24小时内在6家不同机构就诊(阈值5)"
    assert a.severity == 3
    assert a.kind == "suspicious"
    assert a.config_version == "cfg-7"
    assert a.event_time == 1_000
    assert a.late is False


def test_to_record_matches_avro_contract() -> None:
    schema = parse_schema(json.loads((AVRO / "alert.avsc").read_text(encoding="utf-8")))
    record = _alert().to_record()
    assert "late" not in record
    assert validate(record, schema, raise_errors=True)
