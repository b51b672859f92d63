"""The sink's offset commit rides out a moving coordinator and never kills the sink."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.sink import service
from streams.sink.service import Sink, SinkStats


class FlakyConsumer:
    def __init__(self, failures: list[int]) -> None:
        self.failures = failures  # error codes raised by the next commits, in order
        self.commits: list[dict[tuple[str, int], int]] = []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.failures:
            raise KafkaException(KafkaError(self.failures.pop(0)))
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})


def _sink(consumer: FlakyConsumer) -> Sink:
    sink = object.__new__(Sink)  # only what _commit touches
    sink.consumer = consumer  # type: ignore[assignment]
    sink.committed = {}
    sink.stats = SinkStats()
    sink._commit_due = {}
    return sink


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.time, "sleep", lambda s: None)


def test_a_coordinator_that_moves_is_waited_for() -> None:
    consumer = FlakyConsumer([KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS])
    sink = _sink(consumer)
    sink._commit({("alerts", 0): 10})
    assert consumer.commits == [{("alerts", 0): 10}]
    assert sink.committed == {("alerts", 0): 10} and sink.stats.commit_failures == 0


def test_a_refused_commit_is_left_to_the_next_one_without_raising() -> None:
    consumer = FlakyConsumer([KafkaError.ILLEGAL_GENERATION])
    sink = _sink(consumer)
    sink._commit({("alerts", 0): 10, ("alerts", 1): 4})  # the group rebalanced meanwhile
    assert consumer.commits == [] and sink.stats.commit_failures == 1
    assert sink.committed == {}
    sink._commit({("alerts", 0): 12})  # the next batch commits both partitions
    assert consumer.commits == [{("alerts", 0): 12, ("alerts", 1): 4}]
    assert sink.committed == {("alerts", 0): 12, ("alerts", 1): 4}


def test_waiting_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "COMMIT_PATIENCE_S", 1.0)
    consumer = FlakyConsumer([KafkaError.NOT_COORDINATOR] * 100)
    sink = _sink(consumer)
    clock = iter(range(0, 1000))
    monkeypatch.setattr(service.time, "monotonic", lambda: next(clock) * 0.3)
    sink._commit({("alerts", 0): 10})
    assert sink.stats.commit_failures == 1 and consumer.commits == []
