"""A backtest's `Replica` (a processor in replay mode) over plain objects keeps its states in
the processor's memory and writes nothing back (no table, no checkpoints); over the worker's
packed table it writes them back, still without checkpoints; both judge alike. The judging
runs under the replay's collector thresholds, and the caller's come back after it."""

from __future__ import annotations

import gc

import pytest

from models.rules.config import load_rule_config
from schemas.codec import Codec
from streams.backtest.replica import Replica, judge
from streams.backtest.sources import Input
from streams.config import Settings
from streams.simulator import SimConfig, Simulation
from streams.worker.build import REPLAY_GC_THRESHOLDS, replay_gc
from streams.worker.processor import BatchProcessor, ObjectStates, SourceRecord
from streams.worker.routing import INPUT_ROLES, partition_of
from streams.worker.state_table import PROGRESS, PackedTable

PARTITIONS = 4


@pytest.fixture(scope="module")
def world() -> dict:
    """Two days of the tiny world as the records a Kafka source would give, in time order."""
    sim = Simulation(SimConfig(preset="tiny", seed=11, start_ms=1_795_000_000_000, days=2))
    codec = Codec.default()
    offsets: dict[tuple[str, int], int] = {}
    records = []
    for rec in sim.records():
        if rec.topic not in INPUT_ROLES:
            continue  # the simulator's labels
        partition = partition_of(rec.key.encode(), PARTITIONS)
        offset = offsets[(rec.topic, partition)] = offsets.get((rec.topic, partition), -1) + 1
        value = codec.encode(rec.schema, rec.record)
        key = rec.key.encode()
        records.append(
            SourceRecord(rec.topic, rec.topic, partition, offset, key, value, rec.timestamp_ms)
        )
    return {"registry": sim.world.registry(), "records": records}


def _judge(world: dict, state: str) -> Replica:
    settings = Settings(backtest_state=state)
    rules = load_rule_config("default")
    replica = Replica.for_rules(rules, world["registry"], settings, PARTITIONS, 0)
    source = Input(iter(world["records"]), PARTITIONS, {r: r for r in INPUT_ROLES})
    end = max(r.timestamp_ms for r in world["records"]) + 86_400_000
    judge(source, [replica], end)
    return replica


def test_objects_are_kept_in_the_caches_and_never_written_back(world: dict) -> None:
    replica = _judge(world, "objects")
    assert all(isinstance(s, ObjectStates) for s in replica.proc.stores.values())
    assert replica.table == {}  # nothing written back, not even a checkpoint
    cached = sum(store.cached_keys() for store in replica.proc.stores.values())
    assert cached > 100  # the states live in the processor's caches
    assert len(replica.alerts) > 5


def test_packed_states_are_written_back_without_checkpoints(world: dict) -> None:
    replica = _judge(world, "packed")
    assert not any(isinstance(s, ObjectStates) for s in replica.proc.stores.values())
    assert isinstance(replica.table, PackedTable)
    keys = list(replica.table)
    assert len(keys) > 100
    assert not any(k.split("|")[1] == PROGRESS for k in keys)  # a replay never restarts


def test_copies_carry_their_decoded_input_record(world: dict) -> None:
    """The copies a replica feeds back carry the input record as decoded: no cache of
    forwarded events is kept, and no copy is decoded again (`test_parallel` counts it)."""
    replica = _judge(world, "objects")
    assert len(replica.proc._forwarded_events) == 0
    copies = sum(replica.proc.stats.read[r] for r in ("by_institution", "by_doctor", "by_group"))
    assert copies > 1_000


def test_both_state_forms_judge_alike(world: dict) -> None:
    objects, packed = _judge(world, "objects"), _judge(world, "packed")
    assert set(objects.alerts) == set(packed.alerts)
    for alert_id, alert in objects.alerts.items():
        assert alert.to_record() == packed.alerts[alert_id].to_record()
    assert objects.proc.stats.processed == packed.proc.stats.processed
    assert sum(objects.proc.stats.processed[r] for r in INPUT_ROLES) > 1_000


def test_states_kept_in_memory_keep_nothing_for_a_deleted_key() -> None:
    proc = BatchProcessor([], {}, partitions=1, now_ms=lambda: None, replay=True)
    proc._open_partition(0)
    store = proc.stores[0]
    store.put("card_burst", "p1", {"n": 1})
    assert store.get("card_burst", "p1") == {"n": 1}
    store.put("card_burst", "p1", None)  # deleted: nothing kept for it
    assert store.get("card_burst", "p1") is None and store.cached_keys() == 0
    assert list(proc.dirty_state()) == []


def test_a_replay_writes_no_checkpoints_and_holds_no_offsets(world: dict) -> None:
    for replay in (False, True):
        proc = BatchProcessor([], {}, partitions=PARTITIONS, now_ms=lambda: None, replay=replay)
        proc.process(world["records"][:50])
        written = [key for _, key, _ in proc.dirty_state()]
        assert any(PROGRESS in key for key in written) is not replay
        assert bool(proc._read_next) is not replay  # restart bookkeeping


def test_replay_gc_sets_and_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(1_234, 5, 6)
        with replay_gc():
            assert gc.get_threshold() == REPLAY_GC_THRESHOLDS
        assert gc.get_threshold() == (1_234, 5, 6)
        with pytest.raises(ValueError), replay_gc():
            raise ValueError("a failing judge")
        assert gc.get_threshold() == (1_234, 5, 6)
    finally:
        gc.set_threshold(*before)
