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
    proc = new_processor(SerializedTable(), lambda topic, p: 0)
    proc.process(settlements[0:2])
    batch = proc.process([settlements[5]])  # offsets 2..4 not read yet
    assert batch.rewind == [("settlement", 0, 2)]  # the consumer is asked to read them again
    assert proc.waiting_for_gap() == 1 and proc.stats.read["settlement"] == 2
    assert proc.reading("settlement", 0) == (
        "read 0..1 since assigned; 1 records from offset 5 wait for the gap"
    )
    proc.process(settlements[2:5])
    assert proc.waiting_for_gap() == 0 and proc.stats.read["settlement"] == 6
    assert proc.reading("settlement", 0) == "read 0..5 since assigned"


def test_a_waiting_record_delivered_again_is_replaced(settlements: list[SourceRecord]) -> None:
    proc = new_processor(SerializedTable(), lambda topic, p: 0)
    proc.process(settlements[0:2])
    stale = settlements[4]
    proc.process([stale])  # the old fetch position
    r = stale
    again = SourceRecord(r.role, r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms,
                         ("again", r.offset))  # fmt: skip
    batch = proc.process([again])  # delivered again while the first copy waits
    assert stale.ref not in batch.done and proc.waiting_for_gap() == 1  # replaced, not acked
    assert proc.lowest_held("settlement", 0) <= 2  # nothing past the gap is committed
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
    proc = new_processor(SerializedTable(), lambda topic, p: 0)
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


def test_after_a_restart_the_first_record_must_be_where_the_consumer_restarts(
    settlements: list[SourceRecord],
) -> None:
    """A reopened partition expects each source at its restart offset (the commit): a record
    past it waits; nothing is committed past the gap meanwhile."""
    table = SerializedTable()
    first = new_processor(table, lambda topic, p: 0)
    first.process(settlements[0:6])
    for _, key, state in first.dirty_state():
        table[key] = state
    asked = []

    def committed(topic: str, partition: int) -> int:
        asked.append((topic, partition))
        return 3

    restarted = new_processor(table, committed)
    restarted.process([settlements[8]])  # handed over before the seek
    assert restarted.waiting_for_gap() == 1 and restarted.lowest_held("settlement", 0) == 3
    restarted.process(settlements[3:8])  # the seek: from the commit
    assert restarted.waiting_for_gap() == 0
    assert restarted.reading("settlement", 0) == "read 3..8 since assigned"
    assert asked == [("settlement", 0)]  # once per source while the partition is open


def test_a_gap_that_stays_open_is_asked_for_again(
    settlements: list[SourceRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust can drop the re-read gap (it delivered later records meanwhile): the worker's
    timer asks for it again every GAP_REWIND_S, without new records arriving."""
    clock = [1000.0]
    monkeypatch.setattr(processor_module.time, "monotonic", lambda: clock[0])
    proc = new_processor(SerializedTable(), lambda topic, p: 0)
    proc.process(settlements[0:2])
    batch = proc.process(settlements[4:6])
    assert batch.rewind == [("settlement", 0, 2)]
    assert proc.due_rewinds() == []  # just asked
    clock[0] += processor_module.GAP_REWIND_S
    assert proc.due_rewinds() == [("settlement", 0, 2)]
    assert proc.due_rewinds() == []
    proc.process(settlements[2:4])  # the gap is read: nothing more to ask
    clock[0] += processor_module.GAP_REWIND_S
    assert proc.due_rewinds() == [] and proc.waiting_for_gap() == 0
