"""The transactional engine on the real broker: states restored from committed transactions
only, a second instance of a worker fences the first, and a batch whose transaction aborts is
read again with the committed states, its outputs appearing once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.config import Settings
from streams.simulator.output import produce_to_kafka
from streams.stack.topics import ensure_topics
from streams.worker.process import WorkerProcess
from streams.worker.processor import SourceRecord
from streams.worker.transactional import (
    TransactionalWorker,
    WorkerFailed,
    changelog_spec,
    restore_states,
)
from tests.faults.helpers import World, make_world
from tests.worker.test_worker_e2e import WorkerRun, assert_same_alerts

pytestmark = pytest.mark.integration


def _own_settings(kafka_settings: Settings, tmp: Path) -> Settings:
    app_id = f"fw-txn-{uuid.uuid4().hex[:8]}"
    settings = kafka_settings.model_copy(update={"worker_app_id": app_id, "data_dir": tmp})
    ensure_topics(settings, [changelog_spec(settings)])
    return settings


def test_restore_reads_the_states_of_committed_transactions_only(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = _own_settings(kafka_settings, tmp_path)
    topic = changelog_spec(settings).name
    producer = Producer({**settings.kafka_common(), "transactional.id": f"{topic}-test"})
    producer.init_transactions(30)

    def transaction(writes: dict[str, Any], commit: bool = True) -> None:
        producer.begin_transaction()
        for key, state in writes.items():
            value = None if state is None else json.dumps(state)
            producer.produce(topic, value, key.encode(), partition=int(key.split("|")[0]))
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(10)  # on the broker, then aborted
            producer.abort_transaction(30)

    transaction({"0|d|a": {"n": 1}, "0|d|b": {"n": 2}, "1|d|c": {"n": 3}})
    transaction({"0|d|a": None, "0|d|b": {"n": 4}})  # a deletion and an update
    transaction({"0|d|b": {"n": 99}, "0|d|e": {"n": 5}}, commit=False)

    table: dict[str, Any] = {}
    read = restore_states(settings, topic, {0}, table)
    assert table == {"0|d|b": {"n": 4}}
    assert read == 4  # the aborted records are not delivered
    restore_states(settings, topic, {1, 2}, table)  # partition 2 is empty: restore still ends
    assert table == {"0|d|b": {"n": 4}, "1|d|c": {"n": 3}}


def test_a_second_instance_of_a_worker_fences_the_first(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """Two processes started with the same worker name: the newer one's transactions win, and
    the older one stops with a clear error instead of writing alongside it."""
    settings = _own_settings(kafka_settings, tmp_path)
    first = TransactionalWorker(settings, "w")
    first.producer.init_transactions(30)
    second = TransactionalWorker(settings, "w")
    second.producer.init_transactions(30)  # fences the first
    garbage = SourceRecord(
        "settlement", settings.topics.settlement.name, 0, 0, b"k", b"not avro", None
    )
    try:
        with pytest.raises(WorkerFailed, match="another worker started with the name 'w'"):
            first.run_batch([garbage])  # its dead letter cannot be committed
    finally:
        for worker in (first, second):
            worker.consumer.close()
            worker._offsets_reader.close()


class FlakyProducer:
    """The worker's producer, whose commit fails with an abortable error at given
    transactions (as when a broker or the group coordinator fails mid-commit)."""

    def __init__(
        self, producer: Producer, fail_at: set[int], hang_at: frozenset[int] = frozenset()
    ) -> None:
        self._producer = producer
        self.fail_at = fail_at
        self.commits = 0
        self.failed = 0
        self.hang_at = hang_at
        self.offsets_sent = 0
        self.hung = 0
        self.release = threading.Event()  # set by the test at the end: the hung calls return

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        """At the given calls, block past any timeout (librdkafka#5511 after a broker restart)."""
        self.offsets_sent += 1
        if self.offsets_sent in self.hang_at:
            self.hung += 1
            self.release.wait()
            raise KafkaException(KafkaError(KafkaError._FENCED, "released by the test"))
        self._producer.send_offsets_to_transaction(offsets, metadata, timeout)

    def commit_transaction(self, timeout: float) -> None:
        self.commits += 1
        if self.commits in self.fail_at:
            self.failed += 1
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "injected", txn_requires_abort=True)
            )
        self._producer.commit_transaction(timeout)

    def wrap(self, producer: Producer) -> FlakyProducer:
        """The worker replaces its producer after a failed transaction: keep failing it."""
        self._producer = producer
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def _run_in_thread(
    run: WorkerRun, world: World, fail_at: set[int], hang_at: frozenset[int] = frozenset()
) -> FlakyProducer:
    settings = run.settings.model_copy(update={"registry_dir": world.registry})
    ensure_topics(settings, [changelog_spec(settings)])
    worker = TransactionalWorker(settings, "w")
    flaky = FlakyProducer(worker.producer, fail_at, hang_at)
    worker.producer = flaky  # type: ignore[assignment]
    new_producer = worker._new_producer
    worker._new_producer = lambda: flaky.wrap(new_producer())  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    try:
        deadline = time.monotonic() + 180
        stable = 0
        while stable < 3:
            assert thread.is_alive(), "the worker thread ended"
            lagging = WorkerProcess(run.settings, None).lagging
            assert time.monotonic() < deadline, f"the worker did not catch up: {lagging()}"
            committed, end = _progress(run)
            stable = stable + 1 if end and committed >= end else 0
            time.sleep(0.5)
    finally:
        worker.request_stop()
        thread.join(60)
        flaky.release.set()
    return flaky


def _progress(run: WorkerRun) -> tuple[int, int]:
    return WorkerProcess(run.settings, None).progress()


@pytest.mark.slow
@pytest.mark.parametrize("state", ["objects", "packed"])
def test_an_aborted_batch_is_read_again_and_its_outputs_appear_once(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory, state: str
) -> None:
    """Also with the packed state table (a hot set of 8 groups): after each abort the worker
    drops its partitions' states from the table and restores them from the changelog."""
    tmp = tmp_path_factory.mktemp("txn-abort")
    world = make_world(kafka_settings, tmp, 3, seed=5)
    produce_to_kafka(world.settings, iter(world.records))
    reference = WorkerRun(world.settings, world.inputs, tmp, "ref")
    clean = _run_in_thread(reference, world, set())
    assert clean.failed == 0
    expected = reference.alerts()
    assert expected

    flaky_run = WorkerRun(world.settings, world.inputs, tmp, "flaky")
    flaky_run.settings = flaky_run.settings.model_copy(
        update={"worker_state": state, "worker_state_hot_groups": 8}
    )
    flaky = _run_in_thread(flaky_run, world, {2, 4, 5})
    assert flaky.failed == 3
    got = flaky_run.alerts()  # read_committed: the aborted batches' alerts are not there
    assert_same_alerts(got, expected)
    assert len(got) == len(expected)  # each alert once: no re-emission after an abort


@pytest.mark.slow
def test_a_send_offsets_call_that_never_returns_costs_a_producer_not_the_worker(
    kafka_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka's send_offsets_to_transaction can block for good after a broker restart
    (#5456, #5511: the broker-restart test hung in it). The worker gives the producer up after
    its timeout, a new producer takes over the transactional id (aborting the open
    transaction), and the batch is read again: the alerts equal an uninterrupted run's, once."""
    from streams.worker import transactional

    monkeypatch.setattr(transactional, "SEND_OFFSETS_TIMEOUT_S", 1.0)
    monkeypatch.setattr(transactional, "SEND_OFFSETS_GRACE_S", 0.5)
    tmp = tmp_path_factory.mktemp("txn-hang")
    world = make_world(kafka_settings, tmp, 3, seed=5)
    produce_to_kafka(world.settings, iter(world.records))
    reference = WorkerRun(world.settings, world.inputs, tmp, "ref")
    _run_in_thread(reference, world, set())
    expected = reference.alerts()
    assert expected

    hanging_run = WorkerRun(world.settings, world.inputs, tmp, "hang")
    hanging = _run_in_thread(hanging_run, world, set(), hang_at={2, 5})
    assert hanging.hung == 2
    got = hanging_run.alerts()
    assert_same_alerts(got, expected)
    assert len(got) == len(expected)


@pytest.mark.slow
def test_offsets_a_transaction_keeps_pending_do_not_stop_the_worker(
    kafka_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transaction holds offsets of the worker's group pending and is never resolved (after
    a broker restart an aborted producer's late offset commit did that, and the worker waited
    for good: librdkafka asks read_committed consumers for stable offsets only). The worker
    waits STABLE_OFFSETS_WAIT_S, then reads from the last committed offsets and catches up
    while that transaction is still open (its timeout: 15 minutes)."""
    from streams.worker import transactional

    monkeypatch.setattr(transactional, "STABLE_OFFSETS_WAIT_S", 3.0)
    tmp = tmp_path_factory.mktemp("txn-pending")
    world = make_world(kafka_settings, tmp, 2, seed=5)
    produce_to_kafka(world.settings, iter(world.records))
    run = WorkerRun(world.settings, world.inputs, tmp, "pending")
    group = run.settings.worker_app_id
    hanging = Producer({**kafka_settings.kafka_common(), "transactional.id": f"{group}-hanging",
                        "transaction.timeout.ms": 900_000})  # fmt: skip
    hanging.init_transactions(30)
    hanging.begin_transaction()
    metadata = Consumer({**kafka_settings.kafka_common(), "group.id": group})
    name = run.settings.topics.settlement.name
    hanging.send_offsets_to_transaction(
        [TopicPartition(name, p, 0) for p in range(run.settings.topics.settlement.partitions)],
        metadata.consumer_group_metadata(),
        30,
    )
    try:
        with caplog.at_level("WARNING", logger="streams.worker.transactional"):
            _run_in_thread(run, world, set())
        assert "still pending" in caplog.text
        assert run.alerts()
    finally:
        hanging.abort_transaction(30)
        metadata.close()


def test_a_stop_during_start_up_exits_cleanly_before_consuming(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the worker is still starting (topics, rules, clients): exit 0, no group
    joined, no record read; the default action (killed by the signal) is not what a
    supervisor should see."""
    import os
    import signal

    from streams.worker import cli, transactional

    settings = _own_settings(kafka_settings, tmp_path)
    built: list[TransactionalWorker] = []
    original = transactional.TransactionalWorker.__init__

    def init_then_signal(self: TransactionalWorker, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while start-up goes on

    monkeypatch.setattr(transactional.TransactionalWorker, "__init__", init_then_signal)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert cli.run_transactional(settings, "w") == 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    [worker] = built
    assert worker.state == "starting"  # never ran
    assert worker.processor.stats.batches == 0
