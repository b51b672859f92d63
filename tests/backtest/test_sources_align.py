"""The backtest's Kafka reader keeps its partitions within ALIGN_MS of event time of each other."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from streams.backtest.sources import ALIGN_MS, _align


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: set[tuple[str, int]] = set()

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in tps}


def test_partitions_ahead_are_paused_and_resumed_when_the_slowest_catches_up() -> None:
    a, b, c = ("settlement", 0), ("settlement", 1), ("trace-scan", 0)
    consumer, paused = FakeConsumer(), set()
    active = {a, b, c}
    read_to = {a: 0, b: ALIGN_MS, c: ALIGN_MS + 1}
    _align(consumer, active, read_to, paused)  # type: ignore[arg-type]
    assert consumer.paused == paused == {c}  # b is exactly at the bound: still read
    read_to[a] = 2  # the slowest moves on
    _align(consumer, active, read_to, paused)  # type: ignore[arg-type]
    assert consumer.paused == set()


def test_the_slowest_partition_is_never_paused_and_finished_ones_do_not_count() -> None:
    a, b = ("settlement", 0), ("settlement", 1)
    consumer, paused = FakeConsumer(), set()
    read_to = {a: 0, b: 10 * ALIGN_MS}
    _align(consumer, {a, b}, read_to, paused)  # type: ignore[arg-type]
    assert consumer.paused == {b}
    _align(consumer, {b}, read_to, paused)  # a finished: b is the slowest now
    assert consumer.paused == set()
