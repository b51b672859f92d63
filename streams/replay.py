"""Replay the input topics through the detectors in-process: read from the beginning, decode,
merge the partitions by event time, run a `DetectorSet`.

`fundwatch bench` measures it as `replay_eps`. No faust, no state table: the detectors keep
their state in memory (`InMemoryStateStore`). One global `DetectorSet` is not what a worker
runs (state per stage and partition; the peer models see each partition's sample), so
`fundwatch backtest` (streams/backtest/) drives the worker's `BatchProcessor` instead.
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from models.alerts import Alert
from models.runner import DetectorSet
from schemas.codec import Codec, CodecError
from streams.config import Settings
from streams.worker.routing import INPUT_ROLES, TOPIC_OF_SCHEMA

Event = dict[str, Any]


@dataclass
class ReadStats:
    """What a read of the topics saw."""

    events: int = 0
    control: int = 0  # watermark records
    rejected: int = 0  # undecodable or unexpected records (a replay skips them)


def read_events(
    settings: Settings,
    roles: Iterable[str] = INPUT_ROLES,
    codec: Codec | None = None,
    stats: ReadStats | None = None,
    batch: int = 10_000,
    stall_timeout_s: float = 30.0,
) -> Iterator[Event]:
    """Decoded events of the topics of `roles`, from the beginning to their end offsets at the
    start of the read, with `_topic` set as the worker sets it. Per-partition order only: the
    partitions are interleaved as the consumer delivers them (see `merge_by_time`)."""
    codec = codec or Codec.default()
    stats = stats if stats is not None else ReadStats()
    conf = {
        **settings.kafka_common(),
        "group.id": f"fundwatch-replay-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 52_428_800,
    }
    consumer = Consumer(conf)
    try:
        ends: dict[tuple[str, int], int] = {}
        names = [getattr(settings.topics, role).name for role in roles]
        meta = consumer.list_topics(timeout=10)
        assign = []
        for name in names:
            for p in meta.topics[name].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                if high > low:
                    ends[(name, p)] = high
                    assign.append(TopicPartition(name, p, low))
        consumer.assign(assign)
        decode = codec.decode_with_info
        last_data = time.monotonic()
        while ends:
            messages = consumer.consume(batch, timeout=0.1)
            if messages:
                last_data = time.monotonic()
            elif time.monotonic() - last_data > stall_timeout_s:
                raise TimeoutError(f"replay: no records for {stall_timeout_s:.0f}s, missing {ends}")
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"replay consumer error: {err}")
                    continue
                tp = (msg.topic(), msg.partition())
                end = ends.get(tp)
                if end is None:
                    continue
                if msg.offset() + 1 >= end:
                    del ends[tp]
                try:
                    info, event = decode(msg.value())
                except CodecError:
                    stats.rejected += 1
                    continue
                topic = TOPIC_OF_SCHEMA.get(info.name)
                if topic is None:
                    if info.name == "Watermark":
                        stats.control += 1
                    else:
                        stats.rejected += 1
                    continue
                event["_topic"] = topic
                stats.events += 1
                yield event
    finally:
        consumer.close()


def merge_by_time(events: Iterable[Event], lookahead: int = 50_000) -> Iterator[Event]:
    """Events in (event time, topic, event id) order within a bounded reorder window of
    `lookahead` events: the consumer interleaves partitions in chunks, a replay must judge in
    event time as the worker's reorder buffer does."""
    heap: list[tuple[int, str, str, int, Event]] = []
    push, pop = heapq.heappush, heapq.heappop
    for seq, event in enumerate(events):
        push(heap, (event["event_time"], event["_topic"], event["event_id"], seq, event))
        if len(heap) > lookahead:
            yield pop(heap)[4]
    while heap:
        yield pop(heap)[4]


@dataclass
class ReplayResult:
    """Events judged, alerts raised (timers flushed at the end) and wall time."""

    events: int = 0
    alerts: list[Alert] = field(default_factory=list)
    records: int = 0  # aggregator records (institution-hour rows)
    elapsed_s: float = 0.0

    @property
    def eps(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def replay(events: Iterable[Event], detectors: DetectorSet, flush: bool = True) -> ReplayResult:
    """Run events through a detector set in the order given; with `flush`, fire every pending
    timer at the end (the end of the replayed span). The clock starts at the first event, so a
    consumer's connection set-up is not counted."""
    result = ReplayResult()
    t0: float | None = None
    out: deque[Any] = deque()
    process = detectors.process
    n = 0
    for event in events:
        if t0 is None:
            t0 = time.perf_counter()
        n += 1
        found = process(event)
        if found:
            out.extend(found)
    if flush:
        out.extend(detectors.flush())
    result.elapsed_s = time.perf_counter() - t0 if t0 is not None else 0.0
    result.events = n
    for item in out:
        if isinstance(item, Alert):
            result.alerts.append(item)
        else:
            result.records += 1
    return result


def replay_topics(
    settings: Settings, detectors: DetectorSet, roles: Iterable[str] = INPUT_ROLES
) -> ReplayResult:
    """Read the input topics from the beginning, decode, merge by event time and judge: what
    `fundwatch backtest` will run (floor and detectors in one loop)."""
    return replay(merge_by_time(read_events(settings, roles)), detectors)
