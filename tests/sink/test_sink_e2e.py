"""End to end on the real broker and chDB: N records in, exactly N rows out, replays idempotent,
bad records dead-lettered with their bytes and reason, and the counts reconcile."""

from __future__ import annotations

import os

import pytest

from schemas.codec import Codec
from streams.sink.service import SINK_ROLES, Sink
from tests.kafka_helpers import drain, encoded, produce
from tests.records import face_verify, settlement, trace_scan

pytestmark = pytest.mark.integration

N = 1500


def _settlements(n: int) -> list[dict]:
    return [settlement(event_id=f"ST{i:08d}", person_id=f"3601020000{i:010d}",
                       event_time=1_795_000_000_000 + i * 1000) for i in range(n)]  # fmt: skip


def _count(store, table: str) -> int:
    return store.scalar(f"SELECT count() FROM `{store.database}`.`{table}` FINAL")


def test_n_records_become_n_rows_and_a_replay_adds_none(isolated_settings, store) -> None:
    settings = isolated_settings
    produce(settings, "settlement", encoded("SettlementEvent", _settlements(N), "person_id"))
    scans = [trace_scan(event_id=f"TS{i:08d}", trace_code=f"8123456{i:013d}") for i in range(300)]
    produce(settings, "trace_scan", encoded("TraceScanEvent", scans, "trace_code"))
    faces = [face_verify(event_id=f"FV{i:08d}") for i in range(200)]
    produce(settings, "face_verify", encoded("FaceVerifyEvent", faces, "subject_id"))

    sink = Sink(settings, store)
    drain(sink, settings, SINK_ROLES)
    assert _count(store, "settlements") == N
    assert _count(store, "settlement_items") == 2 * N
    assert _count(store, "trace_scans") == 300
    assert _count(store, "face_verifications") == 200
    read = sum(s.read for s in sink.stats.topics.values())
    stored = sum(s.stored for s in sink.stats.topics.values())
    assert read == stored == N + 300 + 200

    # A second group re-reads the same offsets from the start: rows are replaced, not added.
    again = Sink(settings, store, group_id=settings.consumer_group + "-replay")
    drain(again, settings, SINK_ROLES)
    assert sum(s.stored for s in again.stats.topics.values()) == N + 500
    assert _count(store, "settlements") == N
    assert store.scalar(f"SELECT uniqExact(event_id) FROM `{store.database}`.settlements") == N
    person = store.scalar(f"SELECT any(person_id) FROM `{store.database}`.settlements")
    assert person.startswith("p_")  # pseudonyms, never the clear id


def test_bad_records_are_dead_lettered_with_bytes_and_reason(isolated_settings, store) -> None:
    settings = isolated_settings
    codec = Codec.default()
    good = encoded("SettlementEvent", _settlements(50), "person_id")
    valid = codec.encode("SettlementEvent", settlement())
    unknown = valid[:2] + b"\x01\x02\x03\x04\x05\x06\x07\x08" + valid[10:]
    wrong_topic = codec.encode("TraceScanEvent", trace_scan())
    bad = [  # one key: one partition, so they keep their order
        ("bad", b"not avro at all" + os.urandom(48)),
        ("bad", valid[: len(valid) // 2]),
        ("bad", unknown),
        ("bad", wrong_topic),
    ]
    produce(settings, "settlement", good + bad)

    sink = Sink(settings, store)
    drain(sink, settings, ("settlement", "dead_letters"))

    stats = sink.stats.topics[settings.topics.settlement.name]
    assert stats.read == 54 and stats.stored == 50 and stats.dead_lettered == 4
    assert _count(store, "settlements") == 50
    rows = store.query_rows(
        f"SELECT source_offset, reason_code, reason, value FROM `{store.database}`.dead_letters "
        "FINAL ORDER BY source_partition, source_offset",
        column_formats={"value": "bytes"},
    )
    assert [r[1] for r in rows] == [
        "not_single_object", "corrupt_avro", "unknown_fingerprint", "unexpected_schema",
    ]  # fmt: skip
    assert len({r[0] for r in rows}) == 4
    assert rows[2][3] == unknown  # raw bytes kept exactly
    assert all(r[2] for r in rows)  # every reason is spelled out


def test_a_batch_with_an_alert_is_stored_without_waiting_for_the_batch_deadline(
    isolated_settings, store
) -> None:
    """Events wait for `sink_batch_seconds` (here 60 s: large inserts); a batch holding an alert
    is stored once it is `sink_alert_flush_seconds` old, so analysts see alerts at once."""
    import threading
    import time

    from tests.records import alert

    settings = isolated_settings.model_copy(
        update={"sink_batch_seconds": 60.0, "sink_alert_flush_seconds": 0.1}
    )
    sink = Sink(settings, store)
    worker = threading.Thread(target=sink.run, daemon=True)
    worker.start()
    try:
        produce(settings, "settlement", encoded("SettlementEvent", _settlements(20), "person_id"))
        deadline = time.monotonic() + 30
        while sink.stats.topics[settings.topics.settlement.name].read < 20:
            assert time.monotonic() < deadline, "the sink read nothing"
            time.sleep(0.05)
        time.sleep(1.0)
        assert sink.stats.batches == 0  # events alone wait for the 60 s deadline
        produce(settings, "alerts", encoded("Alert", [alert(alert_id="A-fast")], "entity_id"))
        while sink.stats.batches == 0:
            assert time.monotonic() < deadline, "the alert's batch was not stored"
            time.sleep(0.05)
    finally:
        sink.stop()
        worker.join(30)
    assert _count(store, "alerts") == 1
    assert _count(store, "settlements") == 20  # the events of that batch went with it
