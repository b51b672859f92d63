"""The stream: event-time order, code shapes, schema validity, determinism, bounds."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from schemas.codec import Codec
from streams.simulator import SimConfig, Simulation, simulate
from streams.simulator.config import DAY_MS
from streams.simulator.events import EVENT_TOPICS, SCHEMAS

from .conftest import START, Run

REPO = Path(__file__).resolve().parents[2]
TRACE = re.compile(r"^\d{20}$")
EVENT_ID = re.compile(r"^(ST|TS|FV|LB)\d{10}[0-9a-f]{8}$")


def test_event_time_order_within_the_run(tiny: Run):
    times = [r.timestamp_ms for r in tiny.records]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + 14 * DAY_MS
    assert all(r.timestamp_ms == r.record["event_time"] for r in tiny.records)


def test_keys_and_schemas(tiny: Run):
    keys = {
        "settlement": "person_id",
        "trace_scan": "trace_code",
        "face_verify": "subject_id",
        "sim_labels": "label_id",
    }
    for r in tiny.records:
        assert r.schema == SCHEMAS[r.topic]
        assert r.key == r.record[keys[r.topic]]
    ids = [r.record.get("event_id") or r.record["label_id"] for r in tiny.records]
    assert len(set(ids)) == len(ids)
    assert all(EVENT_ID.match(i) for i in ids)


def test_every_record_encodes_and_round_trips(tiny: Run):
    codec = Codec.default()
    for r in tiny.records:
        assert codec.decode(codec.encode(r.schema, r.record), expect=r.schema) == r.record


def test_trace_codes_belong_to_their_drug(tiny: Run):
    registry = tiny.sim.world.registry()
    for scan in tiny.topic("trace_scan"):
        assert TRACE.match(scan["trace_code"])
        assert scan["product_code"] == scan["trace_code"][:7]
        assert registry.drugs[scan["drug_code"]].product_code == scan["product_code"]
    for s in tiny_normal_settlements(tiny):
        for line in s["items"]:
            if line["item_type"] == "DRUG":
                drug = registry.drugs[line["item_code"]]
                assert line["generic_group"] == drug.generic_group
                assert all(c[:7] == drug.product_code for c in line["trace_codes"])


def tiny_normal_settlements(run: Run) -> list[dict]:
    """Settlements that no label cites (the drug-swap ones scan another product on purpose)."""
    cited = {i for lab in run.topic("sim_labels") for i in lab["event_ids"]}
    return [s for s in run.topic("settlement") if s["event_id"] not in cited]


def test_settlement_money_adds_up(tiny: Run):
    for s in tiny.topic("settlement"):
        assert s["total_fen"] == sum(line["amount_fen"] for line in s["items"])
        assert s["fund_paid_fen"] + s["self_paid_fen"] == s["total_fen"]
        for line in s["items"]:
            assert line["amount_fen"] == line["quantity"] * line["unit_price_fen"]
        if s["reversal_of"] is None:
            assert 0 <= s["fund_paid_fen"] <= s["total_fen"]
        else:
            assert s["total_fen"] < 0
        if s["visit_type"] == "INPATIENT":
            assert s["admission_time"] < s["discharge_time"] == s["event_time"]


def test_rhythm_weekdays_busier_than_sundays_and_mornings_busier_than_lunch(tiny_normal: Run):
    from streams.simulator.config import local_hour, local_weekday

    out = [s for s in tiny_normal.topic("settlement") if s["visit_type"] == "OUTPATIENT"]
    weekday = sum(1 for s in out if local_weekday(s["event_time"]) < 5) / 10
    sunday = sum(1 for s in out if local_weekday(s["event_time"]) == 6) / 2
    assert sunday < 0.8 * weekday
    hours = [local_hour(s["event_time"]) for s in out]
    assert hours.count(9) > 2 * hours.count(12)
    assert min(hours) >= 8


def _digest(config: SimConfig) -> str:
    h = hashlib.sha256()
    codec = Codec.default()
    for r in simulate(config):
        h.update(r.topic.encode() + r.key.encode() + codec.encode(r.schema, r.record))
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes():
    config = SimConfig(preset="tiny", seed=3, start_ms=START, days=3)
    assert _digest(config) == _digest(config)
    assert _digest(config) != _digest(SimConfig(preset="tiny", seed=4, start_ms=START, days=3))


def test_determinism_does_not_depend_on_the_hash_seed():
    code = (
        "import hashlib, json; from streams.simulator import SimConfig, simulate, parse_start\n"
        "h = hashlib.sha256()\n"
        "config = SimConfig(preset='tiny', seed=5, start_ms=parse_start('2026-11-02'), days=4)\n"
        "for r in simulate(config):\n"
        "    h.update(json.dumps([r.topic, r.key, r.record], sort_keys=True).encode())\n"
        "print(h.hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_max_events_bounds_the_stream_and_labels_only_complete_instances():
    config = SimConfig(preset="tiny", seed=7, start_ms=START, max_events=3000)
    records = list(simulate(config))
    assert sum(1 for r in records if r.topic in EVENT_TOPICS) == 3000
    seen = {r.record["event_id"] for r in records if r.topic in EVENT_TOPICS}
    labels = [r.record for r in records if r.topic == "sim_labels"]
    assert labels and all(set(lab["event_ids"]) <= seen for lab in labels)
    full = [
        r.record
        for r in Simulation(SimConfig(preset="tiny", seed=7, start_ms=START)).records()
        if r.topic == "sim_labels"
    ]
    assert len(labels) < len(full)


def test_unbounded_runs_keep_going_with_fraud_every_week():
    config = SimConfig(preset="tiny", seed=7, start_ms=START, days=0, persons=500, institutions=30)
    horizon = START + 16 * DAY_MS
    records = list(itertools.takewhile(lambda r: r.timestamp_ms < horizon, simulate(config)))
    assert records[-1].timestamp_ms >= START + 15 * DAY_MS
    weeks = {(r.timestamp_ms - START) // (7 * DAY_MS) for r in records if r.topic == "sim_labels"}
    assert weeks >= {0, 1}
    assert json.dumps([r.record for r in records[:5]])  # plain JSON-able dicts
