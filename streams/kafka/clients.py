"""Build confluent-kafka clients from the settings, with the project's defaults.

Producers use the murmur2 partitioner (as the Java client and aiokafka do), so a key lands on the
same partition whoever writes it: faust tables and repartitioned streams rely on that.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from streams.config import Settings

PRODUCER_DEFAULTS: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "fetch.min.bytes": 1,
    "queued.max.messages.kbytes": 64 * 1024,
    "partition.assignment.strategy": "cooperative-sticky",
}


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """A producer for FundWatch topics (idempotent, batched, murmur2-partitioned)."""
    return Producer({**settings.kafka_common(), **PRODUCER_DEFAULTS, **overrides})


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer that never auto-commits: callers commit after their work is stored."""
    conf = {**settings.kafka_common(), **CONSUMER_DEFAULTS, "group.id": group_id, **overrides}
    return Consumer(conf)


def make_offsets_reader(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A client of `group_id` that only reads its committed offsets, as they stand: a
    read_committed reader (librdkafka's default) waits while a transaction keeps some of them
    pending, which once lasted for good after a broker restart (`docs/worker.md`). It never
    subscribes, so it never joins the group."""
    conf = {
        **settings.kafka_common(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "isolation.level": "read_uncommitted",
        **overrides,
    }
    return Consumer(conf)


def make_admin(settings: Settings, **overrides: Any) -> AdminClient:
    """An admin client (topics, offsets, metadata)."""
    return AdminClient({**settings.kafka_common(), **overrides})
