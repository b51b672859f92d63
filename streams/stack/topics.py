"""Create and inspect FundWatch's topics: idempotent, never deletes a topic or a partition."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from streams.config import Settings, TopicSpec
from streams.kafka.clients import make_admin
from streams.stack import StackError

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the missing topics with their partitions, retention and
    settings.kafka_replication_factor; returns the names created.

    Existing topics with fewer partitions than configured get more (with a warning: keys then
    map to other partitions); their configs (retention.ms, ...) are aligned with the spec.
    """
    admin = admin_client(settings)
    existing = _counts(admin, timeout)
    missing = [spec for spec in specs if spec.name not in existing]
    created: list[str] = []
    if missing:
        new = [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=settings.kafka_replication_factor,
                config=spec.config(),
            )
            for spec in missing
        ]
        futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
        by_name = {spec.name: spec for spec in missing}
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise StackError(f"cannot create topic {name}: {error.str()}") from exc
                log.info("Topic %s was created concurrently", name)
                continue
            spec = by_name[name]
            created.append(name)
            log.info(
                "Created topic %s (%d partitions, retention %s)",
                name,
                spec.partitions,
                format_retention(spec.retention_ms),
            )
        if len(created) < len(missing):  # some were created concurrently: check those too
            existing = _counts(admin, timeout)

    present = [spec for spec in specs if spec.name not in created]
    _grow_partitions(admin, present, existing, timeout)
    _align_configs(admin, present, timeout)
    return created


def partition_counts(
    settings: Settings,
    names: Iterable[str] | None = None,
    timeout: float = 10.0,
    include_internal: bool = False,
) -> dict[str, int]:
    """Partitions per topic (all topics, or only `names` that exist), sorted by name."""
    counts = _counts(admin_client(settings), timeout, include_internal)
    if names is not None:
        wanted = set(names)
        counts = {name: n for name, n in counts.items() if name in wanted}
    return counts


def topic_end_offsets(
    settings: Settings, names: Iterable[str], timeout: float = 10.0
) -> dict[str, dict[int, int]]:
    """The end offset (high watermark) of every partition of the given topics."""
    names = list(names)
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout)
    requests: dict[TopicPartition, OffsetSpec] = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or not topic.partitions:
            raise StackError(f"topic {name} does not exist on {settings.kafka_bootstrap}")
        for partition in topic.partitions:
            requests[TopicPartition(name, partition)] = OffsetSpec.latest()
    offsets: dict[str, dict[int, int]] = {name: {} for name in names}
    for tp, future in admin.list_offsets(requests, request_timeout=timeout).items():
        offsets[tp.topic][tp.partition] = future.result().offset
    return {name: dict(sorted(parts.items())) for name, parts in offsets.items()}


def topic_configs(
    settings: Settings, names: Iterable[str], timeout: float = 10.0
) -> dict[str, dict[str, str]]:
    """The effective configs (name -> value) of the given topics."""
    return _describe(admin_client(settings), list(names), timeout)


def admin_client(settings: Settings) -> AdminClient:
    """An admin client for short-lived use. Its librdkafka log level stops at NOTICE (unless
    kafka_client_config asks for debug or a log_level): destroying an admin right after a
    request often logs a harmless 'Purging 1 unserved events' INFO line."""
    extra = settings.kafka_client_config
    quiet = {} if "debug" in extra or "log_level" in extra else {"log_level": 5}
    return make_admin(settings, **quiet)


def format_retention(ms: int | str) -> str:
    """'30 d', '12 h', 'forever'..."""
    ms = int(ms)
    if ms < 0:
        return "forever"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms} ms"


def _counts(admin: AdminClient, timeout: float, include_internal: bool = False) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout)
    return {
        name: len(topic.partitions)
        for name, topic in sorted(metadata.topics.items())
        if topic.partitions and (include_internal or not name.startswith("__"))
    }


def _grow_partitions(
    admin: AdminClient, specs: list[TopicSpec], existing: dict[str, int], timeout: float
) -> None:
    grow = []
    for spec in specs:
        have = existing.get(spec.name, spec.partitions)
        if have < spec.partitions:
            log.warning(
                "Topic %s has %d partitions, %d configured: adding %d (keys written so far "
                "stay on their old partitions, new records of a key may land elsewhere)",
                spec.name,
                have,
                spec.partitions,
                spec.partitions - have,
            )
            grow.append(NewPartitions(spec.name, spec.partitions))
        elif have > spec.partitions:
            log.info(
                "Topic %s has %d partitions, more than the %d configured: left as is",
                spec.name,
                have,
                spec.partitions,
            )
    if not grow:
        return
    futures = admin.create_partitions(grow, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise StackError(f"cannot add partitions to {name}: {exc.args[0].str()}") from exc


def _align_configs(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    """Set the spec's configs (retention.ms, ...) where an existing topic differs (e.g. it was
    auto-created by a producer before `infra up`). Failures (no AlterConfigs ACL) only warn."""
    if not specs:
        return
    current = _describe(admin, [spec.name for spec in specs], timeout)
    changes = []
    for spec in specs:
        entries = []
        for key, value in spec.config().items():
            have = current.get(spec.name, {}).get(key)
            if have != value:
                log.warning("Topic %s: setting %s=%s (was %s)", spec.name, key, value, have)
                entries.append(ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET))
        if entries:
            changes.append(
                ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=entries)
            )
    if not changes:
        return
    futures = admin.incremental_alter_configs(changes, request_timeout=timeout)
    for resource, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            log.warning("Cannot set the configs of %s: %s", resource.name, exc.args[0].str())


def _describe(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    """Topic configs. A topic created a moment ago may not be known to every part of the
    cluster yet (UNKNOWN_TOPIC_OR_PART): such lookups are retried until `timeout`."""
    deadline = time.monotonic() + timeout
    out: dict[str, dict[str, str]] = {}
    pending = list(names)
    while pending:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in pending]
        pending = []
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            try:
                entries = future.result()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and time.monotonic() < deadline:
                    pending.append(resource.name)
                    continue
                raise StackError(f"cannot describe topic {resource.name}: {error.str()}") from exc
            out[resource.name] = {key: entry.value for key, entry in entries.items()}
        if pending:
            time.sleep(0.1)
    return out
