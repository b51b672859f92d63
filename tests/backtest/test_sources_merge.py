"""The backtest's Kafka reader merges its partitions in event time, whatever librdkafka fetched."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from streams.backtest import sources
from streams.backtest.sources import SourceStats, _consume, _pause_far_ahead


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, ts: int) -> None:
        self._t, self._p, self._o, self._ts = topic, partition, offset, ts

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"


class FakeConsumer:
    """Hands out pre-planned fetches: one whole partition first, as librdkafka may."""

    def __init__(self, fetches: list[list[Msg]]) -> None:
        self.fetches = fetches
        self.paused: set[tuple[str, int]] = set()

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Msg]:
        return self.fetches.pop(0) if self.fetches else []

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in tps}

    def close(self) -> None:
        pass


def _read(fetches: list[list[Msg]], bounds: dict[tuple[str, int], tuple[int, int]]) -> list[Any]:
    consumer = FakeConsumer(fetches)
    topics = {"settlement": "s", "trace_scan": "t"}
    records = _consume(consumer, bounds, topics, 0, 10**9, SourceStats(), None, 5.0)  # type: ignore[arg-type]
    return [(r.topic, r.offset, r.timestamp_ms) for r in records]


def test_a_partition_fetched_whole_first_is_merged_in_event_time() -> None:
    s = [Msg("s", 0, i, 100 * i) for i in range(5)]  # times 0..400
    t = [Msg("t", 0, i, 100 * i + 50) for i in range(5)]  # times 50..450
    got = _read([s, t[:2], t[2:]], {("s", 0): (0, 5), ("t", 0): (0, 5)})
    assert [ts for _, _, ts in got] == sorted(ts for _, _, ts in got)
    assert len(got) == 10


def test_nothing_is_lost_or_doubled_when_fetches_overlap() -> None:
    s = [Msg("s", 0, i, 10 * i) for i in range(4)]
    got = _read([s[:3], s[1:]], {("s", 0): (0, 4)})  # a refetch after a resume
    assert [off for _, off, _ in got] == [0, 1, 2, 3]


def test_far_ahead_partitions_pause_only_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_AHEAD", 10)
    a, b = ("s", 0), ("s", 1)
    consumer, paused = FakeConsumer([]), set()
    read_to = {a: 0, b: 1_000}
    _pause_far_ahead(consumer, {a, b}, read_to, paused, 10)  # type: ignore[arg-type]
    assert consumer.paused == set()  # at the bound: a small world is never paused
    _pause_far_ahead(consumer, {a, b}, read_to, paused, 11)  # type: ignore[arg-type]
    assert consumer.paused == paused == {b}  # the slowest (a) keeps reading
    _pause_far_ahead(consumer, {a, b}, read_to, paused, 6)  # type: ignore[arg-type]
    assert consumer.paused == {b}  # hysteresis: resumes below half
    _pause_far_ahead(consumer, {a, b}, read_to, paused, 4)  # type: ignore[arg-type]
    assert consumer.paused == set()
