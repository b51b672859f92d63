"""A broker that restarts under the sink delays a batch; it never ends the sink's loop and never
loses a dead letter (unit tests with fakes; `tests/faults/test_broker_restart.py` does it for
real)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.sink import service
from streams.sink.service import DeadLettersUndelivered, Sink, SinkStats


class FakeMessage:
    def __init__(self, key: bytes, value: bytes, ts: int) -> None:
        self._key, self._value, self._ts = key, value, ts

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return 1, self._ts


class RefusingProducer:
    """Refuses the first `refusals` deliveries (as after a broker restart), then delivers."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.queued: list[tuple[FakeMessage, Any]] = []
        self.delivered: list[tuple[bytes, bytes, int]] = []
        self.produced = 0

    def produce(self, topic: str, key: bytes, value: bytes, timestamp: int, on_delivery) -> None:
        self.produced += 1
        self.queued.append((FakeMessage(key, value, timestamp), on_delivery))

    def flush(self, timeout: float) -> int:
        queued, self.queued = self.queued, []
        for msg, callback in queued:
            if self.refusals:
                self.refusals -= 1
                callback(KafkaError(KafkaError._MSG_TIMED_OUT), msg)
            else:
                self.delivered.append((msg.key(), msg.value(), msg.timestamp()[1]))
                callback(None, msg)
        return 0


class PolledMessage(FakeMessage):
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        super().__init__(b"k", b"v", 0)
        self._tp = (topic, partition, offset)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._tp[0]

    def partition(self) -> int:
        return self._tp[1]

    def offset(self) -> int:
        return self._tp[2]


class PausingConsumer:
    def __init__(self) -> None:
        self.paused: list[TopicPartition] = []
        self.polls = 0
        self.arrivals: list[PolledMessage] = []  # returned by the next polls
        self.seeks: list[tuple[str, int, int]] = []
        self.resumed: list[tuple[str, int]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("settlement", 0)]

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused += list(tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.resumed += [(tp.topic, tp.partition) for tp in tps]
        self.paused = []

    def poll(self, timeout: float) -> PolledMessage | None:
        self.polls += 1
        return self.arrivals.pop(0) if self.arrivals else None

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list:
        raise KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS))


def _sink(producer: RefusingProducer | None = None) -> Sink:
    sink = object.__new__(Sink)  # only what the tested methods touch
    sink.consumer = PausingConsumer()  # type: ignore[assignment]
    sink.producer = producer  # type: ignore[assignment]
    sink.stats = SinkStats()
    sink.committed = {}
    sink.dead_letter_topic = "dead-letters"
    sink._undelivered = []
    sink._stop = threading.Event()
    sink._abandoned = False
    return sink


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(10**6))
    monkeypatch.setattr(service.time, "monotonic", lambda: next(clock) * 0.25)


def _letter(sink: Sink, n: int) -> None:
    msg = FakeMessage(b"settlement", f"letter {n}".encode(), 1_000 + n)
    sink.producer.produce(sink.dead_letter_topic, msg.key(), msg.value(), 1_000 + n,
                          on_delivery=sink._on_delivery)  # fmt: skip


def test_refused_dead_letters_are_sent_again_until_delivered() -> None:
    producer = RefusingProducer(refusals=3)
    sink = _sink(producer)
    for n in range(2):
        _letter(sink, n)
    sink._deliver_dead_letters()  # returns once both are delivered; raises nothing
    assert sorted(producer.delivered) == [
        (b"settlement", b"letter 0", 1_000),
        (b"settlement", b"letter 1", 1_001),
    ]
    assert producer.produced == 2 + 3  # each refusal sent again once
    assert sink.consumer.paused == [] and sink.consumer.polls > 0  # paused, polled, resumed
    assert sink.stats.state == "running"


def test_delivered_dead_letters_pause_nothing() -> None:
    producer = RefusingProducer(refusals=0)
    sink = _sink(producer)
    _letter(sink, 0)
    sink._deliver_dead_letters()
    assert len(producer.delivered) == 1 and sink.consumer.polls == 0


def test_a_stop_while_dead_letters_are_refused_abandons_the_batch() -> None:
    producer = RefusingProducer(refusals=10**6)
    sink = _sink(producer)
    _letter(sink, 0)
    sink._stop.set()
    with pytest.raises(DeadLettersUndelivered, match="not committed"):
        sink._deliver_dead_letters()
    assert sink._abandoned and producer.delivered == []


def test_an_assignment_whose_committed_offsets_cannot_be_read_is_kept() -> None:
    """A coordinator still loading after a broker restart makes `committed()` raise inside the
    rebalance callback; raised there, it would end the sink's consume loop."""
    sink = _sink()
    tps = [TopicPartition("settlement", p) for p in range(3)]
    sink._on_assign(sink.consumer, tps)
    assert sink.stats.assigned == 3 and sink.committed == {}


def test_a_record_of_a_partition_assigned_during_the_pause_is_read_again() -> None:
    """Polled while the batch waits (a partition assigned meanwhile is not paused), a record
    must not be dropped: its partition is rewound to it, paused, and resumed with the rest."""
    producer = RefusingProducer(refusals=1)
    sink = _sink(producer)
    sink.consumer.arrivals = [PolledMessage("alerts", 3, 42)]
    _letter(sink, 0)
    sink._deliver_dead_letters()
    assert sink.consumer.seeks == [("alerts", 3, 42)]
    assert ("alerts", 3) in sink.consumer.resumed and ("settlement", 0) in sink.consumer.resumed
