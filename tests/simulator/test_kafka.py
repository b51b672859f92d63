"""tiny through the real local broker: every record arrives, keyed, timestamped, decodable."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter

import pytest

from schemas.codec import Codec
from streams.config import Settings
from streams.kafka.clients import make_consumer
from streams.simulator import SimConfig, Simulation, produce_to_kafka

from .conftest import START

pytestmark = pytest.mark.integration

KEYS = {
    "settlement": "person_id",
    "trace_scan": "trace_code",
    "face_verify": "subject_id",
    "sim_labels": "label_id",
}


def test_tiny_to_kafka(isolated_settings: Settings):
    sim = Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=3))
    summary = produce_to_kafka(isolated_settings, sim.records())
    expected = {**summary.events, "sim_labels": sum(summary.labels.values())}
    assert summary.total_events > 1000 and expected["sim_labels"] > 0
    _assert_delivered(isolated_settings, expected)


def test_ctrl_c_stops_producing_and_delivers_what_was_produced(isolated_settings: Settings):
    """SIGINT while producing sets a flag the loop checks (raised as KeyboardInterrupt inside a
    delivery callback that `poll` runs, it made confluent-kafka return NULL: a SystemError
    instead of an interruption); what was produced is flushed, and Ctrl-C raises again after."""
    sim = Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=3))

    def records():
        for n, rec in enumerate(sim.records()):
            if n == 3_000:
                os.kill(os.getpid(), signal.SIGINT)
            yield rec

    summary = produce_to_kafka(isolated_settings, records())
    assert summary.interrupted
    assert 2_000 < summary.total_events + sum(summary.labels.values()) <= 3_001
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _assert_delivered(
        isolated_settings, {**summary.events, "sim_labels": sum(summary.labels.values())}
    )


def _assert_delivered(isolated_settings: Settings, expected: dict[str, int]) -> None:
    """Every produced record is on its topic, keyed and timestamped, and decodes."""
    topics = {getattr(isolated_settings.topics, f).name: f for f in KEYS}
    consumer = make_consumer(isolated_settings, f"sim-test-{uuid.uuid4().hex[:8]}")
    consumer.subscribe(list(topics))
    codec = Codec.default()
    got: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    try:
        while sum(got.values()) < sum(expected.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(5000, timeout=1.0):
                assert msg.error() is None, msg.error()
                field = topics[msg.topic()]
                info, record = codec.decode_with_info(msg.value())
                if info.name == "Watermark":  # event-time promises, not records
                    continue
                assert msg.key().decode() == record[KEYS[field]]
                assert msg.timestamp()[1] == record.get("event_time")
                got[field] += 1
    finally:
        consumer.close()
    assert dict(got) == expected
