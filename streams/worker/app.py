"""The faust app: one agent over the input and repartition topics, state in a RocksDB table.

Per batch (`stream.take_events`): the BatchProcessor decodes the records, forwards them to the
repartition topics and judges those every input has passed (its event-time reorder buffer);
the agent sends alerts, repartitioned records and dead letters, writes the changed detector
states to the table (RocksDB + changelog topic), flushes the producer, and only then
acknowledges the records the processor is done with. Offsets are committed for acknowledged
records only, so a crash at any point replays records whose outputs may not have been
delivered: at-least-once, made effectively-once downstream by deterministic alert ids and
ReplacingMergeTree tables.

Faust refuses table writes outside per-event iteration (faust-streaming#497: its RocksDB store
takes the partition from the "current event"). We set the current event ourselves to an event
of the partition whose state is written, so each state lands in the changelog partition of its
source partition, where faust restores it after a restart or a rebalance.
"""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, TopicPartition
from faust.streams import _current_event
from faust.types import TP, EventT

from streams.config import Settings
from streams.worker.atomic import atomic_writes
from streams.worker.build import build_processor
from streams.worker.metrics import WorkerMetrics
from streams.worker.processor import (
    ORIGIN_HEADER,
    Batch,
    BatchProcessor,
    Origin,
    SourceRecord,
    origin_header,
    parse_origin,
)
from streams.worker.routing import SOURCE_ROLES

log = logging.getLogger(__name__)

STATE_TABLE = "detector-state"
REWIND_CHECK_S = 2.0
"""How often the worker looks for gaps in a source's offsets to read again (see
`BatchProcessor._in_offset_order`)."""
HELD_WARNING_S = 30.0
"""How long a commit may wait for a held record (or a gap) before the worker says so."""


def broker_credentials(settings: Settings) -> Any:
    """faust (aiokafka) credentials from the same settings the librdkafka clients use."""
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ssl_context = None
    if proto in ("SSL", "SASL_SSL"):
        import ssl

        ssl_context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)
        if settings.kafka_ssl_certificate_location:
            password = settings.kafka_ssl_key_password
            ssl_context.load_cert_chain(
                settings.kafka_ssl_certificate_location,
                settings.kafka_ssl_key_location,
                password.get_secret_value() if password else None,
            )
    if proto.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def guard_commits(
    lowest_held: Callable[[str, int], int | None],
    why_held: Callable[[str, int], str],
    reading: Callable[[str, int], str],
) -> None:
    """Never commit past a record the worker still holds.

    faust computes the committable offset from the first run of acknowledged offsets, and lets
    one unacknowledged record at the head slip (faust-streaming#606, fix pending in #707): with
    offset N committed and N held, acknowledged N+1.. would be committed over it. The reorder
    buffer holds records on purpose, so we refuse that case before faust's own logic runs.
    """
    from faust.transport.consumer import Consumer

    original = Consumer._new_offset
    if getattr(original, "_fundwatch_guard", False):
        return

    warned: dict[Any, float] = {}
    held_since: dict[Any, tuple[int, float]] = {}  # per partition: (lowest held, since)

    def _new_offset(self: Consumer, tp: Any) -> int | None:
        low = lowest_held(tp.topic, tp.partition)
        acked = self._acked[tp]
        if low is not None:  # a record the reorder buffer holds: by design, unless it lasts
            now = time.monotonic()
            since = held_since.get(tp)
            if since is None or since[0] != low:
                since = held_since[tp] = (low, now)
            first = since[1]
            if now - first > HELD_WARNING_S and now - warned.get(tp, -1e9) > HELD_WARNING_S:
                warned[tp] = now
                log.warning(
                    "commit of %s[%d] held back for %.0fs by offset %d: %s",
                    tp.topic, tp.partition, now - first, low, why_held(tp.topic, tp.partition),
                )  # fmt: skip
            if acked and min(acked) > low:
                return None
        offset = original(self, tp)
        if offset is None and acked:  # nothing held, yet faust sees a gap at the head
            now = time.monotonic()
            if now - warned.get(tp, -1e9) > HELD_WARNING_S:
                warned[tp] = now
                log.warning(
                    "commit of %s[%d] waits for unacknowledged records: committed %s, lowest "
                    "acknowledged %d (%d acknowledged); none is held by the reorder buffer; %s",
                    tp.topic, tp.partition, self._committed_offset[tp], min(acked), len(acked),
                    reading(tp.topic, tp.partition),
                )  # fmt: skip
        else:
            warned.pop(tp, None)
        return offset

    _new_offset._fundwatch_guard = True  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]


def consumer_conf(settings: Settings) -> dict[str, Any]:
    """The faust settings of the worker's consumer and producer (broker, group, commits,
    stream buffer), shared with the benchmark's bare faust app (streams/bench/bare_faust.py)
    so that it measures the same set-up."""
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "broker_credentials": broker_credentials(settings),
        "topic_partitions": settings.topics.settlement.partitions,
        "topic_replication_factor": settings.kafka_replication_factor,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "web_enabled": False,
        "broker_commit_interval": 1.0,
        "broker_session_timeout": settings.worker_session_timeout_s,
        "broker_heartbeat_interval": settings.worker_heartbeat_interval_s,
        # held records stay uncommitted; a rebalance must not wait for them
        "stream_wait_empty": False,
        "stream_buffer_maxsize": max(4096, settings.worker_batch_size * 2),
    }


class RestartOffsets:
    """Where the worker's group (re)starts reading a partition: its committed offset, or the
    log start for a group that has none (`consumer_auto_offset_reset` is earliest). Asked once
    per source partition each time the processor opens a partition; None when the broker
    cannot say (the processor then takes the first record it gets)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: Consumer | None = None

    def __call__(self, topic: str, partition: int) -> int | None:
        tp = TopicPartition(topic, partition)
        try:
            if self._consumer is None:
                conf = {**self.settings.kafka_common(), "group.id": self.settings.worker_app_id}
                self._consumer = Consumer(conf)
            (committed,) = self._consumer.committed([tp], timeout=10)
            low, _ = self._consumer.get_watermark_offsets(tp, timeout=10)
        except KafkaException as exc:
            log.warning("restart offset of %s[%d] unknown: %s", topic, partition, exc)
            return None
        return max(committed.offset, low) if committed.offset >= 0 else low


def create_app(settings: Settings, name: str = "worker-1") -> faust.App:
    """Build the worker app (topics, table, agent) for these settings."""
    topics = settings.topics
    partitions = topics.settlement.partitions
    datadir = settings.data_dir / "worker" / settings.worker_app_id / name
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.worker_app_id,
        store="rocksdb://",
        datadir=str(datadir),
        table_standby_replicas=0,
        **consumer_conf(settings),
    )
    role_of = {getattr(topics, role).name: role for role in SOURCE_ROLES}
    for role in SOURCE_ROLES:
        if getattr(topics, role).partitions != partitions:
            raise ValueError(
                f"topic {getattr(topics, role).name} must have {partitions} partitions like "
                "the settlement topic: the worker co-partitions all of them"
            )
    source = app.topic(
        *role_of, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    out_names = {
        "alerts": topics.alerts.name,
        "aggregates": topics.aggregates.name,
        "dead_letters": topics.dead_letters.name,
        "by_institution": topics.by_institution.name,
        "by_doctor": topics.by_doctor.name,
        "by_group": topics.by_group.name,
    }
    table = app.Table(STATE_TABLE, default=None, partitions=partitions, key_type=str)
    holder: dict[str, BatchProcessor] = {}

    def processor() -> BatchProcessor:
        if "p" not in holder:  # judge each source in offset order (faust skips records)
            holder["p"] = build_processor(settings, table, RestartOffsets(settings))
        return holder["p"]

    guard_commits(
        lambda topic, partition: processor().lowest_held(topic, partition),
        lambda topic, partition: processor().why_held(topic, partition),
        lambda topic, partition: processor().reading(topic, partition),
    )
    metrics = WorkerMetrics(settings, app, lambda: holder.get("p"), name)

    @app.agent(source, name="detect")
    async def detect(stream: faust.StreamT) -> None:
        gc.freeze()  # long-lived objects out of the collector's way (detector state churn)
        async for events in stream.take_events(
            settings.worker_batch_size, within=settings.worker_batch_seconds
        ):
            started = time.monotonic()
            batch = await _process_batch(
                stream, events, processor(), role_of, out_names, table, app
            )
            metrics.batch_done(events, batch, started)

    @app.on_partitions_assigned.connect
    async def _assigned(app: faust.App, assigned: set, **kwargs: Any) -> None:
        for tp in assigned:
            processor().assigned(tp.topic, tp.partition)

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: set, **kwargs: Any) -> None:
        if "p" in holder:
            for partition in sorted({tp.partition for tp in revoked}):
                holder["p"].drop_partition(partition)

    @app.timer(REWIND_CHECK_S)
    async def _rewind_gaps() -> None:
        if "p" not in holder:
            return
        for topic, partition, offset in holder["p"].due_rewinds():
            log.info(
                "%s[%d]: offset %d still missing; reading from it again", topic, partition, offset
            )
            await app.consumer.seek(TP(topic, partition), offset)

    @app.timer(HELD_WARNING_S)
    async def _report_stalls() -> None:
        for line in metrics.stalled():
            log.warning("no commit for %.0fs: %s", HELD_WARNING_S, line)

    app.fundwatch_processor = processor  # type: ignore[attr-defined]
    app.fundwatch_metrics = metrics  # type: ignore[attr-defined]
    return app


async def _process_batch(
    stream: faust.StreamT,
    events: list[EventT],
    proc: BatchProcessor,
    role_of: dict[str, str],
    out_names: dict[str, str],
    table: Any,
    app: faust.App,
) -> Batch:
    # Events fetched before a rebalance reach the agent after it (faust's take_events buffer):
    # their partitions were revoked, and the new owner (maybe this worker again) reads them
    # again from the committed offset. Judging them here would reopen a revoked partition with
    # stale buffers, and acknowledging them would mark offsets the new generation has not
    # judged.
    generation = app.consumer_generation_id
    current = [ev for ev in events if ev.message.generation_id == generation]
    if len(current) < len(events):
        log.info("skipped %d records fetched before a rebalance", len(events) - len(current))
    records = []
    anchor: dict[int, EventT] = {}
    for ev in current:
        msg = ev.message
        msg.incref()  # held until the processor is done with it (see below)
        anchor[msg.partition] = ev
        records.append(
            SourceRecord(
                role_of[msg.topic], msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                int(msg.timestamp * 1000) if msg.timestamp else None, ev,
                _origin_of(msg.headers) if msg.headers else None,
            )
        )  # fmt: skip
    batch = proc.process(records)
    for topic, partition, offset in batch.rewind:
        # faust read past a record it will not deliver again: read the partition again from it
        await app.consumer.seek(TP(topic, partition), offset)
    producer = app.producer
    for rec in batch.out:
        headers = [origin_header(rec.origin)] if rec.origin is not None else None
        await producer.send(
            out_names[rec.role], rec.key, rec.value, rec.partition, rec.timestamp_ms / 1000.0,
            headers,
        )  # fmt: skip
    # Outputs first: a state that says "alert raised" must never outlive a lost alert. If we
    # stop between here and the acks, the records are re-read and re-judged; their alerts come
    # out again with the same ids.
    await producer.flush()
    # Write the changed states, each with an event of its own partition as the current event.
    by_partition: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for partition, key, state in proc.dirty_state():
        by_partition[partition].append((key, state))
    # All of a partition's states and its checkpoint reach RocksDB in one write, so a kill in
    # this loop cannot keep half a batch (streams/worker/atomic.py).
    with atomic_writes(table):
        for partition, writes in by_partition.items():
            token = _current_event.set(weakref.ref(anchor[partition]))  # see module docstring
            try:
                for key, state in writes:
                    if state is None:
                        table.pop(key, None)
                    else:
                        table[key] = state
            finally:
                _current_event.reset(token)
    await _drain(producer)
    # Only now, with their outputs and state delivered, may records be committed. A record the
    # reorder buffer still holds keeps the reference taken above, so faust commits no offset
    # past it; a crash or a rebalance re-reads it. After a rebalance during this batch, nothing
    # is acknowledged: the partitions were revoked and are read again from the committed offset.
    if app.consumer_generation_id != generation:
        log.info("a rebalance during the batch: %d records left to be read again", len(batch.done))
        return batch
    for ev in batch.done:
        await stream.ack(ev)
    return batch


DRAIN_TIMEOUT_S = 30.0


class ChangelogNotFlushed(RuntimeError):
    """The batch's table writes could not be sent: its records stay unacknowledged."""


async def _drain(producer: Any, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Flush the producer, table changelog writes included. faust's `flush()` gives up on its
    buffer of table writes when a message takes over 0.1 s (`flush_atmost`): loop until it
    is empty, so no offset is acknowledged before the states it depends on are sent. When the
    buffer cannot drain (the worker is stopping and faust has stopped the task that sends it,
    or the broker is unreachable for `timeout_s`), raise instead of acknowledging: the records
    are read again by the next owner."""
    buffer = producer.buffer
    deadline = time.monotonic() + timeout_s
    while buffer.size:
        if buffer.should_stop or time.monotonic() > deadline:
            raise ChangelogNotFlushed(
                f"{buffer.size} table writes not sent; the batch stays unacknowledged"
            )
        await buffer.flush()
    await producer.flush()


def _origin_of(headers: Any) -> Origin | None:
    """The origin header of a repartitioned copy (faust gives headers as a list or a dict)."""
    items = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        if name == ORIGIN_HEADER and value:
            return parse_origin(value)
    return None
