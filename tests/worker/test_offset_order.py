"""The processor judges each source's records in offset order without a gap
(`BatchProcessor._in_offset_order`): a record that arrives past the next expected offset
waits, unacknowledged, until the offsets before it are read."""

from __future__ import annotations

import pytest

from streams.worker import processor as processor_module
from streams.worker.processor import SourceRecord
from tests.worker.test_restart import SerializedTable, make_log, new_processor


@pytest.fixture(scope="module")
def settlements() -> list[SourceRecord]:
    log = make_log(days=1)
    return [
        SourceRecord("settlement", "settlement", 0, offset, key, value, ts, ("copy", offset))
        for offset, (key, value, ts, _) in enumerate(log.records[("settlement", 0)][:12])
    ]


def test_a_record_past_a_gap_waits_for_the_gap(settlements: list[SourceRecord]) -> None:
    proc = new_processor(SerializedTable(), in_order=True)
    proc.process(settlements[0:2])
    proc.process([settlements[5]])  # offsets 2..4 not read yet
    assert proc.waiting_for_gap() == 1 and proc.stats.read["settlement"] == 2
    assert proc.reading("settlement", 0) == (
        "read 0..1 since assigned; 1 records from offset 5 wait for the gap"
    )
    proc.process(settlements[2:5])
    assert proc.waiting_for_gap() == 0 and proc.stats.read["settlement"] == 6
    assert proc.reading("settlement", 0) == "read 0..5 since assigned"


def test_a_waiting_record_delivered_again_is_replaced(settlements: list[SourceRecord]) -> None:
    proc = new_processor(SerializedTable(), in_order=True)
    proc.process(settlements[0:2])
    stale = settlements[4]
    proc.process([stale])  # the old fetch position
    r = stale
    again = SourceRecord(r.role, r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms,
                         ("again", r.offset))  # fmt: skip
    batch = proc.process([again])  # delivered again while the first copy waits
    assert stale.ref in batch.done and proc.waiting_for_gap() == 1  # released, not judged
    proc.process(settlements[2:4])
    assert proc.waiting_for_gap() == 0
    assert proc.stats.read["settlement"] == 5  # 0..4, offset 4 once


def test_a_gap_that_stays_open_is_taken_as_final(
    settlements: list[SourceRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets deleted by retention never arrive: after GAP_PATIENCE_S the waiting records
    are judged."""
    clock = [1000.0]
    monkeypatch.setattr(processor_module.time, "monotonic", lambda: clock[0])
    proc = new_processor(SerializedTable(), in_order=True)
    proc.process(settlements[0:2])
    proc.process(settlements[7:9])
    assert proc.waiting_for_gap() == 2
    clock[0] += processor_module.GAP_PATIENCE_S - 1
    proc.process([])
    assert proc.waiting_for_gap() == 2
    clock[0] += 2
    proc.process(settlements[9:10])
    assert proc.waiting_for_gap() == 0 and proc.stats.read["settlement"] == 5
    assert proc.reading("settlement", 0) == "read 0..9 since assigned"


def test_after_a_restart_the_first_record_must_be_at_the_checkpoint(
    settlements: list[SourceRecord],
) -> None:
    """A processor opened from a checkpoint expects its source at the lowest offset the
    checkpoint still held (or its next offset): a record past it waits."""
    table = SerializedTable()
    first = new_processor(table, in_order=True)
    first.process(settlements[0:6])
    for _, key, state in first.dirty_state():
        table[key] = state
    restarted = new_processor(table, in_order=True)
    restarted.process([settlements[8]])  # handed over before the seek
    assert restarted.waiting_for_gap() == 1
    restarted.process(settlements[0:8])  # the seek: from the commit (nothing acknowledged)
    assert restarted.waiting_for_gap() == 0
