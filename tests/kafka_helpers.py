"""Produce test records to Kafka, drain them through a sink, run a sink process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

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


def start_sink_holding_store(env: dict[str, str], data_dir: Path) -> subprocess.Popen:
    """`fundwatch sink` in a subprocess, returned once it owns the embedded store and serves
    read-only queries (its owner file names the query port)."""
    sink = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "sink"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    owner = data_dir / "clickhouse.owner.json"
    deadline = time.monotonic() + 60
    while "query_port" not in (owner.read_text() if owner.exists() else ""):
        if sink.poll() is not None or time.monotonic() > deadline:
            sink.kill()
            raise AssertionError(f"the sink never owned the store: {sink.stderr.read()[-2000:]}")
        time.sleep(0.2)
    return sink


def with_own_topics(settings: Settings, roles: Iterable[str], tag: str) -> Settings:
    """`settings` with the topics of `roles` renamed `<role>-<tag>-<random>`: a test's own."""
    import uuid

    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(
        update={
            role: getattr(settings.topics, role).model_copy(
                update={"name": f"{role}-{tag}-{suffix}"}
            )
            for role in roles
        }
    )
    return settings.model_copy(update={"topics": topics})
