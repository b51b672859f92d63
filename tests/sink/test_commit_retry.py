"""The sink's offset commits never block and never kill the sink: they are sent without
waiting, confirmed in the commit callback, and re-sent with the next batch until the group
accepts them (a sync commit could block for good across a broker restart)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.sink.service import Sink, SinkStats


class AsyncConsumer:
    def __init__(self, refuse_sends: int = 0) -> None:
        self.refuse_sends = refuse_sends  # commits that raise when sent (no assignment...)
        self.sent: list[dict[tuple[str, int], int]] = []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is True  # a synchronous commit can block the sink
        if self.refuse_sends:
            self.refuse_sends -= 1
            raise KafkaException(KafkaError(KafkaError._NO_OFFSET))
        self.sent.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def answer(self, sink: Sink, err: KafkaError | None = None) -> None:
        """The group's answer to the last commit, as `poll` would deliver it."""
        last = self.sent[-1]
        sink._on_commit(err, [TopicPartition(t, p, o) for (t, p), o in last.items()])


def _sink(consumer: AsyncConsumer) -> Sink:
    sink = object.__new__(Sink)  # only what committing touches
    sink.consumer = consumer  # type: ignore[assignment]
    sink.committed = {}
    sink.stats = SinkStats()
    sink._commit_due = {}
    return sink


def test_a_commit_counts_once_the_group_accepts_it() -> None:
    consumer = AsyncConsumer()
    sink = _sink(consumer)
    sink._commit({("alerts", 0): 10})
    assert sink.committed == {} and sink._commit_due == {("alerts", 0): 10}  # in flight
    consumer.answer(sink)
    assert sink.committed == {("alerts", 0): 10} and sink._commit_due == {}
    assert sink.stats.commit_failures == 0


def test_a_failed_commit_goes_again_with_the_next_batch() -> None:
    consumer = AsyncConsumer()
    sink = _sink(consumer)
    sink._commit({("alerts", 0): 10, ("alerts", 1): 4})
    consumer.answer(sink, KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS))  # broker restart
    assert sink.committed == {} and sink.stats.commit_failures == 1
    sink._commit({("alerts", 0): 12})  # the next batch commits both partitions
    assert consumer.sent[-1] == {("alerts", 0): 12, ("alerts", 1): 4}
    consumer.answer(sink)
    assert sink.committed == {("alerts", 0): 12, ("alerts", 1): 4} and sink._commit_due == {}


def test_a_commit_that_cannot_be_sent_does_not_raise() -> None:
    consumer = AsyncConsumer(refuse_sends=1)
    sink = _sink(consumer)
    sink._commit({("alerts", 0): 10})
    assert sink.stats.commit_failures == 1 and sink._commit_due == {("alerts", 0): 10}
    sink._commit({("alerts", 1): 3})
    assert consumer.sent == [{("alerts", 0): 10, ("alerts", 1): 3}]


def test_an_older_answer_does_not_undo_a_newer_one() -> None:
    consumer = AsyncConsumer()
    sink = _sink(consumer)
    sink._commit({("alerts", 0): 10})
    sink._commit({("alerts", 0): 20})
    consumer.answer(sink)  # the answer to offset 20
    sink._on_commit(None, [TopicPartition("alerts", 0, 10)])  # a late answer to offset 10
    assert sink.committed == {("alerts", 0): 20} and sink._commit_due == {}


def test_a_partly_refused_commit_keeps_the_refused_partitions_due() -> None:
    consumer = AsyncConsumer()
    sink = _sink(consumer)
    sink._commit({("alerts", 0): 10, ("alerts", 1): 5})
    refused = SimpleNamespace(
        topic="alerts", partition=1, offset=5, error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    )  # a TopicPartition's error cannot be set from Python
    sink._on_commit(None, [TopicPartition("alerts", 0, 10), refused])
    assert sink.committed == {("alerts", 0): 10} and sink._commit_due == {("alerts", 1): 5}
