"""Repartitioned copies of a record this process just forwarded are not decoded again."""

from __future__ import annotations

from typing import Any

import pytest

from models.aggregates import InstitutionHourAggregator
from models.runner import default_detectors
from schemas.codec import Codec
from streams.worker import processor as processor_module
from streams.worker.processor import BatchProcessor, SourceRecord
from tests.records import settlement


def _processor() -> BatchProcessor:
    detectors = [*default_detectors(), InstitutionHourAggregator()]
    return BatchProcessor(detectors, {}, partitions=4, now_ms=lambda: None)


def _copies(proc: BatchProcessor, record: dict[str, Any]) -> list[SourceRecord]:
    value = proc.codec.encode("SettlementEvent", record)
    rec = SourceRecord("settlement", "settlement", 0, 0, b"p", value, record["event_time"])
    batch = proc.process([rec])
    return [
        SourceRecord(o.role, o.role, 0, i, o.key, bytes(o.value), o.timestamp_ms)  # new bytes
        for i, o in enumerate(batch.out)
        if o.role.startswith("by_")
    ]


def test_copies_come_back_as_the_decoded_event_without_a_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = _processor()
    record = settlement(doctor_id="D360102000001", pharmacist_id="Y360102000002")
    copies = _copies(proc, record)
    roles = sorted(c.role for c in copies)
    assert roles == ["by_doctor", "by_doctor", "by_group", "by_institution"]
    reference = Codec.default()
    calls = []
    original = proc.codec.decode_with_info
    monkeypatch.setattr(proc.codec, "decode_with_info", lambda v: calls.append(v) or original(v))
    for copy in copies:
        event = proc._decode(copy)
        expected = {**reference.decode(copy.value), "_topic": "settlement"}
        if copy.role == "by_doctor":
            expected["_route"] = copy.key.decode()
        assert event == expected, copy.role
    assert calls == []  # every copy from the cache
    routes = [proc._decode(c).get("_route") for c in copies if c.role == "by_doctor"]
    assert sorted(routes) == ["D360102000001", "Y360102000002"]  # one per copy, not shared


def test_the_cache_is_bounded_and_a_miss_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_module, "FORWARDED_CACHE", 3)
    proc = _processor()
    copies = [
        _copies(proc, settlement(event_id=f"S{i}", event_time=1_795_000_000_000 + i))
        for i in range(5)
    ]
    assert len(proc._forwarded_events) == 3
    oldest = next(c for c in copies[0] if c.role == "by_institution")
    assert oldest.value not in proc._forwarded_events
    assert proc._decode(oldest)["event_id"] == "S0"  # decoded from its bytes
