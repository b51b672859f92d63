"""The transactional engine: confluent-kafka, one Kafka transaction per batch.

Per batch: consume up to `worker_batch_size` records of the six source topics (the three
inputs and the three repartition topics), hand them to the BatchProcessor, then write in ONE
transaction everything the batch produced: alerts, aggregates, dead letters, repartitioned
copies, the changed detector states (to the compacted state changelog) and the group's offsets
(`send_offsets_to_transaction`). A read_committed reader (every librdkafka client by default:
the sink, the worker itself, a restore) sees all of a batch or none of it, so a worker killed
at any point resumes exactly at the previous batch, with that batch's states: nothing lost,
nothing written twice. A failed transaction is aborted and its batch read again (`_commit`).

The offsets committed for a source stop at the lowest record the processor still holds (its
event-time reorder buffer); those records are read again after a restart and the processor's
checkpoint, written in the same transaction, tells which of the re-read records were judged.

State: a dict over the partitions this worker owns (keys `<partition>|<detector>|<key>`, the
processor's table), restored from the changelog each time a partition is assigned. Partition
`p` of every source topic goes to the same worker (the `range` assignor, all six topics having
the same partition count), so one changelog partition holds all of partition `p`'s state.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streams.config import Settings, TopicSpec
from streams.kafka.clients import make_offsets_reader
from streams.worker.build import build_processor
from streams.worker.processor import (
    ORIGIN_HEADER,
    Batch,
    OutRecord,
    SourceRecord,
    origin_header,
    parse_origin,
)
from streams.worker.routing import SOURCE_ROLES
from streams.worker.state_table import (
    batch_of,
    drop_partition,
    encode_state,
    make_state_table,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTPUT_ROLES = ("alerts", "aggregates", "dead_letters", "by_institution", "by_doctor", "by_group")
TXN_TIMEOUT_S = 60.0
"""How long a transaction call may take before the worker gives up on it (and on the batch)."""
RESTORE_TIMEOUT_S = 600.0
SEND_OFFSETS_TIMEOUT_S = 10.0
"""For `send_offsets_to_transaction`, which librdkafka does not enforce: after a broker
restart the call can wait for good on a stale group coordinator (confluentinc/librdkafka#5456,
#5511, open in 2.16). The worker waits this long plus SEND_OFFSETS_GRACE_S, then gives the
producer up (see `_send_offsets`)."""
SEND_OFFSETS_GRACE_S = 5.0
STABLE_OFFSETS_WAIT_S = 45.0
"""How long an assignment waits for committed offsets that a transaction still holds pending:
longer than the broker takes to abort a transaction whose producer is gone (the producer's
`transaction.timeout.ms`, 30 s, plus the broker's 10 s check interval)."""
LAG_REFRESH_S = 0.2


class ProducerStuck(RuntimeError):
    """A producer call did not return in time: the producer is given up, never called again
    (its own thread may stay blocked in librdkafka until the process ends)."""


class WorkerFailed(RuntimeError):
    """The worker cannot go on (fenced by another instance of the same name, a fatal producer
    error): it stops, and the group gives its partitions to the other workers."""


def changelog_spec(settings: Settings) -> TopicSpec:
    """The compacted topic of the detector states: one key per state, partition = source
    partition."""
    return TopicSpec(
        name=f"{settings.worker_app_id}-state-changelog",
        partitions=settings.topics.settlement.partitions,
        retention_ms=-1,
        cleanup_policy="compact",
    )


def restore_states(
    settings: Settings, topic: str, partitions: set[int], table: MutableMapping[str, Any]
) -> int:
    """Read the committed states of `partitions` from the changelog into `table`; returns the
    number of records read."""
    if not partitions:
        return 0
    conf = {
        **settings.kafka_common(),
        "group.id": f"{settings.worker_app_id}-restore",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,  # the end of a partition is reached in milliseconds
    }
    consumer = Consumer(conf)
    pending = set(partitions)
    records = 0
    deadline = time.monotonic() + RESTORE_TIMEOUT_S
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
        while pending:
            if time.monotonic() > deadline:
                raise WorkerFailed(
                    f"state of partitions {sorted(pending)} not restored from {topic} in "
                    f"{RESTORE_TIMEOUT_S:.0f}s"
                )
            for msg in consumer.consume(10_000, 0.05):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    else:
                        log.warning("restoring %s[%d]: %s", topic, msg.partition(), err.str())
                    continue
                records += 1
                key = msg.key().decode()
                value = msg.value()
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = json.loads(value)
    finally:
        consumer.close()
    return records


class TransactionalWorker:
    """One worker process: consume, process, and commit each batch in one transaction."""

    def __init__(self, settings: Settings, name: str = "worker-1") -> None:
        self.settings = settings
        self.name = name
        topics = settings.topics
        self.role_of = {getattr(topics, role).name: role for role in SOURCE_ROLES}
        self.out_names = {role: getattr(topics, role).name for role in OUTPUT_ROLES}
        self.changelog = changelog_spec(settings).name
        self.table = make_state_table(settings)  # docs/worker.md, "State in memory"
        self.start_offsets: dict[tuple[str, int], int] = {}
        self.owned: set[int] = set()
        self.committed: dict[tuple[str, int], int] = {}  # by this process, for the lag
        self.state = "starting"
        self.metrics: Any = None  # a WorkerMetrics, told of every batch
        self._lag: tuple[dict[str, int], int, int] = ({}, 0, 0)
        self._lag_at = 0.0
        self._stop = False
        self._generation = 0  # counts assignments and revocations
        self.processor = build_processor(settings, self.table)
        common = settings.kafka_common()
        self.consumer = Consumer(
            {
                **common,
                "group.id": settings.worker_app_id,
                "client.id": f"{settings.worker_app_id}-{name}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                # partition p of every source topic to one worker: its state is one changelog
                # partition (all six topics have the same partition count)
                "partition.assignment.strategy": "range",
                "session.timeout.ms": int(settings.worker_session_timeout_s * 1000),
                "heartbeat.interval.ms": int(settings.worker_heartbeat_interval_s * 1000),
            }
        )
        # the group's committed offsets without waiting for pending ones (`_committed`)
        client_id = f"{settings.worker_app_id}-{name}-offsets"
        self._offsets_reader = make_offsets_reader(
            settings, settings.worker_app_id, **{"client.id": client_id}
        )
        self.producer = self._new_producer()

    def _new_producer(self) -> Producer:
        settings, name = self.settings, self.name
        return Producer(
            {
                **settings.kafka_common(),
                "client.id": f"{settings.worker_app_id}-{name}",
                # one id per worker name: a restarted worker fences its predecessor and aborts
                # the transaction it left open
                "transactional.id": f"{settings.worker_app_id}-{name}",
                "transaction.timeout.ms": 30_000,
                "linger.ms": 5,
                "queue.buffering.max.messages": 1_000_000,
                # keys to partitions as the Java client and aiokafka (the faust engine) do
                "partitioner": "murmur2_random",
            }
        )

    # -- life cycle -------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        """SIGTERM/SIGINT: finish and commit the batch in flight, then leave the group."""
        if not self._stop:
            log.info("stop requested: finishing the batch in flight")
        self._stop = True

    def run(self, install_signals: bool = True) -> None:
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self.producer.init_transactions(TXN_TIMEOUT_S)
        self.consumer.subscribe(
            list(self.role_of),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self.state = "running"
        log.info("worker %s running (transactional engine)", self.name)
        size = self.settings.worker_batch_size
        wait = self.settings.worker_batch_seconds
        linger = self.settings.worker_linger_seconds
        try:
            while not self._stop:
                records = self._records(self._poll(size, wait, linger))
                if records:
                    started = time.monotonic()
                    batch = self.run_batch(records)
                    if self.metrics is not None:
                        self.metrics.batch_done(records, batch, started)
                elif self._markers_passed():
                    self._commit([], [], 0)  # move the group's offsets past them
                self._refresh_lag()
        finally:
            self.state = "stopping"
            self.consumer.close()  # leaves the group: its partitions move at once
            self._offsets_reader.close()
            self.producer.flush(10)
            self.state = "stopped"
            log.info("worker %s stopped", self.name)

    def _poll(self, size: int, wait: float, linger: float) -> list[Message]:
        """The next batch: wait up to `wait` for a first record, then up to `linger` for more,
        `size` in all. (`consume(n, t)` returns after n records or t seconds: one call would
        hold a trickle of records for the whole `wait`.)"""
        messages = self.consumer.consume(1, wait)
        if not messages or size <= 1:
            return messages
        generation = self._generation
        more = self.consumer.consume(size - 1, linger)
        if self._generation != generation:
            # a rebalance in between (eager: everything revoked, then assigned) sends every
            # partition back to its committed offset: the first record will come again
            return more
        return messages + more

    # -- rebalances -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self._open(consumer, tps)
        # from the offsets just read: left to itself, librdkafka would ask for the committed
        # offsets again and wait as long as they are pending (see `_committed`)
        consumer.assign(
            [TopicPartition(tp.topic, tp.partition, self.start_offsets[(tp.topic, tp.partition)])
             for tp in tps]
        )  # fmt: skip

    def _open(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        """Where each source restarts, then the states of the new partitions. The committed
        offsets come first (`_committed`), so a transaction a previous owner left open is
        resolved before its states are read."""
        self._generation += 1
        if not tps:
            return
        started = time.monotonic()
        committed = self._committed(tps)
        for tp in committed:
            offset = tp.offset
            if offset < 0:  # nothing committed yet: from the start of the partition
                offset = self._low_watermark(consumer, tp)
            self.start_offsets[(tp.topic, tp.partition)] = offset
        partitions = {tp.partition for tp in tps}
        new = partitions - self.owned
        restored = restore_states(self.settings, self.changelog, new, self.table)
        for tp in tps:
            self.processor.assigned(tp.topic, tp.partition)
        self.owned |= partitions
        log.info(
            "assigned partitions %s: %d state records restored in %.1fs",
            sorted(partitions), restored, time.monotonic() - started,
        )  # fmt: skip

    @staticmethod
    def _low_watermark(consumer: Consumer, tp: TopicPartition) -> int:
        """The first offset of a partition, or OFFSET_BEGINNING if the broker cannot tell now
        (after a restart a partition was once "unknown" to the consumer for a moment): the
        consumer then starts there all the same."""
        try:
            low, _ = _retrying(
                lambda: consumer.get_watermark_offsets(tp, timeout=TXN_TIMEOUT_S),
                codes=LOOKUP_RETRIABLE,
            )
            return low
        except KafkaException as exc:
            log.warning("first offset of %s[%d] unknown (%s): reading from its beginning",
                        tp.topic, tp.partition, exc.args[0].str())  # fmt: skip
            return OFFSET_BEGINNING

    def _committed(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets of `tps`: the stable ones (read_committed asks the
        broker to wait while a transaction that commits offsets of the group is open, e.g. one
        a killed previous owner left, which the broker aborts after `transaction.timeout.ms`),
        or, if they are still pending after STABLE_OFFSETS_WAIT_S, the last committed ones.
        After a broker restart the group's offsets once stayed pending for good, probably an
        aborted producer's offset commit that reached the group after the abort (the hanging
        transactions KIP-890 is about): such a commit is resolved only by the next transaction
        of the same producer id, which could never start while the worker waited for it."""
        try:
            return _retrying(
                lambda: self.consumer.committed(tps, timeout=STABLE_OFFSETS_WAIT_S),
                codes=LOOKUP_RETRIABLE,
            )
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._TIMED_OUT:
                raise
        log.warning(
            "the committed offsets of %d partitions are still pending after %.0fs (a "
            "transaction the broker has not resolved): reading from the last committed ones",
            len(tps), STABLE_OFFSETS_WAIT_S,
        )  # fmt: skip
        return _retrying(
            lambda: self._offsets_reader.committed(tps, timeout=TXN_TIMEOUT_S),
            codes=LOOKUP_RETRIABLE,
        )

    def _on_revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self._close({tp.partition for tp in tps})

    def _close(self, partitions: set[int]) -> None:
        self._generation += 1
        for partition in sorted(partitions & self.owned):
            self.processor.drop_partition(partition)
            drop_partition(self.table, partition)
        self.owned -= partitions
        for key in [k for k in self.start_offsets if k[1] in partitions]:
            del self.start_offsets[key]

    def _reset(self) -> None:
        """After an aborted transaction: forget what this process did since the last commit
        and read again from the committed offsets, with the committed states."""
        assignment = self.consumer.assignment()
        log.warning("transaction aborted: reading %d partitions again from their committed "
                    "offsets", len(assignment))  # fmt: skip
        self._close(set(self.owned))
        self._open(self.consumer, assignment)
        for tp in assignment:
            self._seek(tp.topic, tp.partition, self.start_offsets[(tp.topic, tp.partition)])

    def _seek(self, topic: str, partition: int, offset: int) -> None:
        try:
            self.consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:  # not assigned any more: the next owner reads it
            log.info("seek of %s[%d] to %d: %s", topic, partition, offset, exc)

    # -- batches ----------------------------------------------------------------------------
    def _records(self, messages: list[Message]) -> list[SourceRecord]:
        records = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                log.warning("consumer: %s", err.str())
                continue
            kind, ts = msg.timestamp()
            headers = msg.headers()
            records.append(
                SourceRecord(
                    self.role_of[msg.topic()], msg.topic(), msg.partition(), msg.offset(),
                    msg.key(), msg.value(), ts if kind else None, msg,
                    _origin_of(headers) if headers else None,
                )
            )  # fmt: skip
        return records

    def run_batch(self, records: list[SourceRecord]) -> Batch:
        """Process a batch and commit it, outputs, states and offsets in one transaction."""
        with batch_of(self.table):  # a packed table keeps the batch's groups decoded
            batch = self.processor.process(records)
            self._commit(batch.out, list(self.processor.dirty_state()), len(records))
        return batch

    def _commit(self, out: list[OutRecord], writes: list[tuple[int, str, Any]], n: int) -> None:
        """One transaction; when it fails, abort it and read again from the last commit."""
        try:
            self._transaction(out, writes)
        except ProducerStuck as exc:
            log.warning("batch of %d records not committed: %s; a new producer takes over", n,
                        exc)  # fmt: skip
            self._replace_producer(purge=False)
            self._reset()
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                raise WorkerFailed(self._fatal(err)) from exc
            log.warning("batch of %d records not committed: %s", n, err.str())
            if not err.retriable():  # a broker that answered: abort through it
                try:
                    self.producer.abort_transaction(SEND_OFFSETS_TIMEOUT_S)
                except KafkaException as abort_exc:
                    if abort_exc.args[0].fatal():
                        raise WorkerFailed(self._fatal(abort_exc.args[0])) from abort_exc
                    log.info("abort: %s", abort_exc.args[0].str())  # e.g. none was open
            # A transport failure or a timeout: a second call on this producer can wait for
            # good on a stale coordinator (confluentinc/librdkafka#5511, seen after a broker
            # restart). The new producer's init_transactions aborts what is open.
            self._replace_producer()
            self._reset()

    def _replace_producer(self, purge: bool = True) -> None:
        """A new producer for the same transactional id: its `init_transactions` fences the
        old one and aborts whatever it left open, and it finds the coordinators afresh (the
        old one may wait for good on a stale group coordinator after a broker restart).
        `purge=False`: the old producer is stuck in a call and is not touched again."""
        old, self.producer = self.producer, self._new_producer()
        if purge:
            old.purge()
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while True:
            try:
                self.producer.init_transactions(TXN_TIMEOUT_S)
                break
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or not err.retriable() or time.monotonic() > deadline:
                    raise WorkerFailed(f"no transactional producer: {err.str()}") from exc
                log.warning("the broker does not take the transactional id yet: %s", err.str())
        log.info("a new producer took over the transactional id")

    def _fatal(self, err: KafkaError) -> str:
        text = f"fatal producer error: {err.str()}"
        if err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
            text += (
                f" (another worker started with the name {self.name!r}, transactional id "
                f"{self.settings.worker_app_id}-{self.name}: give each worker its own --name)"
            )
        return text

    def _markers_passed(self) -> bool:
        """The consumer moved past records it never delivers (transaction markers, aborted
        records) since the last commit: a fetch that ended on a marker leaves the group one
        offset behind the end of the partition until the offsets are committed again."""
        try:
            offsets = self._offsets()
        except KafkaException:
            return False
        return any(
            tp.offset > self.committed.get((tp.topic, tp.partition), self.start_offsets.get(
                (tp.topic, tp.partition), tp.offset))
            for tp in offsets
        )  # fmt: skip

    def _transaction(self, out: list[OutRecord], writes: list[tuple[int, str, Any]]) -> None:
        producer = self.producer
        producer.begin_transaction()
        for rec in out:
            headers = [origin_header(rec.origin)] if rec.origin is not None else None
            self._produce(
                self.out_names[rec.role], rec.key, rec.value, rec.partition, rec.timestamp_ms,
                headers,
            )  # fmt: skip
        for partition, key, state in writes:
            value = None if state is None else encode_state(state)
            self._produce(self.changelog, key.encode(), value, partition, None, None)
            if state is None:
                self.table.pop(key, None)
            else:
                self.table[key] = state
        offsets = self._offsets()
        if offsets:
            self._send_offsets(offsets)
        _retrying(lambda: producer.commit_transaction(TXN_TIMEOUT_S))
        for tp in offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset

    def _send_offsets(self, offsets: list[TopicPartition]) -> None:
        """`send_offsets_to_transaction`, once per transaction, in a thread of its own: the
        call can block for good whatever its timeout (librdkafka#5456, #5511: after a broker
        restart it waited on a stale group coordinator, the broker-restart test saw it), so
        the worker waits SEND_OFFSETS_TIMEOUT_S + SEND_OFFSETS_GRACE_S and then raises
        ProducerStuck: the batch is given up and a new producer takes over."""
        producer = self.producer
        metadata = self.consumer.consumer_group_metadata()
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, metadata, SEND_OFFSETS_TIMEOUT_S)
                outcome.append(None)
            except BaseException as exc:  # handed to the worker's thread below
                outcome.append(exc)

        thread = threading.Thread(target=call, name="send-offsets", daemon=True)
        thread.start()
        thread.join(SEND_OFFSETS_TIMEOUT_S + SEND_OFFSETS_GRACE_S)
        if not outcome:
            raise ProducerStuck(
                f"send_offsets_to_transaction did not return in "
                f"{SEND_OFFSETS_TIMEOUT_S + SEND_OFFSETS_GRACE_S:.0f}s (librdkafka#5511)"
            )
        if outcome[0] is not None:
            raise outcome[0]

    def _produce(
        self,
        topic: str,
        key: bytes,
        value: bytes | str | None,
        partition: int | None,
        timestamp_ms: int | None,
        headers: Any,
    ) -> None:
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)

    def _offsets(self) -> list[TopicPartition]:
        """Per assigned source: its position, or the lowest record still held if lower."""
        out = []
        for tp in self.consumer.position(self.consumer.assignment()):
            if tp.offset < 0:
                continue  # nothing read since assigned
            low = self.processor.lowest_held(tp.topic, tp.partition)
            offset = tp.offset if low is None else min(low, tp.offset)
            out.append(TopicPartition(tp.topic, tp.partition, offset))
        return out

    # -- what the metrics read ---------------------------------------------------------------
    def _refresh_lag(self) -> None:
        """Snapshot the lag for the metrics thread, at most every LAG_REFRESH_S. (librdkafka's
        `assignment()` called from another thread waits for the consume() in progress: the
        metrics endpoint must not ask the consumer itself.)"""
        now = time.monotonic()
        if now - self._lag_at < LAG_REFRESH_S:
            return
        self._lag_at = now
        lags: dict[str, int] = {}
        unread = 0
        try:
            assignment = self.consumer.assignment()
            positions = {(tp.topic, tp.partition): tp.offset
                         for tp in self.consumer.position(assignment)}  # fmt: skip
            for tp in assignment:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                key = (tp.topic, tp.partition)
                done = max(0, self.committed.get(key, self.start_offsets.get(key, 0)))
                if high < 0:  # nothing fetched from it yet
                    high = done
                lags[tp.topic] = lags.get(tp.topic, 0) + max(0, high - done)
                pos = positions.get(key, -1)
                unread += max(0, high - (pos if pos >= 0 else done))
        except KafkaException:
            return
        self._lag = (lags, unread, len(assignment))

    def lag(self) -> tuple[dict[str, int], int, int]:
        """(records past the last commit per topic, records not yet read, partitions), as of
        the last snapshot (a fraction of a second old while the worker runs)."""
        return self._lag


LOOKUP_RETRIABLE = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._UNKNOWN_PARTITION,
})  # fmt: skip
"""Errors of an offset or watermark lookup that pass (a topic just created has no leader for
a moment, a restarted broker loads its groups): the lookup is asked again."""


def _retrying(call: Callable[[], T], attempts: int = 5, codes: frozenset[int] = frozenset()) -> T:
    """A call, again after a retriable error (librdkafka's contract for the transaction calls:
    the same call may be repeated until it succeeds or fails for good), or after an error of
    `codes` (lookups, whose errors carry no retriable flag)."""
    for attempt in range(attempts):
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in codes) or attempt == attempts - 1:
                raise
            log.warning("%s; trying again", err.str())
            time.sleep(0.5 * (attempt + 1))


def _origin_of(headers: list[tuple[str, bytes]]) -> Any:
    for name, value in headers:
        if name == ORIGIN_HEADER and value:
            return parse_origin(value)
    return None
