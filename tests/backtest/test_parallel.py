"""A backtest judged on several processes (`streams.backtest.parallel`) raises exactly the
alerts, and counts exactly the events, dead letters and watermarks, of one process, on the real
broker; with rounds small enough to cross night-time gaps in one partition; and a process that
fails or dies stops the run with an error instead of a hang."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from models.reference import Registry
from models.rules.config import load_rule_config
from schemas.codec import Codec
from streams.backtest import parallel
from streams.backtest.parallel import Judged, backtest_workers, judge_in_processes
from streams.backtest.replica import Replica
from streams.backtest.run import BacktestSpec, judge_range
from streams.backtest.sources import SourceStats, kafka_records
from streams.config import Settings
from streams.simulator import SimConfig, Simulation
from streams.simulator.output import produce_to_kafka
from streams.stack.topics import ensure_topics
from streams.worker.routing import INPUT_ROLES, REPARTITION_ROLES
from tests.kafka_helpers import with_own_topics
from tests.worker.test_worker_e2e import recent_monday

pytestmark = pytest.mark.integration

DAYS = 4
DAY_MS = 86_400_000
BAD = 3  # undecodable records produced besides the world


@pytest.fixture(scope="module")
def world(kafka_settings: Settings) -> Iterator[dict]:
    """A tiny simulated world on input topics of its own (4 partitions), plus a few records
    no codec reads, which every way of judging must dead-letter alike."""
    settings = with_own_topics(kafka_settings, INPUT_ROLES, "par")
    topics = settings.topics
    ensure_topics(settings, [getattr(topics, r) for r in INPUT_ROLES])
    start = recent_monday(DAYS)
    sim = Simulation(SimConfig(preset="tiny", seed=5, start_ms=start, days=DAYS))
    registry = sim.world.registry()
    summary = produce_to_kafka(settings, sim.records())
    producer = Producer(settings.kafka_common())
    for i in range(BAD):
        producer.produce(
            topics.settlement.name, value=b"\x00not avro", key=f"bad-{i}".encode(),
            partition=i % 4, timestamp=start + (i + 1) * 3_600_000,
        )  # fmt: skip
    assert producer.flush(30) == 0
    yield {
        "settings": settings,
        "registry": registry,
        "events": summary.total_events,
        "from": start,
        "to": start + (DAYS + 2) * DAY_MS,
    }


def _here(world: dict, configs: list[str]) -> tuple[list[Judged], SourceStats]:
    stats = SourceStats()
    spec = BacktestSpec(world["from"], world["to"])
    rule_sets = [load_rule_config(c) for c in configs]
    one = world["settings"].model_copy(update={"backtest_workers": 1})  # in this process
    return judge_range(one, spec, None, rule_sets, world["registry"], stats, 0), stats


def _processes(world: dict, configs: list[str], n: int) -> tuple[list[Judged], SourceStats]:
    stats = SourceStats()
    totals: list[int] = []
    read: list[int] = []
    judged = judge_in_processes(
        world["settings"], world["from"], world["to"], [load_rule_config(c) for c in configs],
        world["registry"], n, stats, 0, totals.append, read.append,
    )  # fmt: skip
    assert totals == [stats.total]  # once, when every process has counted its share
    assert sum(read) == stats.read + stats.out_of_range  # progress covers every record read
    return judged, stats


def _same(a: Judged, b: Judged) -> None:
    assert set(a.alerts) == set(b.alerts)
    for alert_id, alert in a.alerts.items():
        ra, rb = alert.to_record(), b.alerts[alert_id].to_record()
        assert ra == rb, ra["detector_id"]  # the evidence too, not only the finding
    for counter in ("processed", "dead_lettered", "duplicates", "alerts"):
        assert getattr(a.stats, counter) == getattr(b.stats, counter), counter
    # the input topics' watermarks (the repartition topics carry one per batch: more batches,
    # more promises)
    assert [a.stats.control[r] for r in INPUT_ROLES] == [b.stats.control[r] for r in INPUT_ROLES]
    assert a.end_marks == b.end_marks


@pytest.fixture(scope="module")
def single(world: dict) -> tuple[list[Judged], SourceStats]:
    return _here(world, ["default", "candidate"])


@pytest.mark.parametrize("n", [2, 3])
def test_processes_judge_what_one_process_judges(world: dict, single, n: int) -> None:
    (one, base_one), one_stats = single
    assert one.stats.valid_events() == world["events"]
    assert sum(one.stats.dead_lettered.values()) == BAD
    assert len(one.alerts) > 20 and len(base_one.alerts) > 0
    (many, base_many), stats = _processes(world, ["default", "candidate"], n)
    _same(one, many)
    _same(base_one, base_many)  # the baseline's replicas run beside the candidate's
    # the memory a process held of its own (reported by the processes only)
    assert many.private_bytes is not None and many.private_bytes > 0
    assert one.private_bytes is None
    assert (stats.total, stats.read, stats.out_of_range) == (
        one_stats.total, one_stats.read, one_stats.out_of_range,
    )  # fmt: skip


@pytest.mark.parametrize("n", [1, 2])
def test_no_copy_is_decoded_twice(world: dict, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """A repartitioned copy is judged from the decoded event of its input record: kept by the
    process that forwarded it, or sent with it to the process that owns its partition. So the
    decodes are the records read, the end-of-range watermarks and the repartition topics'
    watermarks, whatever the number of processes."""
    decodes = multiprocessing.Value("i", 0)  # shared with the forked processes
    original = Codec.decode_with_info

    def counted(self: Codec, data: bytes | None) -> object:
        with decodes.get_lock():
            decodes.value += 1
        return original(self, data)

    monkeypatch.setattr(Codec, "decode_with_info", counted)
    if n == 1:
        (judged,), stats = _here(world, ["default"])
    else:
        (judged,), stats = _processes(world, ["default"], n)
    promises = sum(judged.stats.control[r] for r in REPARTITION_ROLES)
    copies = sum(judged.stats.read[r] for r in REPARTITION_ROLES) - promises
    assert copies > 1_000
    assert decodes.value == stats.read + judged.end_marks + promises


def test_small_rounds_across_gaps_longer_than_the_skew(
    world: dict, single, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounds of 50 records and one minute of allowed skew: night hours without an event in a
    partition exceed the skew many times over (each process must still read its next record),
    and the batches differ entirely from one process's 2,000-record ones."""
    monkeypatch.setattr(parallel, "ROUND_RECORDS", 50)
    monkeypatch.setattr(parallel, "SKEW_MS", 60_000)
    (many,), _ = _processes(world, ["default"], 2)
    _same(single[0][0], many)


def test_a_failing_process_stops_the_run_with_its_traceback(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Replica, records: list) -> list:
        raise ValueError("detector state is corrupt")

    monkeypatch.setattr(Replica, "run_batch", broken)  # the forked processes inherit it
    with pytest.raises(RuntimeError, match=r"backtest process [01] failed") as info:
        _processes(world, ["default"], 2)
    assert "ValueError: detector state is corrupt" in str(info.value)  # the child's traceback


def test_a_process_that_dies_stops_the_run(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def die(self: Replica, records: list) -> list:
        os._exit(3)  # as the kernel's OOM killer would: no report

    monkeypatch.setattr(Replica, "run_batch", die)
    with pytest.raises(RuntimeError, match=r"backtest process [01] ended without its results"):
        _processes(world, ["default"], 2)


def test_each_process_reads_its_share_of_the_partitions(world: dict) -> None:
    seen: list[set[tuple[str, int]]] = []
    for i in range(3):
        source = kafka_records(world["settings"], world["from"], world["to"], SourceStats(),
                               share=(i, 3))  # fmt: skip
        assert source.partitions == 4  # the topics' count, whatever the share
        seen.append({(r.topic, r.partition) for r in source.records})
    assert {p for _, p in seen[0]} == {0, 3}
    assert {p for _, p in seen[1]} == {1}
    assert {p for _, p in seen[2]} == {2}


def test_worker_count(kafka_settings: Settings) -> None:
    assert backtest_workers(kafka_settings.model_copy(update={"backtest_workers": 3}), "kafka") == 3
    assert backtest_workers(kafka_settings.model_copy(update={"backtest_workers": 0}), "kafka") == (
        parallel.default_workers()
    )
    # a ClickHouse source is one query, judged where it is read
    assert backtest_workers(kafka_settings.model_copy(update={"backtest_workers": 3}),
                            "clickhouse") == 1  # fmt: skip
    with pytest.raises(ValueError, match="at least 2"):
        judge_in_processes(kafka_settings, 0, 1, [], Registry(), 1, SourceStats(), 0)
