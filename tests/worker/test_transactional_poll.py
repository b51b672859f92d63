"""How the transactional worker reads a batch (unit tests with a fake consumer): a first record,
then what follows it within the linger, and never a record of before a rebalance."""

from __future__ import annotations

from collections.abc import Callable

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
