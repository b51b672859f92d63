"""The sink: consume FundWatch topics, store rows in ClickHouse in batches, then commit offsets.

Order of a flush: insert every buffered row (retrying with backoff while the store fails, the
partitions paused so the group keeps us), deliver the dead letters produced for undecodable
records, and only then commit the consumed offsets. A crash anywhere before the commit replays
the batch; tables are ReplacingMergeTree keyed by event id, so a replay does not duplicate rows.

Undecodable input records are produced to the dead-letters topic with their raw bytes and the
reason; the sink reads that topic like any other, so every dead letter (the sink's or a worker's)
reaches the `dead_letters` table by one path. Watermark records (event-time promises of the
producers) are control, not data. Counts reconcile per topic:
read = stored + dead-lettered + control.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from schemas.codec import Codec, CodecError
from schemas.validation import InvalidEvent, validate
from streams.config import Settings
from streams.kafka.clients import make_consumer, make_producer
from streams.ops.metrics import LATENCY_BUCKETS, SECONDS_BUCKETS, SIZE_BUCKETS, BulkHistogram
from streams.privacy import Pseudonymizer
from streams.sink.ranking import SinkRanking
from streams.sink.rows import HANDLERS, Lineage, Row
from streams.store.client import Store
from streams.store.tables import DEAD_LETTERS

log = logging.getLogger(__name__)

COMMIT_WAIT_AT_STOP_S = 10.0
"""How long a stopping sink waits for the group to confirm its last commit."""

SINK_ROLES = (
    "settlement", "trace_scan", "face_verify", "alerts", "aggregates", "dead_letters", "sim_labels",
    "reviews",
)  # fmt: skip
MAX_BACKOFF_S = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class TopicStats:
    read: int = 0
    stored: int = 0  # records whose rows are in the store (committed)
    dead_lettered: int = 0
    control: int = 0  # watermark records: read and committed, nothing to store
    lag: int = 0


@dataclass
class SinkStats:
    """Counters shown by `fundwatch run` and logged at shutdown."""

    topics: dict[str, TopicStats] = field(default_factory=lambda: defaultdict(TopicStats))
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    alerts_by_detector: Counter = field(default_factory=Counter)
    latest_alerts: deque = field(default_factory=lambda: deque(maxlen=6))  # (time, id, kind, text)
    dead_by_reason: Counter = field(default_factory=Counter)  # (topic, reason code)
    batches: int = 0
    commit_failures: int = 0  # commits given up (left to the next batch's commit)
    store_failures: int = 0
    store_up: bool = True  # false from a failed insert until the next successful one
    assigned: int = 0  # partitions assigned to this consumer
    last_flush_ms: int = 0
    state: str = "starting"
    # histograms for /metrics, fed once per flush
    batch_records: BulkHistogram = field(
        default_factory=lambda: BulkHistogram(
            "fundwatch_sink_batch_records", "Records read per flushed batch", SIZE_BUCKETS
        )
    )
    flush_seconds: BulkHistogram = field(
        default_factory=lambda: BulkHistogram(
            "fundwatch_sink_flush_seconds",
            "Time to store a batch, deliver its dead letters and commit",
            SECONDS_BUCKETS,
        )
    )
    latency: BulkHistogram = field(
        default_factory=lambda: BulkHistogram(
            "fundwatch_sink_latency_seconds",
            "From the record timestamp (event time) to its offset being committed",
            LATENCY_BUCKETS,
        )
    )

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "batches": self.batches,
            "store_failures": self.store_failures,
            "commit_failures": self.commit_failures,
            "topics": {t: vars(s).copy() for t, s in self.topics.items()},
            "rows": dict(self.rows),
        }


class Sink:
    """Consumes the given topic roles and writes them to the store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        roles: tuple[str, ...] = SINK_ROLES,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.codec = Codec.default()
        self.pseudo = Pseudonymizer.from_settings(settings, with_vault=True)
        self.role_of = {getattr(settings.topics, role).name: role for role in roles}
        self._alerts_topic = settings.topics.alerts.name
        self.dead_letter_topic = settings.topics.dead_letters.name
        self.group_id = group_id or settings.consumer_group
        self.stats = SinkStats()
        self.ranking = SinkRanking(settings, store)  # confirm_score of alerts, learnt from reviews
        self._stop = threading.Event()
        self._rows: dict[str, list[Row]] = defaultdict(list)
        self._pending: dict[tuple[str, int], int] = {}  # next offset to commit
        self._commit_due: dict[tuple[str, int], int] = {}  # stored, commit not yet accepted
        self.committed: dict[tuple[str, int], int] = {}  # committed next offsets, per partition
        self._pending_counts: dict[str, int] = defaultdict(int)
        self._pending_dead: dict[str, int] = defaultdict(int)
        self._undelivered: list[tuple[str, Message]] = []  # (error, dead letter) to resend
        self._batch_started = time.monotonic()
        self._batch_read = 0
        self._batch_ts: list[int] = []  # record timestamps of the batch, for the latency
        self._abandoned = False  # stopped while the store was down: nothing more to flush
        self.consumer = make_consumer(
            settings,
            self.group_id,
            **{
                "statistics.interval.ms": 1000,
                "stats_cb": self._on_kafka_stats,
                "on_commit": self._on_commit,
            },
        )
        self.producer = make_producer(settings)

    # -- public ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in flight, commit and return (safe to call from a
        signal handler or another thread)."""
        if not self._stop.is_set():
            self.stats.state = "stopping"
        self._stop.set()

    def run(
        self, until: Callable[[], bool] | None = None, idle_timeout_s: float | None = None
    ) -> None:
        """Consume until stop() is called, `until()` is true after a flush, or nothing arrives
        for idle_timeout_s seconds with everything committed."""
        self.consumer.subscribe(
            list(self.role_of), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self.stats.state = "running"
        idle_since = time.monotonic()
        batch_size, batch_s = self.settings.sink_batch_size, self.settings.sink_batch_seconds
        alert_s = min(batch_s, self.settings.sink_alert_flush_seconds)
        try:
            while not self._stop.is_set():
                messages = self.consumer.consume(num_messages=min(batch_size, 5000), timeout=0.1)
                for msg in messages:
                    self._handle(msg)
                buffered = sum(self._pending_counts.values()) + sum(self._pending_dead.values())
                pending = bool(self._pending)  # uncommitted offsets, control records included
                if messages:
                    idle_since = time.monotonic()
                age = time.monotonic() - self._batch_started
                if pending and (
                    buffered >= batch_size
                    or age >= batch_s
                    or (self._pending_counts.get(self._alerts_topic) and age >= alert_s)
                ):
                    self.flush()
                if not pending and until is not None and until():
                    break
                if (
                    idle_timeout_s is not None
                    and not pending
                    and not self._commit_due
                    and time.monotonic() - idle_since >= idle_timeout_s
                ):
                    break
            self.flush()
            self._settle_commits()
        finally:
            self.stats.state = "stopped"
            self.consumer.close()
            self.producer.flush(10)
            log.info("sink stopped: %s", json.dumps(self.stats.snapshot(), ensure_ascii=False))

    def describe(self) -> str:
        """One line on where the sink is: for a stuck-sink report or a log."""
        age = (now_ms() - self.stats.last_flush_ms) / 1000 if self.stats.last_flush_ms else None
        lag = {t: s.lag for t, s in self.stats.topics.items() if s.lag}
        return (
            f"state={self.stats.state!r} batches={self.stats.batches} "
            f"last_flush={'never' if age is None else f'{age:.1f}s ago'} "
            f"assigned={self.stats.assigned} buffered={sum(self._pending_counts.values())} "
            f"uncommitted_partitions={len(self._pending)} commit_due={len(self._commit_due)} "
            f"commit_failures={self.stats.commit_failures} "
            f"store_failures={self.stats.store_failures} lag={lag}"
        )

    # -- per record --------------------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        role = self.role_of[topic]
        self.stats.topics[topic].read += 1
        self._pending[(topic, partition)] = offset + 1
        self._batch_read += 1
        ts_type, ts = msg.timestamp()
        if ts_type != 0:
            self._batch_ts.append(ts)
        expected, to_rows = HANDLERS[role]
        value = msg.value()
        try:
            if value is None:
                raise _Invalid("empty_value", "record has no value (tombstone or empty)")
            info, record = self.codec.decode_with_info(value)
            if info.name == "Watermark":
                self.stats.topics[topic].control += 1
                return
            if info.name != expected:
                raise _Invalid(
                    "unexpected_schema",
                    f"topic {topic} carries {expected} records, got {info.name} v{info.version}",
                )
            # input events: is the content possible?
            validate(info.name, record, now_ms() if self.settings.validate_wall_clock else None)
            lineage = Lineage(partition, offset, info.version, now_ms())
            rows = to_rows(record, lineage, self.pseudo)
            rows += self.pseudo.take_vault_rows()  # only with FUNDWATCH_REIDENTIFY_KEY
        except (CodecError, _Invalid, InvalidEvent) as exc:
            self._dead_letter(msg, role, getattr(exc, "reason_code", "invalid"), str(exc))
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._dead_letter(msg, role, "invalid_record", f"record does not map to rows: {exc!r}")
            return
        if role in ("alerts", "reviews"):
            rows = self.ranking.on_record(role, record, rows, topic, partition, offset)
        for table, row in rows:
            self._rows[table].append(row)
        self._pending_counts[topic] += 1
        if role == "alerts":
            self.stats.alerts_by_detector[record["detector_id"]] += 1
            self.stats.latest_alerts.append(
                (record["event_time"], record["detector_id"], record["kind"], record["explanation"])
            )

    def _dead_letter(self, msg: Message, role: str, reason_code: str, reason: str) -> None:
        topic = msg.topic()
        self.stats.topics[topic].dead_lettered += 1
        self.stats.dead_by_reason[(topic, reason_code)] += 1
        self._pending_dead[topic] += 1
        log.warning(
            "dead letter: %s[%d]@%d %s: %s",
            topic,
            msg.partition(),
            msg.offset(),
            reason_code,
            reason,
        )
        ts_type, ts = msg.timestamp()
        letter = {
            "dead_letter_id": dead_letter_id("sink", topic, msg.partition(), msg.offset()),
            "source_topic": topic,
            "source_partition": msg.partition(),
            "source_offset": msg.offset(),
            "record_timestamp": ts if ts_type != 0 else None,
            "key": msg.key(),
            "value": msg.value(),
            "reason_code": reason_code,
            "reason": reason,
            "detected_at": now_ms(),
            "stage": "sink",
        }
        if role == "dead_letters":
            # A dead letter that cannot be read is stored directly rather than re-queued forever.
            self._rows["dead_letters"].append(tuple(letter[c] for c in DEAD_LETTERS.insert_columns))
            return
        self.producer.produce(
            self.dead_letter_topic,
            key=topic.encode(),
            value=self.codec.encode("DeadLetter", letter),
            timestamp=letter["detected_at"],
            on_delivery=self._on_delivery,
        )
        self.producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._undelivered.append((str(err), msg))

    # -- batches -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Store buffered rows, deliver dead letters, then commit the consumed offsets."""
        if not self._pending or self._abandoned:
            self._batch_started = time.monotonic()
            return
        started = time.monotonic()
        self._store_with_retry()
        self.ranking.after_store()  # learn the stored reviews, checkpoint before the commit
        self._deliver_dead_letters()
        self._commit(self._past_markers(dict(self._pending)))
        for topic, n in self._pending_counts.items():
            self.stats.topics[topic].stored += n
        self._pending.clear()
        self._pending_counts.clear()
        self._pending_dead.clear()
        self.stats.batches += 1
        self.stats.last_flush_ms = done_ms = now_ms()
        self.stats.flush_seconds.observe(time.monotonic() - started)
        self.stats.batch_records.observe(self._batch_read)
        self.stats.latency.observe_many((done_ms - ts) / 1000 for ts in self._batch_ts)
        self._batch_read = 0
        self._batch_ts.clear()
        self._batch_started = time.monotonic()

    def _past_markers(self, pending: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """The offsets to commit, moved past the transaction markers that follow the stored
        records (the worker writes its outputs in transactions; a marker takes an offset and
        is never delivered, so committing `last offset + 1` would leave every partition one
        record "behind" its end). The consumer's position is past the records handled and the
        markers after them; a record rewound to be read again keeps the position below it."""
        try:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in pending])
        except KafkaException:
            return pending
        for tp in positions:
            key = (tp.topic, tp.partition)
            if tp.offset > pending[key]:
                pending[key] = tp.offset
        return pending

    def _commit(self, pending: dict[tuple[str, int], int]) -> None:
        """Send the stored batch's offsets to the group without waiting: the answer arrives
        in `_on_commit` during a later poll. (A synchronous commit can block for good: when a
        broker restart outlasts the group session, the rejoin needs the poll that the commit
        is blocking.) Offsets stay due until the group accepts them, so a commit that fails
        goes again with the next batch's; the rows are stored, and a re-delivery only
        replaces them. Never raised: the sink keeps running."""
        self._commit_due.update(pending)
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._commit_due.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self.stats.commit_failures += 1
            log.warning(
                "offset commit not sent (%s): %d partitions left to the next commit",
                exc.args[0] if exc.args else exc, len(offsets),
            )  # fmt: skip

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The group's answer to a commit (served by consume/poll)."""
        if err is not None:
            self.stats.commit_failures += 1
            log.warning(
                "offset commit failed (%s): %d partitions left to the next commit; their rows "
                "are stored, a re-delivery replaces them", err, len(partitions),
            )  # fmt: skip
            return
        for tp in partitions:
            if tp.error is not None or tp.offset < 0:
                continue
            key = (tp.topic, tp.partition)
            if tp.offset > self.committed.get(key, -1):
                self.committed[key] = tp.offset
            if self._commit_due.get(key, -1) <= tp.offset:
                self._commit_due.pop(key, None)

    def _settle_commits(self, timeout_s: float = COMMIT_WAIT_AT_STOP_S) -> None:
        """At a stop: wait (partitions paused, polling) for the answers to the commits in
        flight, so the next sink starts where this one stored."""
        if not self._commit_due:
            return
        self.consumer.pause(self.consumer.assignment())
        deadline = time.monotonic() + timeout_s
        while self._commit_due and time.monotonic() < deadline:
            self.consumer.poll(0.1)
        if self._commit_due:
            log.warning(
                "stopping with %d partitions' offsets not confirmed: the next sink re-reads "
                "their last stored records (the tables replace the copies)", len(self._commit_due),
            )  # fmt: skip

    def _store_with_retry(self) -> None:
        backoff = 0.5
        paused: list[TopicPartition] = []
        while True:
            try:
                for table, rows in self._rows.items():
                    if rows:
                        self.store.insert_rows(table, rows)
                        self.stats.rows[table] += len(rows)
                        rows.clear()
                self.stats.store_up = True
                break
            except Exception as exc:  # the store may fail in many ways; we retry them all
                self.stats.store_failures += 1
                self.stats.store_up = False
                self.stats.state = "store unavailable, retrying"
                log.error("store insert failed (retry in %.1fs): %s", backoff, exc)
                paused = paused or self._pause()
                if not self._wait(backoff, paused):
                    raise StoreUnavailable(
                        f"stopped while the store is unavailable ({exc}); the batch's offsets "
                        "are not committed and will be re-read"
                    ) from exc
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        if paused:
            self._resume(paused, "store available again")

    def _deliver_dead_letters(self) -> None:
        """Wait until the batch's dead letters are delivered (its offsets are committed only
        then). One the broker refused is sent again, with backoff, while the partitions are
        paused: a broker restart delays the batch, it neither loses a letter nor stops the
        sink."""
        backoff = 0.5
        paused: list[TopicPartition] = []
        while True:
            remaining = self.producer.flush(30)
            failed, self._undelivered = self._undelivered, []
            if not remaining and not failed:
                break
            self.stats.state = "dead letters undelivered, retrying"
            log.warning(
                "dead letters: %d still queued, %d refused (%s); retry in %.1fs",
                remaining, len(failed), failed[0][0] if failed else "broker unreachable", backoff,
            )  # fmt: skip
            for _, msg in failed:
                self.producer.produce(
                    self.dead_letter_topic,
                    key=msg.key(),
                    value=msg.value(),
                    timestamp=msg.timestamp()[1],
                    on_delivery=self._on_delivery,
                )
            paused = paused or self._pause()
            if not self._wait(backoff, paused):
                raise DeadLettersUndelivered(
                    f"stopped while {remaining + len(failed)} dead letters were undelivered; "
                    "the batch's offsets are not committed and will be re-read"
                )
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        if paused:
            self._resume(paused, "dead letters delivered")

    def _pause(self) -> list[TopicPartition]:
        paused = self.consumer.assignment()
        self.consumer.pause(paused)
        return paused

    def _resume(self, paused: list[TopicPartition], why: str) -> None:
        self.consumer.resume(paused)
        self.stats.state = "running"
        log.info("%s; resumed %d partitions", why, len(paused))

    def _wait(self, seconds: float, paused: list[TopicPartition]) -> bool:
        """Sleep while polling the (paused) consumer, which keeps the group membership; false
        when the sink was stopped meanwhile (the batch in flight is then abandoned). A record
        of a partition assigned meanwhile (not paused) is not dropped: its partition is paused
        too and rewound to it, so it is read again after the pause."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                tp = TopicPartition(msg.topic(), msg.partition(), msg.offset())
                self.consumer.pause([tp])
                self.consumer.seek(tp)
                paused.append(tp)
        if self._stop.is_set():
            self._abandoned = True
            return False
        return True

    # -- Kafka callbacks -----------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(partitions))
        self.stats.assigned += len(partitions)
        try:  # only bookkeeping: an error raised here would end the consume loop
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:  # a coordinator still loading after a broker restart
            log.warning("committed offsets of the new partitions unknown for now: %s", exc)
            return
        for tp in committed:
            if tp.offset >= 0:
                self.committed[(tp.topic, tp.partition)] = tp.offset

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("revoking %d partitions: flushing first", len(partitions))
        self.stats.assigned = max(0, self.stats.assigned - len(partitions))
        self.flush()
        for tp in partitions:  # their next owner commits them from now on
            self._commit_due.pop((tp.topic, tp.partition), None)

    def _on_kafka_stats(self, raw: str) -> None:
        stats = json.loads(raw)
        for topic, tstats in stats.get("topics", {}).items():
            lag = 0
            for pid, p in tstats.get("partitions", {}).items():
                if pid != "-1":
                    lag += _partition_lag(p)
            self.stats.topics[topic].lag = lag


def _partition_lag(p: dict[str, Any]) -> int:
    """Records of an assigned partition not yet committed. librdkafka reports `consumer_lag`
    -1 until the group has committed an offset: then everything from the log start is due."""
    lag = p.get("consumer_lag", -1)
    if lag >= 0:
        return lag
    hi = p.get("hi_offset", -1)
    if p.get("fetch_state") != "active" or hi < 0:
        return 0
    start = p.get("committed_offset", -1)
    if start < 0:
        start = max(p.get("lo_offset", 0), 0)
    return max(0, hi - start)


class BatchAbandoned(RuntimeError):
    """The sink was stopped while its batch in flight could not be finished: its offsets are
    not committed (the next sink re-reads it)."""


class StoreUnavailable(BatchAbandoned):
    """Stopped while the store kept failing: the batch in flight is not stored."""


class DeadLettersUndelivered(BatchAbandoned):
    """Stopped while the broker refused or could not take the batch's dead letters."""


class _Invalid(Exception):
    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


def dead_letter_id(stage: str, topic: str, partition: int, offset: int) -> str:
    """Deterministic: the same record dead-lettered twice by the same stage gets one id."""
    return hashlib.sha256(f"{stage}|{topic}|{partition}|{offset}".encode()).hexdigest()[:32]
