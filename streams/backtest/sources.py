"""Where a backtest reads its events: the input topics, or the raw ClickHouse tables.

Both give raw input records (`SourceRecord`: role, partition, offset, key, Avro bytes) as the
worker's processor receives them from Kafka, so the backtest judges them with the worker's own
batch logic (decoding, validation, reorder buffers, repartitioning): the processor judges in
`(event_time, topic, event_id)` order whatever the interleaving of partitions and topics.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas.codec import Codec
from streams.config import Settings
from streams.simulator.config import SHANGHAI, parse_start
from streams.store.client import Store
from streams.worker.processor import SourceRecord
from streams.worker.routing import INPUT_ROLES, TOPIC_OF_SCHEMA

Event = dict[str, Any]
SCHEMA_OF_TOPIC = {topic: name for name, topic in TOPIC_OF_SCHEMA.items()}


def parse_time(text: str, what: str = "a time") -> int:
    """`YYYY-MM-DD` (local midnight) or an ISO date-time, as epoch ms: the simulator's parser."""
    return parse_start(text, what)


def show_time(ms: int) -> str:
    """Epoch ms as local ISO time (for reports)."""
    return dt.datetime.fromtimestamp(ms / 1000, SHANGHAI).isoformat(timespec="seconds")


@dataclass
class SourceStats:
    """What a run read and judged; `invalid` are skipped like the worker's dead letters."""

    total: int = 0  # records expected (from offsets or row counts), for the progress bar
    read: int = 0  # records read in [from, to), watermark records included
    valid: int = 0  # events judged (set from the processor)
    control: int = 0  # watermark records (set from the processor)
    out_of_range: int = 0  # between the boundary offsets but outside [from, to)
    invalid: Counter[str] = field(default_factory=Counter)  # reason code -> count

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())

    @property
    def events_read(self) -> int:
        """Records read that are not watermarks."""
        return self.read - self.control


# --- Kafka ---------------------------------------------------------------------------------


@dataclass
class Input:
    """Raw input records as the worker's processor receives them, and the input partitions."""

    records: Iterator[SourceRecord]
    partitions: int
    topics: dict[str, str]  # role -> topic name


def kafka_records(
    settings: Settings,
    from_ms: int,
    to_ms: int,
    stats: SourceStats,
    on_read: Callable[[int], None] | None = None,
    stall_timeout_s: float = 30.0,
    share: tuple[int, int] | None = None,
) -> Input:
    """The input topics' records with `from_ms <= record timestamp < to_ms` (timestamp = event
    time; watermark records included, they carry the producers' progress). Each partition is read
    from `offsets_for_times(from)` to `offsets_for_times(to)` by an assigned consumer of a
    throwaway group that commits nothing. Consumption order: the processor's reorder buffer
    judges in event-time order whatever the interleaving; the reader merges the partitions in
    event time so that buffer stays small (`_consume`). `share=(i, n)`: only the partitions
    `p % n == i` of each topic (process i of n, `streams.backtest.parallel`); `partitions` is
    still the topics' partition count."""
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"fundwatch-backtest-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            # history is all there: a fetch that finds a partition at its end must not wait the
            # default 500 ms, or a resumed partition waits for it (see _pause_far_ahead)
            "fetch.wait.max.ms": 10,
        }
    )
    topics = {role: getattr(settings.topics, role).name for role in INPUT_ROLES}
    try:
        meta = consumer.list_topics(timeout=10)
        bounds: dict[tuple[str, int], tuple[int, int]] = {}
        partitions = 0
        for name in topics.values():
            if name not in meta.topics or meta.topics[name].error is not None:
                raise RuntimeError(f"backtest: topic {name} does not exist")
            parts = sorted(meta.topics[name].partitions)
            partitions = max(partitions, len(parts))
            starts = consumer.offsets_for_times(
                [TopicPartition(name, p, from_ms) for p in parts], timeout=10
            )
            ends = consumer.offsets_for_times(
                [TopicPartition(name, p, to_ms) for p in parts], timeout=10
            )
            for s, e in zip(starts, ends, strict=True):
                if share is not None and s.partition % share[1] != share[0]:
                    continue  # another process reads it
                if s.offset < 0:
                    continue  # nothing at or after `from`
                end = e.offset
                if end < 0:  # nothing at or after `to`: read to the end
                    end = consumer.get_watermark_offsets(TopicPartition(name, s.partition))[1]
                if end > s.offset:
                    bounds[(name, s.partition)] = (s.offset, end)
    except BaseException:
        consumer.close()
        raise
    stats.total = sum(end - start for start, end in bounds.values())
    return Input(
        _consume(consumer, bounds, topics, from_ms, to_ms, stats, on_read, stall_timeout_s),
        partitions,
        topics,
    )


MAX_AHEAD = 200_000
"""Records fetched ahead of the slowest partition that the reader keeps before it pauses the
partitions furthest ahead (a city day on one partition is about 100,000 records)."""


def _consume(
    consumer: Consumer,
    bounds: dict[tuple[str, int], tuple[int, int]],
    topics: dict[str, str],
    from_ms: int,
    to_ms: int,
    stats: SourceStats,
    on_read: Callable[[int], None] | None,
    stall_timeout_s: float,
) -> Iterator[SourceRecord]:
    """The records of every partition, merged in event-time order as far as the partitions
    still being read allow: a record is released once every such partition has reached its
    time. librdkafka may fetch one partition days ahead of another; released in its order, the
    records of the fast partition would wait in the stages' reorder buffers as decoded events
    (gigabytes over a city week). Here they wait as raw records, and past MAX_AHEAD of them the
    partitions furthest ahead are paused (resuming drops librdkafka's prefetch and costs a
    fetch, so a small world is never paused)."""
    role_of = {name: role for role, name in topics.items()}
    try:
        if not bounds:
            return
        consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in bounds.items()])
        active = set(bounds)
        next_offset = {tp: start for tp, (start, _) in bounds.items()}
        read_to = dict.fromkeys(bounds, from_ms)  # event time each partition has reached
        ahead: list[tuple[int, int, SourceRecord]] = []  # (time, sequence, record): a heap
        seq = itertools.count()
        paused: set[tuple[str, int]] = set()
        last_data = time.monotonic()
        while active:
            _pause_far_ahead(consumer, active, read_to, paused, len(ahead))
            messages = consumer.consume(2_000, timeout=0.2)
            if messages:
                last_data = time.monotonic()
            elif time.monotonic() - last_data > stall_timeout_s:
                raise TimeoutError(f"backtest: no records for {stall_timeout_s:.0f}s")
            taken = kept = 0
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"backtest consumer error: {err}")
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                tp = (topic, partition)
                expected = next_offset.get(tp)
                if tp not in active or offset < expected:
                    continue  # finished, or fetched again after a pause
                if offset > expected:  # a resumed partition must not skip records
                    raise RuntimeError(
                        f"backtest: {topic}[{partition}] jumped from offset {expected} to {offset}"
                    )
                next_offset[tp] = offset + 1
                end = bounds[tp][1]
                if offset + 1 >= end:
                    active.discard(tp)
                    if offset >= end:
                        continue
                taken += 1
                ts = msg.timestamp()[1]
                if ts > read_to[tp]:
                    read_to[tp] = ts
                if not from_ms <= ts < to_ms:
                    stats.out_of_range += 1
                    continue
                kept += 1
                rec = SourceRecord(
                    role_of[topic], topic, partition, offset, msg.key(), msg.value(), ts
                )
                heapq.heappush(ahead, (ts, next(seq), rec))
            stats.read += kept
            if on_read is not None and taken:
                on_read(taken)
            limit = min((read_to[tp] for tp in active), default=None)
            while ahead and (limit is None or ahead[0][0] <= limit):
                yield heapq.heappop(ahead)[2]
        while ahead:
            yield heapq.heappop(ahead)[2]
    finally:
        consumer.close()


def _pause_far_ahead(
    consumer: Consumer,
    active: set[tuple[str, int]],
    read_to: dict[tuple[str, int], int],
    paused: set[tuple[str, int]],
    waiting: int,
) -> None:
    """With more than MAX_AHEAD records waiting, pause the active partitions ahead of the
    slowest one; resume them all once fewer than half wait. The slowest is never paused, so
    reading always progresses."""
    paused &= active
    if waiting > MAX_AHEAD:
        low = min(read_to[tp] for tp in active)
        more = {tp for tp in active if read_to[tp] > low} - paused
        if more:
            consumer.pause([TopicPartition(t, p) for t, p in more])
            paused |= more
    elif paused and waiting < MAX_AHEAD // 2:
        consumer.resume([TopicPartition(t, p) for t, p in paused])
        paused.clear()


# --- ClickHouse ----------------------------------------------------------------------------


def _ms(col: str) -> str:
    return f"toUnixTimestamp64Milli({col})"


_SETTLEMENT_SQL = """
SELECT s.event_id, {t}, s.person_id, toString(s.institution_id), toString(s.institution_type),
    s.institution_level, toString(s.region_code), s.doctor_id, s.pharmacist_id,
    CAST(s.department, 'Nullable(String)'), toString(s.visit_type), {adm}, {dis},
    CAST(s.diagnosis_codes, 'Array(String)'), s.total_fen, s.fund_paid_fen, s.self_paid_fen,
    toString(s.channel), s.face_verify_id, s.reversal_of, i.items, s.source_partition,
    s.source_offset
FROM {db}.settlements AS s FINAL
LEFT JOIN (
    SELECT settlement_id, groupArray((line_no, item_code, item_name, toString(item_type),
        CAST(generic_group, 'Nullable(String)'), quantity, unit_price_fen, amount_fen,
        days_supply, trace_codes)) AS items
    FROM {db}.settlement_items FINAL
    WHERE event_time >= fromUnixTimestamp64Milli({{f:Int64}})
      AND event_time < fromUnixTimestamp64Milli({{u:Int64}})
    GROUP BY settlement_id
) AS i ON i.settlement_id = s.event_id
WHERE s.event_time >= fromUnixTimestamp64Milli({{f:Int64}})
  AND s.event_time < fromUnixTimestamp64Milli({{u:Int64}})
ORDER BY s.event_time, s.event_id
"""

_SCAN_SQL = """
SELECT event_id, {t}, trace_code, toString(product_code), toString(drug_code),
    toString(scan_type), toString(institution_id), toString(region_code), settlement_id, batch_no,
    operator_id, source_partition, source_offset
FROM {db}.trace_scans FINAL
WHERE event_time >= fromUnixTimestamp64Milli({{f:Int64}})
  AND event_time < fromUnixTimestamp64Milli({{u:Int64}})
ORDER BY event_time, event_id
"""

_FACE_SQL = """
SELECT event_id, {t}, toString(subject_type), subject_id, toString(purpose),
    toString(institution_id), toString(region_code), device_id, device_lat, device_lon,
    toFloat64(match_score), liveness_passed, CAST(liveness_score, 'Nullable(Float64)'),
    toString(result), settlement_id, source_partition, source_offset
FROM {db}.face_verifications FINAL
WHERE event_time >= fromUnixTimestamp64Milli({{f:Int64}})
  AND event_time < fromUnixTimestamp64Milli({{u:Int64}})
ORDER BY event_time, event_id
"""


def _settlement(r: tuple) -> Event:
    items = sorted(r[20] or [], key=lambda it: it[0])
    return {
        "event_id": r[0], "event_time": r[1], "person_id": r[2], "institution_id": r[3],
        "institution_type": r[4], "institution_level": r[5], "region_code": r[6],
        "doctor_id": r[7], "pharmacist_id": r[8], "department": r[9], "visit_type": r[10],
        "admission_time": r[11], "discharge_time": r[12], "diagnosis_codes": list(r[13]),
        "items": [
            {"line_no": it[0], "item_code": it[1], "item_name": it[2], "item_type": it[3],
             "generic_group": it[4], "quantity": it[5], "unit_price_fen": it[6],
             "amount_fen": it[7], "days_supply": it[8], "trace_codes": list(it[9])}
            for it in items
        ],
        "total_fen": r[14], "fund_paid_fen": r[15], "self_paid_fen": r[16], "channel": r[17],
        "face_verify_id": r[18], "reversal_of": r[19],
    }  # fmt: skip


def _scan(r: tuple) -> Event:
    keys = ("event_id", "event_time", "trace_code", "product_code", "drug_code",
            "scan_type", "institution_id", "region_code", "settlement_id", "batch_no",
            "operator_id")  # fmt: skip
    return dict(zip(keys, r[:11], strict=True))


def _face(r: tuple) -> Event:
    keys = ("event_id", "event_time", "subject_type", "subject_id", "purpose", "institution_id",
            "region_code", "device_id", "device_lat", "device_lon", "match_score",
            "liveness_passed", "liveness_score", "result", "settlement_id")  # fmt: skip
    return dict(zip(keys, r[:15], strict=True))


KEY_FIELD = {"settlement": "person_id", "trace_scan": "trace_code", "face_verify": "subject_id"}
"""The field each input topic is keyed by (what its producers partition on)."""


def clickhouse_records(
    settings: Settings,
    store: Store,
    from_ms: int,
    to_ms: int,
    stats: SourceStats,
    on_read: Callable[[int], None] | None = None,
    codec: Codec | None = None,
    chunk_ms: int = 86_400_000,
) -> Input:
    """Input records rebuilt from the raw tables (`FINAL`: one row per event id), for history
    past Kafka's retention: the reverse of `streams/sink/rows.py`, re-encoded as the topics
    carried them, on the partition and offset the sink stored (so the worker's per-partition
    stages see the same events). Person ids are the stored pseudonyms: a stable key, so
    per-person windows are the same, but the alert ids of person alerts differ from Kafka's
    (the id hashes the entity). Merged in `(event_time, topic, event_id)` order."""
    codec = codec or Codec.default()
    db = f"`{store.database}`"
    params = {"f": from_ms, "u": to_ms}
    adm = f"if(s.admission_time IS NULL, NULL, {_ms('assumeNotNull(s.admission_time)')})"
    dis = f"if(s.discharge_time IS NULL, NULL, {_ms('assumeNotNull(s.discharge_time)')})"
    specs: list[tuple[str, str, Callable[[tuple], Event]]] = [
        ("settlement", _SETTLEMENT_SQL.format(db=db, t=_ms("s.event_time"), adm=adm, dis=dis),
         _settlement),
        ("trace_scan", _SCAN_SQL.format(db=db, t=_ms("event_time")), _scan),
        ("face_verify", _FACE_SQL.format(db=db, t=_ms("event_time")), _face),
    ]  # fmt: skip
    topics = {role: getattr(settings.topics, role).name for role in INPUT_ROLES}
    partitions = max(getattr(settings.topics, role).partitions for role in INPUT_ROLES)
    for table in ("settlements", "trace_scans", "face_verifications"):
        n, top = store.query_rows(
            f"SELECT count(), max(source_partition) FROM {db}.{table} FINAL "
            "WHERE event_time >= fromUnixTimestamp64Milli({f:Int64}) "
            "AND event_time < fromUnixTimestamp64Milli({u:Int64})",
            params,
        )[0]
        stats.total += int(n)
        if n:
            partitions = max(partitions, int(top) + 1)

    def records() -> Iterator[SourceRecord]:
        # a day at a time: memory stays bounded over years of history
        for start in range(from_ms, to_ms, chunk_ms):
            chunk = {"f": start, "u": min(start + chunk_ms, to_ms)}
            streams = [
                _rows_to_records(
                    role, topics[role], store.query_rows(sql, chunk), build, stats, on_read, codec
                )
                for role, sql, build in specs
            ]
            for _, rec in heapq.merge(*streams, key=lambda item: item[0]):
                yield rec

    return Input(records(), partitions, topics)


def _rows_to_records(
    role: str,
    topic: str,
    rows: list[tuple],
    build: Callable[[tuple], Event],
    stats: SourceStats,
    on_read: Callable[[int], None] | None,
    codec: Codec,
) -> Iterator[tuple[tuple[int, str, str], SourceRecord]]:
    name = SCHEMA_OF_TOPIC[role]
    key_field = KEY_FIELD[role]
    for row in rows:
        stats.read += 1
        if on_read is not None:
            on_read(1)
        event = build(row)
        value = codec.encode(name, event)
        t = event["event_time"]
        rec = SourceRecord(
            role, topic, int(row[-2]), int(row[-1]), str(event[key_field]).encode(), value, t
        )
        yield (t, role, event["event_id"]), rec
