"""A stage judges an event id once (a producer's retry is acknowledged, not judged again) for at
least `DEDUP_HORIZON_MS` behind its watermark, and forgets it after that."""

from __future__ import annotations

import itertools
from typing import Any

from models.runner import default_detectors
from streams.worker.processor import DEDUP_HORIZON_MS, BatchProcessor, SourceRecord
from tests.records import T0, settlement

MINUTE = 60_000
_offsets = itertools.count()


def _processor() -> BatchProcessor:
    return BatchProcessor(default_detectors(), {}, partitions=1, now_ms=lambda: None)


def _record(proc: BatchProcessor, role: str, schema: str, value: dict[str, Any]) -> SourceRecord:
    data = proc.codec.encode(schema, value)
    return SourceRecord(role, role, 0, next(_offsets), b"k", data, None)


def _progress(proc: BatchProcessor, t: int) -> list[SourceRecord]:
    """Watermarks on every input: the person stage's events before `t` can be judged, and the
    processor promises `t` to the repartition topics."""
    wm = {"source": "test", "watermark_time": t}
    return [_record(proc, r, "Watermark", wm) for r in ("settlement", "face_verify", "trace_scan")]


def _settlement(proc: BatchProcessor, **over: Any) -> SourceRecord:
    return _record(proc, "settlement", "SettlementEvent", settlement(**over))


def test_an_event_delivered_again_within_the_horizon_is_judged_once() -> None:
    proc = _processor()
    proc.process([_settlement(proc), *_progress(proc, T0 + 20 * MINUTE)])
    assert proc.stats.processed["settlement"] == 1
    proc.process([_settlement(proc), *_progress(proc, T0 + DEDUP_HORIZON_MS)])
    assert proc.stats.processed["settlement"] == 1
    assert proc.stats.duplicates["settlement"] == 1


def test_another_event_id_is_not_a_duplicate() -> None:
    proc = _processor()
    proc.process([_settlement(proc), *_progress(proc, T0 + 20 * MINUTE)])
    proc.process([_settlement(proc, event_id="ST00000002"), *_progress(proc, T0 + 30 * MINUTE)])
    assert proc.stats.processed["settlement"] == 2
    assert proc.stats.duplicates["settlement"] == 0


def test_an_event_delivered_again_long_after_the_horizon_is_judged_again() -> None:
    proc = _processor()
    proc.process([_settlement(proc), *_progress(proc, T0 + 20 * MINUTE)])
    # three horizons later the whole hour of T0 is more than a horizon behind the watermark
    later = T0 + 3 * DEDUP_HORIZON_MS + 20 * MINUTE
    proc.process(_progress(proc, later))
    proc.process([_settlement(proc), *_progress(proc, later + MINUTE)])
    assert proc.stats.processed["settlement"] == 2
    assert proc.stats.duplicates["settlement"] == 0


def test_the_copies_of_one_settlement_for_two_staff_are_not_duplicates() -> None:
    """The doctor stage gets one copy per staff member, under the same event id."""
    proc = _processor()
    record = _settlement(proc, doctor_id="D360102000001", pharmacist_id="Y360102000002")
    batch = proc.process([record, *_progress(proc, T0 + 20 * MINUTE)])
    copies = [
        SourceRecord(o.role, o.role, 0, next(_offsets), o.key, bytes(o.value), o.timestamp_ms)
        for o in batch.out
        if o.role == "by_doctor" and o.key != b"__watermark__"
    ]
    assert len(copies) == 2
    proc.process(copies)
    promise = next(o for o in batch.out if o.role == "by_doctor" and o.key == b"__watermark__")
    proc.process([SourceRecord("by_doctor", "by_doctor", 0, next(_offsets), promise.key,
                               bytes(promise.value), None)])  # fmt: skip
    assert proc.stats.processed["by_doctor"] == 2
    assert proc.stats.duplicates["by_doctor"] == 0
