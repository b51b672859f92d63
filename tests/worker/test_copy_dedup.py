"""A record forwarded twice around a crash is judged once, even when a restart separates the
two copies (the in-memory event-id dedup would not see the first one)."""

from __future__ import annotations

from typing import Any

from models.aggregates import InstitutionHourAggregator
from models.runner import default_detectors
from streams.worker.processor import (
    BatchProcessor,
    OutRecord,
    SourceRecord,
    origin_header,
    parse_origin,
)
from tests.records import settlement


def _processor(table: dict[str, Any]) -> BatchProcessor:
    detectors = [*default_detectors(), InstitutionHourAggregator()]
    return BatchProcessor(detectors, table, partitions=1, now_ms=lambda: None)


def _forward(proc: BatchProcessor, record: dict[str, Any], offset: int) -> list[OutRecord]:
    value = proc.codec.encode("SettlementEvent", record)
    rec = SourceRecord("settlement", "s", 0, offset, b"p", value, record["event_time"])
    return [o for o in proc.process([rec]).out if o.role == "by_institution"]


def _copy(out: OutRecord, offset: int) -> SourceRecord:
    return SourceRecord(
        out.role, out.role, 0, offset, out.key, out.value, out.timestamp_ms, offset, out.origin
    )


def _save(proc: BatchProcessor, table: dict[str, Any]) -> None:
    for _, key, state in proc.dirty_state():
        if state is None:
            table.pop(key, None)
        else:
            table[key] = state


def test_copies_carry_their_origin_and_the_header_round_trips() -> None:
    proc = _processor({})
    (out,) = _forward(proc, settlement(event_time=1_795_000_000_000), 7)
    assert out.origin == ("settlement", 0, 7, 0)
    name, value = origin_header(out.origin)
    assert parse_origin(value) == out.origin and name == "fw-origin"
    assert parse_origin(b"garbage") is None


def test_a_second_copy_after_a_restart_is_dropped_and_counted() -> None:
    table: dict[str, Any] = {}
    first = _processor(table)
    record = settlement(event_time=1_795_000_000_000)
    (copy,) = _forward(first, record, 7)
    batch = first.process([_copy(copy, 0)])  # the first copy: read (and held or judged)
    assert first.stats.duplicates["by_institution"] == 0
    _save(first, table)  # its checkpoint: the copy's origin is the partition's high-water mark

    # The forwarding worker had crashed before its own checkpoint, so the record was forwarded
    # again; a new process (after a second crash) reads from the commit: the first copy, which
    # the checkpoint still held, then the second.
    second = _processor(table)
    batch = second.process([_copy(copy, 0), _copy(copy, 1)])
    assert second.stats.duplicates["by_institution"] == 1
    assert 1 in batch.done  # acknowledged, not judged
    again = _forward(second, settlement(event_time=1_795_000_060_000, event_id="ST2"), 8)
    batch = second.process([_copy(again[0], 2)])  # a later input record is judged as usual
    assert second.stats.duplicates["by_institution"] == 1
