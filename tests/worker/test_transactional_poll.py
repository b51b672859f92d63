"""How the transactional worker reads a batch (a first record, then what follows it within the
linger, never a record of before a rebalance) and where a partition starts when its first offset
is unknown: unit tests with fakes."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from streams.worker import transactional
from streams.worker.transactional import TransactionalWorker


class FakeConsumer:
    """Answers each consume() from a script: (records, what happens during the call)."""

    def __init__(self, script: list[tuple[list[str], Callable[[], None] | None]]) -> None:
        self.script = script
        self.calls: list[tuple[int, float]] = []

    def consume(self, num: int, timeout: float) -> list[str]:
        self.calls.append((num, timeout))
        records, during = self.script.pop(0)
        if during is not None:
            during()
        return records[:num]


def _worker(consumer: FakeConsumer) -> TransactionalWorker:
    worker = object.__new__(TransactionalWorker)  # only what _poll touches
    worker.consumer = consumer  # type: ignore[assignment]
    worker._generation = 0
    return worker


def test_a_batch_is_its_first_record_and_what_follows_within_the_linger() -> None:
    consumer = FakeConsumer([(["a"], None), (["b", "c"], None)])
    assert _worker(consumer)._poll(2000, 0.2, 0.02) == ["a", "b", "c"]
    assert consumer.calls == [(1, 0.2), (1999, 0.02)]  # waits `wait` only for the first


def test_an_idle_poll_waits_once_and_returns_nothing() -> None:
    consumer = FakeConsumer([([], None)])
    assert _worker(consumer)._poll(2000, 0.2, 0.02) == []
    assert consumer.calls == [(1, 0.2)]


def test_a_record_read_before_a_rebalance_is_dropped() -> None:
    """The eager rebalance between the two reads sends every partition back to its committed
    offset, so the first record will be delivered again: processing it now would judge it
    twice (or judge a partition this worker no longer owns)."""
    consumer = FakeConsumer([(["old"], None), (["new-1", "new-2"], None)])
    worker = _worker(consumer)

    def rebalance() -> None:
        worker._generation += 2  # a revocation and an assignment

    consumer.script[1] = (["new-1", "new-2"], rebalance)
    assert worker._poll(2000, 0.2, 0.02) == ["new-1", "new-2"]


def test_a_batch_of_one_reads_once() -> None:
    consumer = FakeConsumer([(["a"], None)])
    assert _worker(consumer)._poll(1, 0.2, 0.02) == ["a"]
    assert consumer.calls == [(1, 0.2)]


class UnknownPartitionConsumer:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def get_watermark_offsets(self, tp, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        return 7, 42


def test_a_first_offset_lookup_that_fails_for_a_moment_is_asked_again(monkeypatch) -> None:
    monkeypatch.setattr(transactional.time, "sleep", lambda s: None)
    consumer = UnknownPartitionConsumer(failures=2)
    offset = TransactionalWorker._low_watermark(consumer, TopicPartition("t", 0))
    assert (offset, consumer.calls) == (7, 3)


def test_a_partition_whose_first_offset_stays_unknown_is_read_from_its_beginning(
    monkeypatch,
) -> None:
    """After a broker restart a partition was once "unknown" to the consumer: the worker died
    on it. It now starts from the beginning of the partition, as auto.offset.reset would."""
    monkeypatch.setattr(transactional.time, "sleep", lambda s: None)
    consumer = UnknownPartitionConsumer(failures=10**6)
    assert TransactionalWorker._low_watermark(consumer, TopicPartition("t", 0)) == OFFSET_BEGINNING
