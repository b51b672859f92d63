"""A record is copied to a repartition topic only when a detector of that stage takes it."""

from __future__ import annotations

from typing import Any

from models.aggregates import InstitutionHourAggregator
from models.runner import default_detectors
from streams.worker.processor import BatchProcessor, SourceRecord
from tests.records import settlement, trace_scan

SCHEMA = {"settlement": "SettlementEvent", "trace_scan": "TraceScanEvent"}


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


def test_a_stock_in_scan_is_not_copied_no_institution_detector_takes_it() -> None:
    stock_in = trace_scan(scan_type="STOCK_IN", settlement_id=None)
    proc = _processor()
    assert _copied(proc, "trace_scan", stock_in) == []
    assert proc.stats.read["trace_scan"] == 1  # read, and waiting for the trace stage


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
