"""An input record goes to a stage, directly or copied to its repartition topic, only when a
detector of that stage keys it; one that no detector keys is done at once, counted as unkeyed."""

from __future__ import annotations

from typing import Any

from models.aggregates import InstitutionHourAggregator
from models.runner import default_detectors
from streams.worker.processor import BatchProcessor, SourceRecord
from tests.records import face_verify, settlement, trace_scan

SCHEMA = {
    "settlement": "SettlementEvent",
    "trace_scan": "TraceScanEvent",
    "face_verify": "FaceVerifyEvent",
}


def _processor(without: str = "") -> BatchProcessor:
    detectors = [d for d in default_detectors() if d.id != without]
    return BatchProcessor([*detectors, InstitutionHourAggregator()], {}, now_ms=lambda: None)


def _copied(proc: BatchProcessor, role: str, record: dict[str, Any]) -> list[str]:
    value = proc.codec.encode(SCHEMA[role], record)
    rec = SourceRecord(role, role, 0, 0, b"k", value, record["event_time"])
    batch = proc.process([rec])
    assert not [o for o in batch.out if o.role == "dead_letters"]
    return sorted(o.role for o in batch.out if o.role.startswith("by_"))


def test_a_sale_scan_goes_to_the_institution_stage_for_drug_swap() -> None:
    assert _copied(_processor(), "trace_scan", trace_scan()) == ["by_institution"]


def test_a_stock_in_scan_goes_nowhere_and_is_counted_as_unkeyed() -> None:
    stock_in = trace_scan(scan_type="STOCK_IN", settlement_id=None)
    proc = _processor()
    assert _copied(proc, "trace_scan", stock_in) == []
    assert proc.held() == 0  # in no reorder buffer: no detector keys a stock-in scan
    assert proc.stats.read["trace_scan"] == proc.stats.unkeyed["trace_scan"] == 1
    assert proc.stats.processed["trace_scan"] == 0 and proc.stats.valid_events() == 1


def test_a_sale_scan_waits_for_the_trace_stage() -> None:
    proc = _processor()
    _copied(proc, "trace_scan", trace_scan())
    assert proc.held() == 1 and proc.stats.processed["trace_scan"] == 0  # trace_code_resale


def _waiting_in(proc: BatchProcessor) -> set[str]:
    return {stage for (stage, _), buf in proc.buffers.items() if buf}


def test_a_patients_face_check_skips_the_doctor_stage() -> None:
    proc = _processor()
    _copied(proc, "face_verify", face_verify())
    assert _waiting_in(proc) == {"person"}


def test_a_doctors_clock_in_skips_the_person_stage() -> None:
    proc = _processor()
    clock_in = face_verify(
        subject_type="DOCTOR", subject_id="D360102000001", purpose="CLOCK_IN", settlement_id=None
    )
    _copied(proc, "face_verify", clock_in)
    assert _waiting_in(proc) == {"doctor"}


def test_without_drug_swap_no_scan_is_copied() -> None:
    assert _copied(_processor(without="drug_swap"), "trace_scan", trace_scan()) == []


def test_a_settlement_goes_to_every_stage_that_takes_it() -> None:
    record = settlement(doctor_id="D360102000001", pharmacist_id=None)
    every = ["by_doctor", "by_group", "by_institution"]
    assert _copied(_processor(), "settlement", record) == every
    # a configuration without the peer-group model has nothing to feed at the group stage
    assert _copied(_processor(without="peer_deviation"), "settlement", record) == [
        "by_doctor", "by_institution",
    ]  # fmt: skip
