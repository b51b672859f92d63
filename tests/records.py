"""Small, schema-valid example records of every contract, for tests across the suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

T0 = 1_795_000_000_000  # 2026-11-18 event time, in ms


def settlement(**over: Any) -> dict[str, Any]:
    items = [
        {"line_no": 1, "item_code": "XA10BAA080A001010100347", "item_name": "二甲双胍片",
         "item_type": "DRUG", "generic_group": "metformin-oral", "quantity": 2,
         "unit_price_fen": 1500, "amount_fen": 3000, "days_supply": 30,
         "trace_codes": ["81234560000000000001", "81234560000000000002"]},
        {"line_no": 2, "item_code": "250305001", "item_name": "肝功能检查(组合)",
         "item_type": "EXAM", "generic_group": None, "quantity": 1,
         "unit_price_fen": 6000, "amount_fen": 6000, "days_supply": None, "trace_codes": []},
    ]  # fmt: skip
    record = {
        "event_id": "ST00000001", "event_time": T0, "person_id": "36010200000000000001",
        "institution_id": "H360102000001", "institution_type": "HOSPITAL", "institution_level": 2,
        "region_code": "360102", "doctor_id": "D360102000001", "pharmacist_id": None,
        "department": "internal", "visit_type": "OUTPATIENT", "admission_time": None,
        "discharge_time": None, "diagnosis_codes": ["E11.900"], "items": items,
        "total_fen": 9000, "fund_paid_fen": 6300, "self_paid_fen": 2700, "channel": "FACE",
        "face_verify_id": "FV00000001", "reversal_of": None,
    }  # fmt: skip
    return {**record, **over}


def trace_scan(**over: Any) -> dict[str, Any]:
    record = {
        "event_id": "TS00000001", "event_time": T0, "trace_code": "81234560000000000001",
        "product_code": "8123456", "drug_code": "XA10BAA080A001010100347", "scan_type": "SALE",
        "institution_id": "H360102000001", "region_code": "360102", "settlement_id": "ST00000001",
        "batch_no": "B2026", "operator_id": None,
    }  # fmt: skip
    return {**record, **over}


def face_verify(**over: Any) -> dict[str, Any]:
    record = {
        "event_id": "FV00000001", "event_time": T0 - 60_000, "subject_type": "PATIENT",
        "subject_id": "36010200000000000001", "purpose": "SETTLEMENT",
        "institution_id": "H360102000001", "region_code": "360102", "device_id": "DEV0001",
        "device_lat": 28.68, "device_lon": 115.86, "match_score": 0.93, "liveness_passed": True,
        "result": "PASS", "settlement_id": "ST00000001", "liveness_score": 0.97,
    }  # fmt: skip
    return {**record, **over}


def alert(**over: Any) -> dict[str, Any]:
    record = {
        "alert_id": "a" * 32, "detector_id": "cross_institution_frequency",
        "detector_version": "1", "kind": "suspicious", "severity": 2, "score": 1.2,
        "entity_type": "person", "entity_id": "36010200000000000001",
        "institution_id": "H360102000001", "region_code": "360102", "event_time": T0,
        "detected_at": T0 + 1000, "amount_at_risk_fen": 6300, "evidence_event_ids": ["ST00000001"],
        "explanation": "[cross_institution_frequency] 24小时内在6家不同机构就诊(阈值5)",
        "config_version": None,
    }  # fmt: skip
    return {**record, **over}


def institution_hour(**over: Any) -> dict[str, Any]:
    record = {
        "institution_id": "H360102000001", "institution_type": "HOSPITAL", "institution_level": 2,
        "region_code": "360102", "hour_start": T0 - T0 % 3_600_000, "settlements": 12,
        "reversals": 1, "amount_fen": 98000, "fund_paid_fen": 68600, "self_paid_fen": 29400,
        "distinct_persons": 11, "doctors": 3, "revision": 0, "computed_at": T0 + 3_600_000,
    }  # fmt: skip
    return {**record, **over}


def dead_letter(**over: Any) -> dict[str, Any]:
    record = {
        "dead_letter_id": "d" * 32, "source_topic": "settlement", "source_partition": 0,
        "source_offset": 7, "record_timestamp": T0, "key": b"k", "value": b"\x00garbage",
        "reason_code": "not_single_object", "reason": "missing the Avro single-object header",
        "detected_at": T0 + 5, "stage": "sink",
    }  # fmt: skip
    return {**record, **over}


def sim_label(**over: Any) -> dict[str, Any]:
    record = {
        "label_id": "L0001", "scenario": "cross_institution_frequency", "entity_type": "person",
        "entity_id": "36010200000000000001", "event_ids": ["ST00000001"],
        "expected_detector": "cross_institution_frequency", "event_time": T0,
        "description": "24小时内在6家不同机构就诊",
    }  # fmt: skip
    return {**record, **over}


def review(**over: Any) -> dict[str, Any]:
    record = {
        "review_id": "r" * 32, "alert_id": "a" * 32, "detector_id": "cross_institution_frequency",
        "outcome": "confirmed", "reviewer": "analyst01", "reviewed_at": T0 + 86_400_000,
        "note": "病历核实,确认违规",
    }  # fmt: skip
    return {**record, **over}


RECORDS: dict[str, Callable[..., dict[str, Any]]] = {
    "SettlementEvent": settlement,
    "TraceScanEvent": trace_scan,
    "FaceVerifyEvent": face_verify,
    "Alert": alert,
    "InstitutionHour": institution_hour,
    "DeadLetter": dead_letter,
    "SimLabel": sim_label,
    "Review": review,
}
