"""Poison and bad input (issue 6): every record that cannot be judged becomes a dead letter with
its reason and source position, the worker keeps going, and the counts reconcile.

The unit test drives `BatchProcessor` directly; the integration test runs a real worker process
on the local broker over a day of simulated events mixed with every kind of poison.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from models.aggregates import InstitutionHourAggregator
from models.runner import default_detectors
from schemas.codec import MAGIC, Codec
from schemas.validation import MAX_AGE_MS, MAX_AMOUNT_FEN, MAX_FUTURE_MS, REASON_CODES
from streams.config import Settings
from streams.kafka.clients import make_producer
from streams.simulator import SimConfig, Simulation
from streams.simulator.config import SHANGHAI, local_midnight_ms
from streams.simulator.output import produce_to_kafka
from streams.worker.process import WorkerProcess
from streams.worker.processor import BatchProcessor, SourceRecord
from tests.records import face_verify, settlement, trace_scan

Record = dict[str, Any]
S, TS, FV = "SettlementEvent", "TraceScanEvent", "FaceVerifyEvent"
ROLE = {S: "settlement", TS: "trace_scan", FV: "face_verify"}
KEY = {S: "person_id", TS: "trace_code", FV: "subject_id"}
WATERMARK_KEY = b"__watermark__"


def _lines(rec: Record, **over: Any) -> Record:
    """`rec` with its first line changed and totals that still add up."""
    rec = copy.deepcopy(rec)
    rec["items"][0].update(over)
    total = sum(it["amount_fen"] for it in rec["items"])
    return {**rec, "total_fen": total, "fund_paid_fen": 0, "self_paid_fen": total}


def semantic_poison(now: int) -> list[tuple[str, str, Record]]:
    """(reason code, schema, record): one codec-valid record per reason code, around `now`."""
    t = now - 3_600_000
    s, ts, fv = settlement(event_time=t), trace_scan(event_time=t), face_verify(event_time=t)
    cases = [
        ("missing_field", S, {**s, "event_id": ""}),
        ("missing_reference", TS, {**ts, "settlement_id": None}),
        ("bad_code", S, {**s, "institution_id": "H3601020000X1"}),
        ("inconsistent_region", FV, {**fv, "region_code": "440305"}),
        ("negative_amount", S, _lines(s, quantity=-2, amount_fen=-3000)),
        ("positive_reversal", S, {**s, "reversal_of": "ST00000000"}),
        (
            "absurd_amount",
            S,
            _lines(s, quantity=1, unit_price_fen=2 * MAX_AMOUNT_FEN, amount_fen=2 * MAX_AMOUNT_FEN),
        ),
        ("absurd_quantity", S, _lines(s, days_supply=100_000)),
        ("inconsistent_totals", S, {**s, "fund_paid_fen": s["fund_paid_fen"] + 1}),
        (
            "inconsistent_times",
            S,
            {**s, "visit_type": "INPATIENT", "admission_time": t - 10, "discharge_time": t - 20},
        ),
        ("out_of_range", FV, {**fv, "match_score": 7.5}),
        ("bad_purpose", FV, {**fv, "purpose": "CLOCK_IN", "settlement_id": None}),
        ("future_event_time", S, {**s, "event_time": now + MAX_FUTURE_MS + 3_600_000}),
        ("ancient_event_time", TS, {**ts, "event_time": now - MAX_AGE_MS - 86_400_000}),
    ]
    assert {c[0] for c in cases} == set(REASON_CODES)
    return cases


def wire_poison(codec: Codec) -> list[tuple[str, str, bytes | None]]:
    """(reason code, role, value): records the codec itself refuses, and misrouted ones."""
    good = codec.encode(S, settlement())
    stranger = MAGIC + bytes.fromhex("0123456789abcdef") + good[10:]  # no such writer schema
    return [
        ("not_single_object", "settlement", b"\x00" + os.urandom(40)),
        ("corrupt_avro", "settlement", good[: len(good) // 2]),
        ("unknown_fingerprint", "face_verify", stranger),
        ("unexpected_schema", "trace_scan", good),  # a settlement on the trace-scan topic
        ("empty_value", "face_verify", None),
    ]  # fmt: skip


# --------------------------------------------------------------------------- unit


def source(role: str, offset: int, value: bytes | None, key: bytes = b"k") -> SourceRecord:
    return SourceRecord(role, f"{role}-topic", 0, offset, key, value, None, ref=offset)


def test_processor_dead_letters_poison_and_forwards_only_valid_events() -> None:
    codec = Codec.default()
    now = settlement()["event_time"] + 3_600_000
    clock: Callable[[], int] = lambda: now  # noqa: E731
    proc = BatchProcessor(
        [*default_detectors(), InstitutionHourAggregator()], {}, partitions=1, now_ms=clock
    )
    records = [source("settlement", 0, codec.encode(S, settlement()))]
    expected = {}
    for i, (code, schema, rec) in enumerate(semantic_poison(now), start=1):
        records.append(source(ROLE[schema], i, codec.encode(schema, rec)))
        expected[(ROLE[schema], i)] = code
    for j, (code, role, value) in enumerate(wire_poison(codec), start=len(records)):
        records.append(source(role, j, value))
        expected[(role, j)] = code
    batch = proc.process(records)

    letters = [codec.decode(o.value, expect="DeadLetter") for o in batch.out
               if o.role == "dead_letters"]  # fmt: skip
    got = {(d["source_topic"].removesuffix("-topic"), d["source_offset"]): d for d in letters}
    assert {k: d["reason_code"] for k, d in got.items()} == expected
    for (_, offset), d in got.items():
        assert d["value"] == records[offset].value and d["stage"] == "worker"
        assert d["reason"] and "36010200000000000001" not in d["reason"]  # no person id
    # the one valid settlement is forwarded (institution, doctor, peer group), nothing else
    assert sorted(o.role for o in batch.out if o.role != "dead_letters") == [
        "by_doctor", "by_group", "by_institution",
    ]  # fmt: skip
    assert sum(proc.stats.dead_lettered.values()) == len(expected)
    assert sum(proc.stats.read.values()) == len(records)
    assert set(batch.done) >= {r.ref for r in records[1:]}  # poison is acknowledged at once


def test_processor_time_checks_use_the_injected_clock() -> None:
    codec = Codec.default()
    rec = settlement()
    early = BatchProcessor([], {}, partitions=1, now_ms=lambda: rec["event_time"] - 2 * 86_400_000)
    batch = early.process([source("settlement", 0, codec.encode(S, rec))])
    [letter] = [codec.decode(o.value) for o in batch.out if o.role == "dead_letters"]
    assert letter["reason_code"] == "future_event_time"
    on_time = BatchProcessor([], {}, partitions=1, now_ms=lambda: rec["event_time"])
    batch = on_time.process([source("settlement", 0, codec.encode(S, rec))])
    assert not [o for o in batch.out if o.role == "dead_letters"]


# --------------------------------------------------------------------------- integration


def read_all(settings: Settings, topic: str) -> list[Any]:
    """Every record of a topic, from the beginning to its current end."""
    c = Consumer({**settings.kafka_common(), "group.id": f"read-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})  # fmt: skip
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out = []
        while todo:
            msg = c.poll(10)
            assert msg is not None, f"{topic} did not reach its end"
            if msg.error():
                todo.discard(msg.partition())
                continue
            out.append(msg)
            if msg.offset() + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
        return out
    finally:
        c.close()


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
    env.update({
        "FUNDWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FUNDWATCH_WORKER_APP_ID": settings.worker_app_id,
        "FUNDWATCH_DATA_DIR": str(settings.data_dir),
    })  # fmt: skip
    for role in type(settings.topics).model_fields:
        env[f"FUNDWATCH_TOPICS__{role.upper()}__NAME"] = getattr(settings.topics, role).name
    return env


@pytest.mark.integration
@pytest.mark.slow
def test_worker_dead_letters_every_poison_and_reconciles(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings.model_copy(
        update={"worker_app_id": f"fw-poison-{uuid.uuid4().hex[:8]}", "data_dir": tmp_path}
    )
    topics = settings.topics
    codec = Codec.default()
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)

    # Poison first, record timestamps now (retention keeps them), positions from the broker.
    semantic = semantic_poison(now)
    poison: list[tuple[str, str, bytes | None]] = [
        (code, ROLE[schema], codec.encode(schema, rec)) for code, schema, rec in semantic
    ] + wire_poison(codec)
    producer = make_producer(settings)
    positions: dict[tuple[str, int, int], str] = {}
    errors: list[str] = []

    def delivered(code: str) -> Callable[[Any, Any], None]:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                positions[(msg.topic(), msg.partition(), msg.offset())] = code

        return cb

    for code, role, value in poison:
        producer.produce(getattr(topics, role).name, key=b"poison", value=value,
                         timestamp=now, on_delivery=delivered(code))  # fmt: skip
    assert producer.flush(30) == 0 and not errors, errors
    assert len(positions) == len(poison)

    # Then a simulated day that ended at the last local midnight (event times within ~32 h).
    today = dt.datetime.now(SHANGHAI).date()
    start = local_midnight_ms(today - dt.timedelta(days=1))
    summary = produce_to_kafka(
        settings, Simulation(SimConfig(preset="tiny", seed=23, start_ms=start, days=1)).records()
    )
    assert summary.total_events > 300

    worker = WorkerProcess(
        settings, None, "poison", worker_env(settings), log_path=tmp_path / "worker.log"
    ).start()
    try:
        worker.wait_caught_up(timeout_s=240)
        assert worker.alive(), "the worker died on poison"
    finally:
        code = worker.stop()
    log_tail = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    assert code == 0, log_tail

    inputs = {getattr(topics, r).name for r in ("settlement", "trace_scan", "face_verify")}
    letters = [codec.decode(m.value(), expect="DeadLetter")
               for m in read_all(settings, topics.dead_letters.name)]  # fmt: skip
    letters = [d for d in letters if d["stage"] == "worker"]
    by_position = {(d["source_topic"], d["source_partition"], d["source_offset"]): d
                   for d in letters}  # fmt: skip
    assert {k: d["reason_code"] for k, d in by_position.items()} == positions, log_tail
    assert len(letters) == len(poison)  # once each, and no valid event dead-lettered
    for d in letters:
        assert d["source_topic"] in inputs and d["reason"]

    # Reconcile: records read = judged + dead-lettered + watermark control records. A judged
    # event goes on to the institution stage when a detector there takes it: every settlement,
    # the sale scans that name their settlement (drug_swap; no stock-in scan), and the face
    # checks at a registered institution (fence_breach).
    read = control = 0
    judged: dict[str, set[str]] = {"settlement": set(), "sale": set(), "scan": set(), "face": set()}
    for name in inputs:
        for msg in read_all(settings, name):
            read += 1
            if msg.key() == WATERMARK_KEY:
                control += 1
            elif (msg.topic(), msg.partition(), msg.offset()) not in positions:
                event = codec.decode(msg.value())
                kind = ("face" if "subject_id" in event else "settlement" if "items" in event
                        else "sale" if event["scan_type"] == "SALE" else "scan")  # fmt: skip
                judged[kind].add(event["event_id"])
    assert sum(map(len, judged.values())) == summary.total_events
    assert read == summary.total_events + len(letters) + control
    assert judged["scan"] and all(judged.values())  # the day has stock-in scans
    forwarded = [codec.decode(m.value())["event_id"]
                 for m in read_all(settings, topics.by_institution.name)
                 if m.key() != WATERMARK_KEY]  # fmt: skip
    assert len(forwarded) == len(set(forwarded))  # each once
    assert set(forwarded) - judged["face"] == judged["settlement"] | judged["sale"]
    # and the valid events were judged: the institution-hour aggregates came out
    assert read_all(settings, topics.aggregates.name)
