"""Produce test records to Kafka and drain them through a sink."""

from __future__ import annotations

import time
from collections.abc import Iterable

from schemas.codec import Codec
from streams.config import Settings
from streams.kafka.clients import make_producer
from streams.run import Offsets
from streams.sink.service import Sink


def produce(settings: Settings, role: str, items: Iterable[tuple[str | None, bytes]]) -> int:
    """Produce (key, raw value) pairs to the topic of a role; returns how many were delivered."""
    topic = getattr(settings.topics, role).name
    producer = make_producer(settings)
    errors: list[str] = []
    n = 0
    for key, value in items:
        producer.produce(
            topic,
            key=key,
            value=value,
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        producer.poll(0)
        n += 1
    assert producer.flush(30) == 0
    assert not errors, errors
    return n


def encoded(schema: str, records: Iterable[dict], key_field: str) -> list[tuple[str, bytes]]:
    codec = Codec.default()
    return [(r[key_field], codec.encode(schema, r)) for r in records]


def drain(sink: Sink, settings: Settings, roles: Iterable[str], timeout_s: float = 120) -> None:
    """Run the sink until it has committed past the current end of the given topics (and of
    the dead-letter topic, whose records it writes itself)."""
    names = [getattr(settings.topics, r).name for r in roles]
    offsets = Offsets(settings, [*names, settings.topics.dead_letters.name])
    deadline = time.monotonic() + timeout_s
    targets = {k: v for k, v in offsets.read().items() if k[0] in names}

    def done() -> bool:
        assert time.monotonic() < deadline, f"sink did not catch up: {sink.stats.snapshot()}"
        ends = {**targets, **{k: v for k, v in offsets.read().items() if k[0] not in names}}
        return all(sink.committed.get(k, 0) >= v for k, v in ends.items() if v > 0)

    try:
        sink.run(until=done)
    finally:
        offsets.close()
