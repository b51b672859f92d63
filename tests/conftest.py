"""Shared fixtures.

Kafka: tests use the real local broker of `fundwatch infra up` (settings from the environment,
data under .local/kafka). `kafka_settings` installs and starts it when it is not running and
leaves it running after the session: a warm start takes seconds and the next session (or CI
step) reuses it; `fundwatch infra down` stops it. With FUNDWATCH_KAFKA_BOOTSTRAP pointing at
another cluster, the tests only check that it answers and use it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streams.config import Settings, Topics
from streams.stack import StackError, local_kafka
from streams.stack.topics import admin_client, ensure_topics


@pytest.fixture(scope="session")
def kafka_settings() -> Settings:
    """Settings whose Kafka is up (the local broker is started if needed, and left running)."""
    settings = Settings()
    try:
        local_kafka.ensure_broker(settings)
    except StackError as exc:
        pytest.fail(f"Kafka is not available: {exc}\n{exc.details}", pytrace=False)
    return settings


@pytest.fixture
def topics(kafka_settings: Settings) -> Iterator[Topics]:
    """FundWatch's topics under names unique to this test (`<name>-<8 hex>`), created with
    their configured partitions; deleted after the test.

    They keep every record (retention -1): tests replay fixed dates, and the inputs' 30-day
    retention counts from the event time, so once such a date is a month old the broker would
    delete a test's input within a minute of producing it (the retention check interval)."""
    suffix = uuid.uuid4().hex[:8]
    unique = Topics(
        **{
            field: spec.model_copy(update={"name": f"{spec.name}-{suffix}", "retention_ms": -1})
            for field, spec in kafka_settings.topics
        }
    )
    ensure_topics(kafka_settings, unique.all())
    yield unique
    admin = admin_client(kafka_settings)  # keep a reference: a destroyed admin aborts requests
    futures = admin.delete_topics([spec.name for spec in unique.all()], operation_timeout=30)
    for future in futures.values():
        future.exception()  # wait; a failed cleanup must not fail the test


@pytest.fixture
def isolated_settings(kafka_settings: Settings, topics: Topics) -> Settings:
    """kafka_settings with this test's own topics and consumer group."""
    suffix = topics.settlement.name.rsplit("-", 1)[1]
    return kafka_settings.model_copy(
        update={"topics": topics, "consumer_group": f"{kafka_settings.consumer_group}-{suffix}"}
    )


pytest_plugins = ["tests.fixtures_store"]
