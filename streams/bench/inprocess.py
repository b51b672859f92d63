"""The in-process paths: the floor (consume + decode), the detectors over decoded events, the
replay loop, the worker's batch logic over a dict table, and the state they keep."""

from __future__ import annotations

import gc
import json
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from models.aggregates import InstitutionHourAggregator
from models.alerts import Alert
from models.detector import Detector
from models.reference import Registry
from models.runner import DetectorSet, InMemoryStateStore, default_detectors
from schemas.codec import Codec, CodecError
from streams.config import Settings
from streams.worker.processor import BatchProcessor, SourceRecord
from streams.worker.routing import (
    INPUT_ROLES,
    STAGE_OF_DETECTOR,
    TOPIC_OF_SCHEMA,
)
from streams.worker.state_table import PackedTable, encode_state

Event = dict[str, Any]


def all_detectors(registry: Registry) -> list[Detector]:
    """What the worker runs: every rule detector and the institution-hour aggregator."""
    return [*default_detectors(registry), InstitutionHourAggregator()]


def _freeze() -> None:
    """Move what exists (the pre-decoded events) out of the collector's way, as the worker's
    `gc.freeze()` does: full collections over them would be charged to whichever detector
    happens to run."""
    gc.collect()
    gc.freeze()


# -- floor ----------------------------------------------------------------------------------
@dataclass
class FloorResult:
    events: int
    control: int
    elapsed_s: float

    @property
    def eps(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class ReadStats:
    """What a read of the topics saw."""

    events: int = 0
    control: int = 0  # watermark records
    rejected: int = 0  # undecodable or unexpected records (a replay skips them)


def read_events(
    settings: Settings,
    roles: Iterable[str] = INPUT_ROLES,
    codec: Codec | None = None,
    stats: ReadStats | None = None,
    batch: int = 10_000,
    stall_timeout_s: float = 30.0,
) -> Iterator[Event]:
    """Decoded events of the topics of `roles`, from the beginning to their end offsets at the
    start of the read, with `_topic` set as the worker sets it. Per-partition order only: the
    partitions are interleaved as the consumer delivers them (the floor does not need more)."""
    codec = codec or Codec.default()
    stats = stats if stats is not None else ReadStats()
    conf = {
        **settings.kafka_common(),
        "group.id": f"fundwatch-bench-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 52_428_800,
    }
    consumer = Consumer(conf)
    try:
        ends = _assign_whole(consumer, [getattr(settings.topics, r).name for r in roles])
        decode = codec.decode_with_info
        last_data = time.monotonic()
        while ends:
            messages = consumer.consume(batch, timeout=0.1)
            if messages:
                last_data = time.monotonic()
            elif time.monotonic() - last_data > stall_timeout_s:
                raise TimeoutError(
                    f"bench read: no records for {stall_timeout_s:.0f}s, missing {ends}"
                )
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"bench read consumer error: {err}")
                    continue
                tp = (msg.topic(), msg.partition())
                end = ends.get(tp)
                if end is None:
                    continue
                if msg.offset() + 1 >= end:
                    del ends[tp]
                try:
                    info, event = decode(msg.value())
                except CodecError:
                    stats.rejected += 1
                    continue
                topic = TOPIC_OF_SCHEMA.get(info.name)
                if topic is None:
                    if info.name == "Watermark":
                        stats.control += 1
                    else:
                        stats.rejected += 1
                    continue
                event["_topic"] = topic
                stats.events += 1
                yield event
    finally:
        consumer.close()


def measure_floor(settings: Settings) -> FloorResult:
    """Consume the input topics from the beginning with confluent-kafka and decode every record
    with fastavro, nothing else. The clock starts at the first event (connection set-up and
    metadata requests are not counted)."""
    stats = ReadStats()
    events = read_events(settings, INPUT_ROLES, stats=stats)
    if next(events, None) is None:
        return FloorResult(0, stats.control, 0.0)
    t0 = time.perf_counter()
    for _ in events:
        pass
    return FloorResult(stats.events, stats.control, time.perf_counter() - t0)


def _assign_whole(consumer: Consumer, names: list[str]) -> dict[tuple[str, int], int]:
    """Assign every non-empty partition of the topics from its start; returns its end offset
    at this moment, per (topic, partition): what the bench reads up to."""
    meta = consumer.list_topics(timeout=10)
    ends: dict[tuple[str, int], int] = {}
    assign = []
    for name in names:
        for p in meta.topics[name].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            if high > low:
                ends[(name, p)] = high
                assign.append(TopicPartition(name, p, low))
    consumer.assign(assign)
    return ends


def read_raw(settings: Settings, roles: Iterable[str] = INPUT_ROLES) -> list[SourceRecord]:
    """Every record of the topics (watermarks included) as the worker's processor receives it,
    ordered by record timestamp (roughly how a consumer interleaves partitions)."""
    consumer = Consumer(
        {**settings.kafka_common(), "group.id": "fwbench-raw", "enable.auto.commit": False}
    )
    out: list[SourceRecord] = []
    try:
        role_of = {getattr(settings.topics, role).name: role for role in roles}
        ends = _assign_whole(consumer, list(role_of))
        while ends:
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error():
                    continue
                tp = (msg.topic(), msg.partition())
                if tp in ends and msg.offset() + 1 >= ends[tp]:
                    del ends[tp]
                ts = msg.timestamp()[1]
                out.append(
                    SourceRecord(
                        role_of[msg.topic()],
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        msg.key(),
                        msg.value(),
                        ts,
                    )
                )
    finally:
        consumer.close()
    out.sort(key=lambda r: r.timestamp_ms or 0)
    return out


def decode_events(raw: list[SourceRecord], codec: Codec | None = None) -> list[Event]:
    """The decoded events of raw input records (watermarks left out), in record order."""
    codec = codec or Codec.default()
    out = []
    for rec in raw:
        info, event = codec.decode_with_info(rec.value)
        topic = TOPIC_OF_SCHEMA.get(info.name)
        if topic is not None:
            event["_topic"] = topic
            out.append(event)
    return out


# -- detectors ------------------------------------------------------------------------------
@dataclass
class DetectorsResult:
    events: int
    elapsed_s: float
    alerts: int
    timings_s: dict[str, float]
    immediate: set[str] = field(default_factory=set)  # alert ids raised by their trigger
    rss_delta_bytes: int = 0
    detector_set: DetectorSet | None = None
    cpu_s: float = 0.0  # CPU time of this process: wall >> CPU means other load on the machine

    @property
    def eps(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def per_detector(self) -> list[tuple[str, float, float]]:
        """(detector id, µs per stream event, share of detector time), most expensive first."""
        total = sum(self.timings_s.values()) or 1.0
        rows = [
            (did, t / max(self.events, 1) * 1e6, t / total) for did, t in self.timings_s.items()
        ]
        return sorted(rows, key=lambda r: -r[1])


def run_detectors(events: list[Event], registry: Registry) -> DetectorsResult:
    """The full detector set (profile=True) over pre-decoded events; timers flushed at the end
    (not timed). Also collects the ids of the alerts raised by their own triggering event."""
    ds = DetectorSet(all_detectors(registry), profile=True)
    immediate: set[str] = set()
    alerts = 0
    rss0 = rss_bytes()
    process = ds.process
    _freeze()
    c0 = time.process_time()
    t0 = time.perf_counter()
    for event in events:
        out = process(event)
        if out:
            eid = event["event_id"]
            for a in out:
                if isinstance(a, Alert):
                    alerts += 1
                    if a.evidence_event_ids and a.evidence_event_ids[-1] == eid:
                        immediate.add(a.alert_id)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    gc.unfreeze()
    rss1 = rss_bytes()
    return DetectorsResult(
        len(events), elapsed, alerts, dict(ds.timings), immediate, rss1 - rss0, ds, cpu
    )


# -- state ----------------------------------------------------------------------------------
def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of an object graph of dicts, lists, tuples, sets and scalars (shared objects once)."""
    seen = seen if seen is not None else set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        i = id(o)
        if i in seen:
            continue
        seen.add(i)
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset, deque)):
            stack.extend(o)
        elif hasattr(o, "__dict__"):
            stack.append(vars(o))
        elif hasattr(o, "__slots__"):
            stack.extend(getattr(o, s) for s in o.__slots__ if hasattr(o, s))
    return total


def json_bytes(state: Any) -> int:
    """Size of a state as the worker's table changelog stores it (faust's JSON codec)."""
    return len(json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass
class StageState:
    stage: str
    keys: int  # distinct state keys over the stage's detectors
    entities: int  # distinct entities (key up to the first "|": the person, the institution...)
    resident_bytes: int
    json_bytes: int

    @property
    def bytes_per_entity(self) -> float:
        return self.resident_bytes / self.entities if self.entities else 0.0

    @property
    def json_per_entity(self) -> float:
        return self.json_bytes / self.entities if self.entities else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures as the bench's JSON holds them."""
        return {
            "entities": self.entities,
            "keys": self.keys,
            "resident_bytes": self.resident_bytes,
            "json_bytes": self.json_bytes,
            "resident_bytes_per_entity": self.bytes_per_entity,
            "json_bytes_per_entity": self.json_per_entity,
        }


@dataclass
class StateResult:
    stages: dict[str, StageState]
    detectors: list[tuple[str, int, int, int]]  # (id, keys, resident bytes, json bytes)


def measure_state(store: InMemoryStateStore) -> StateResult:
    """Resident size (Python objects, deep) and JSON size of every stored state, per detector
    (objects counted once per detector) and per stage (once per stage: the detectors of a stage
    share e.g. the event id strings of the events they keep), entity = the key up to its
    first `|`."""
    stages: dict[str, StageState] = {}
    entities: dict[str, set[str]] = {}
    keys: dict[str, set[str]] = {}
    shared: dict[str, set[int]] = {}  # per stage: objects (event ids...) shared by detectors
    detectors = []
    for did, states in store.data.items():
        stage = STAGE_OF_DETECTOR.get(did, "other")
        st = stages.setdefault(stage, StageState(stage, 0, 0, 0, 0))
        seen_stage = shared.setdefault(stage, set())
        resident = js = 0
        seen: set[int] = set()
        for key, state in states.items():
            resident += deep_size(key, seen) + deep_size(state, seen)
            st.resident_bytes += deep_size(key, seen_stage) + deep_size(state, seen_stage)
            js += len(key) + json_bytes(state)
            entities.setdefault(stage, set()).add(key.split("|", 1)[0])
            keys.setdefault(stage, set()).add(key)
        detectors.append((did, len(states), resident, js))
        st.json_bytes += js
    for stage, st in stages.items():
        st.keys = len(keys.get(stage, ()))
        st.entities = len(entities.get(stage, ()))
    detectors.sort(key=lambda r: -r[2])
    return StateResult(stages, detectors)


def measure_packed(table: PackedTable) -> dict[str, StageState]:
    """What the worker's `PackedTable` holds in memory, per stage: each group's key and blob,
    its share of the table's dicts, and the decoded content of the groups in the hot set (deep);
    the keys kept plain as objects (deep); entity = the state key up to its first `|` (a person
    kept in two partitions counts once). `json_bytes` is the size of the packed (compressed)
    blobs."""
    stages: dict[str, StageState] = {}
    entities: dict[str, set[str]] = {}
    keys: dict[str, int] = {}
    groups = table.groups() or 1
    per_slot = table.index_bytes() / groups
    for g, blob, hot in table.packed():
        content = hot if hot is not None else table.content(g)
        if not content:
            continue
        first = next(iter(content))
        _, did, key = first.split("|", 2)
        stage = STAGE_OF_DETECTOR.get(did, "other")
        st = stages.setdefault(stage, StageState(stage, 0, 0, 0, 0))
        size = sys.getsizeof(g) + per_slot
        if blob is not None:
            size += sys.getsizeof(blob)
            st.json_bytes += len(blob)
        if hot is not None:
            size += deep_size(hot)
        st.resident_bytes += int(size)
        entities.setdefault(stage, set()).add(key.split("|", 1)[0])
        keys[stage] = keys.get(stage, 0) + len(content)
    seen: set[int] = set()
    plain = table.plain()
    per_plain = sys.getsizeof(plain) / len(plain) if plain else 0
    for table_key, state in plain.items():  # the stages kept plain, as objects
        _, did, key = table_key.split("|", 2)
        stage = STAGE_OF_DETECTOR.get(did, "other")
        st = stages.setdefault(stage, StageState(stage, 0, 0, 0, 0))
        st.resident_bytes += int(deep_size(table_key, seen) + deep_size(state, seen) + per_plain)
        entities.setdefault(stage, set()).add(key.split("|", 1)[0])
        keys[stage] = keys.get(stage, 0) + 1
    for stage, st in stages.items():
        st.entities = len(entities.get(stage, ()))
        st.keys = keys.get(stage, 0)
    return stages


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc), 0 elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


# -- the worker's batch logic over a dict table -----------------------------------------------
@dataclass
class ProcessorResult:
    events: int
    batches: int
    elapsed_s: float
    changelog_bytes: int
    changelog_writes: int
    alerts: int
    alerts_by_detector: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    state: dict[str, StageState] | None = None  # a packed table's, per stage
    loads: int = 0  # a packed table's groups decoded again, and encoded
    packs: int = 0

    @property
    def eps(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def changelog_bytes_per_event(self) -> float:
        return self.changelog_bytes / self.events if self.events else 0.0


def run_processor(
    raw: list[SourceRecord],
    registry: Registry,
    batch_size: int = 2000,
    partitions: int = 4,
    table: MutableMapping[str, Any] | None = None,
) -> ProcessorResult:
    """`BatchProcessor` as the worker drives it, without Kafka (the backtest's `Replica`):
    batches of input records, the repartitioned records fed back in the next batch, and the
    changed states written to the table (a dict, or the `PackedTable` given) after each
    batch, sized as the transactional worker encodes them (`encode_state`: the changelog
    traffic). A packed table's state figures are measured at the end (`ProcessorResult.state`)."""
    from streams.backtest.replica import Replica

    table = table if table is not None else {}
    proc = BatchProcessor(all_detectors(registry), table, partitions=partitions)
    written = writes = 0

    def count(key: str, state: Any) -> None:  # what the worker's changelog would carry
        nonlocal written, writes
        writes += 1
        written += len(key) + 2 + (0 if state is None else len(encode_state(state)))

    replica = Replica(proc, partitions, 0, on_write=count)
    _freeze()
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(0, len(raw), batch_size):
        replica.process(raw[i : i + batch_size])
    replica.drain()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    gc.unfreeze()
    events = proc.stats.valid_events()
    alerts = sum(proc.stats.alerts.values())
    result = ProcessorResult(
        events, proc.stats.batches, elapsed, written, writes, alerts, dict(proc.stats.alerts), cpu
    )
    if isinstance(table, PackedTable):
        result.state = measure_packed(table)
        result.loads, result.packs = table.loads, table.packs
    return result


# -- the backtest engine ----------------------------------------------------------------------
@dataclass
class BacktestEngineResult:
    events: int
    elapsed_s: float
    alert_ids: frozenset[str]
    workers: int = 1
    private_bytes: int | None = None  # the most one process held alone (processes only)

    @property
    def alerts(self) -> int:
        return len(self.alert_ids)

    @property
    def eps(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_backtest_engine(settings: Settings, registry: Registry) -> BacktestEngineResult:
    """The judging of `fundwatch backtest` (`streams.backtest.run`: a Kafka read of the whole
    range, the worker's batch logic over the configured rules, on `backtest_workers`
    processes), without its store writes and comparisons: the benchmark's replay figure. The
    clock runs from the start of the read (consumers, their metadata, the processes) to the
    merged alerts."""
    from models.rules.config import load_rule_config
    from streams.backtest.parallel import backtest_workers
    from streams.backtest.run import BacktestSpec, judge_range
    from streams.backtest.sources import SourceStats

    rules = load_rule_config(settings.rules_config)
    workers = backtest_workers(settings, "kafka")
    t0 = time.perf_counter()
    [judged] = judge_range(settings, BacktestSpec(0, 2**62), None, [rules], registry,
                           SourceStats(), 0)  # fmt: skip
    elapsed = time.perf_counter() - t0
    events = judged.stats.valid_events()
    return BacktestEngineResult(
        events, elapsed, frozenset(judged.alerts), workers, judged.private_bytes
    )
