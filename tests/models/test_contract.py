"""What every detector promises, checked on its minimal firing scenario."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from models.alerts import alert_id
from models.catalogue import BY_ID
from models.detector import TOPICS, Detector
from models.online import MODEL_CLASSES
from models.runner import default_detectors
from tests.models import factories as f
from tests.models.scenarios import FIRING, ORDER_INDEPENDENT_IDS

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"
ALERT_SCHEMA = parse_schema(json.loads((AVRO / "alert.avsc").read_text(encoding="utf-8")))
IDS = sorted(FIRING)


def detector(detector_id: str) -> Detector:
    return next(d for d in default_detectors(f.registry()) if d.id == detector_id)


def test_every_rule_detector_has_a_scenario() -> None:
    models = {cls.id for cls in MODEL_CLASSES}  # online models: tests/models/test_online_*.py
    ids = {d.id for d in default_detectors(f.registry())} - models
    assert ids == set(FIRING)
    assert ids == set(BY_ID) - models


@pytest.mark.parametrize("detector_id", IDS)
def test_metadata_matches_catalogue(detector_id: str) -> None:
    det = detector(detector_id)
    assert isinstance(det, Detector)
    assert det.kind == BY_ID[detector_id].kind
    assert det.entity_type == BY_ID[detector_id].entity_type
    assert det.topics and det.topics <= TOPICS
    assert det.version


@pytest.mark.parametrize("detector_id", IDS)
def test_scenario_fires_once_with_a_well_formed_alert(detector_id: str) -> None:
    events = FIRING[detector_id]()
    alerts, _ = f.run(detector(detector_id), events)
    assert len(alerts) == 1, [a.explanation for a in alerts]
    a = alerts[0]
    event_ids = {e["event_id"] for e in events}
    assert a.detector_id == detector_id
    assert a.kind == BY_ID[detector_id].kind
    assert 1 <= a.severity <= 3
    assert a.score > 0
    assert a.amount_at_risk_fen >= 0
    assert a.explanation.startswith(f"[{detector_id}] ")
    assert any(ch.isdigit() for ch in a.explanation.split("] ", 1)[1])
    assert a.evidence_event_ids and set(a.evidence_event_ids) <= event_ids
    trigger = a.evidence_event_ids[-1]
    assert a.alert_id == alert_id(
        detector_id, a.detector_version, a.entity_type, a.entity_id, trigger
    )
    assert a.event_time == next(e["event_time"] for e in events if e["event_id"] == trigger)
    assert a.detected_at == 1_800_000_000_000
    assert a.late is False
    assert validate(a.to_record(), ALERT_SCHEMA, raise_errors=True)


@pytest.mark.parametrize("detector_id", IDS)
def test_rerun_gives_the_same_ids(detector_id: str) -> None:
    events = FIRING[detector_id]()
    first, _ = f.run(detector(detector_id), events)
    again, _ = f.run(detector(detector_id), events)
    assert [a.to_record() for a in first] == [a.to_record() for a in again]


@pytest.mark.parametrize("detector_id", IDS)
def test_state_is_plain_json_and_equivalent(detector_id: str) -> None:
    events = FIRING[detector_id]()
    plain, _ = f.run(detector(detector_id), events)
    js, _ = f.run(detector(detector_id), events, store=f.JsonStateStore())
    assert [a.to_record() for a in plain] == [a.to_record() for a in js]


@pytest.mark.parametrize("detector_id", IDS)
def test_state_expires_to_nothing(detector_id: str) -> None:
    _, ds = f.run(detector(detector_id), FIRING[detector_id](), flush=True)
    assert ds.store.count() == 0
    assert ds.pending_timers == 0


@pytest.mark.parametrize("detector_id", IDS)
def test_state_expires_by_watermark_without_flush(detector_id: str) -> None:
    _, ds = f.run(detector(detector_id), FIRING[detector_id](), flush=False)
    ds.advance(ds.watermark_ms + 100 * f.DAY)
    assert ds.store.count() == 0


@pytest.mark.parametrize("detector_id", IDS)
def test_reverse_arrival_still_fires_once_and_marks_late(detector_id: str) -> None:
    events = FIRING[detector_id]()
    forward, _ = f.run(detector(detector_id), events)
    backward, _ = f.run(detector(detector_id), events[::-1])
    assert len(backward) == 1
    span = events[-1]["event_time"] - events[0]["event_time"]
    trigger_time = backward[0].event_time
    if detector_id in ORDER_INDEPENDENT_IDS:
        assert backward[0].alert_id == forward[0].alert_id
    if span > 10 * f.MINUTE and trigger_time < events[-1]["event_time"] - 10 * f.MINUTE:
        # raised by a late event, unless a timer raised it
        assert backward[0].late or detector_id in {"licence_lending", "hanging_bed"}


@pytest.mark.parametrize("detector_id", IDS)
def test_redelivered_events_do_not_fire_again(detector_id: str) -> None:
    events = FIRING[detector_id]()
    once, _ = f.run(detector(detector_id), events)
    twice, _ = f.run(detector(detector_id), [e for e in events for _ in range(2)])
    assert {a.alert_id for a in twice} == {a.alert_id for a in once}


# Rules that accumulate several events of one entity; single-event rules have nothing to
# spread, and drug_swap/impersonation join by settlement or check id (a lone FACE settlement is
# itself a finding): their entity tests are in their own modules.
ACCUMULATING = [d for d in IDS if len(FIRING[d]()) >= 2 and d not in {"drug_swap", "impersonation"}]


@pytest.mark.parametrize("detector_id", ACCUMULATING)
def test_other_topics_and_other_entities_stay_quiet(detector_id: str) -> None:
    """The scenario's events spread over distinct persons/institutions do not fire."""
    events = FIRING[detector_id]()
    spread = []
    for n, e in enumerate(events):
        e = dict(e)
        if e["_topic"] == "settlement":
            e["person_id"] = f"RY-OTHER{n}"
            if detector_id in {"odd_hour_sales", "pharmacy_basket_ring", "group_visit"}:
                e["institution_id"] = [
                    f.PHARM,
                    f.PHARM2,
                    f.PHARM3,
                    f.HOSP,
                    f.HOSP2,
                    f.CLINIC,
                    "H440305000020",
                    "H440305000021",
                ][n]
            if detector_id == "duplicate_billing":
                e["institution_id"] = [f.HOSP, f.HOSP2][n]
        elif e["_topic"] == "face_verify":
            e["subject_id"] = f"RY-OTHER{n}"
        elif e["_topic"] == "trace_scan":
            e["trace_code"] = f.trace_code("8123456", 500 + n)
        spread.append(e)
    alerts, _ = f.run(detector(detector_id), spread)
    assert alerts == []
