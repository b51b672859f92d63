"""`fundwatch bench` end to end on a tiny world: every phase runs against the real broker and
an embedded ClickHouse, the JSON has every key, and the benchmark's topics are gone after.
No speed is asserted: the figures depend on the machine and its load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.backtest.parallel import backtest_workers
from streams.bench.report import REQUIRED_KEYS
from streams.config import Settings
from streams.stack.topics import admin_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_bench_writes_every_figure(kafka_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
    env.update({"FUNDWATCH_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
                "FUNDWATCH_DATA_DIR": str(tmp_path / "data")})  # fmt: skip
    cmd = [sys.executable, "-m", "streams.cli", "bench", "--quick", "--events", "1500",
           "--rate-seconds", "0.5", "--max-events", "1500", "--workers", "2",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    latest = json.loads((out / "latest.json").read_text())
    stamped = list(out.glob("bench-*.json"))
    assert len(stamped) == 1 and json.loads(stamped[0].read_text()) == latest
    for key in REQUIRED_KEYS:
        assert key in latest, key
    for key in ("floor_eps", "detectors_eps", "replay_eps", "live_eps_per_worker",
                "faust_floor_eps"):  # fmt: skip
        assert latest[key] > 0, key
    assert latest["bytes_per_person"] > 0
    assert latest["workload"]["events"] == 1500
    assert {p["phase"] for p in latest["live"]} == {"rate", "max", "faust_floor", "max_2w"}
    assert latest["live_eps_workers"]["1"] > 0 and latest["live_eps_workers"]["2"] > 0
    for phase in latest["live"]:
        assert not phase["timed_out"]
        assert phase["latency"]["unmatched"] == 0
        assert phase["alerts_stored"] == phase["alerts_seen"]  # every alert seen is queryable
    assert latest["detectors"] and latest["state"]["person"]["entities"] > 0
    # the default state form is packed: its figure is the headline, its alerts the objects run's
    assert latest["state_mode"] == "packed"
    assert latest["bytes_per_person"] == latest["bytes_per_person_packed"]
    packed = latest["packed"]  # (on 1,500 events the hot set holds most groups: no sizes)
    assert packed["alerts_match"] is True
    assert packed["state"]["person"]["entities"] > 0 and packed["processor_eps"] > 0
    assert latest["bytes_per_person_objects"] > 0
    assert "fundwatch backtest" in latest["replay_note"] and latest["replay_eps"] > 0
    # the replay on the configured processes (one per CPU), and in one for the scaling
    workers = latest["replay_workers"]
    assert workers == backtest_workers(Settings(), "kafka")
    assert set(latest["replay_eps_by_workers"]) == {"1", str(workers)}
    if workers > 1:
        assert latest["replay_alerts_match_1"] is True
        assert latest["replay_private_mb"] > 0  # what a process held of its own
    # the replay's states are objects by default; the packed form is measured beside them
    assert latest["replay_state"] == "objects"
    assert latest["replay_eps_packed"] > 0
    assert latest["replay_alerts_match_packed"] is True
    assert "replay, packed" in proc.stdout
    assert "FundWatch bench" in proc.stdout

    leftovers = [
        t for t in admin_client(kafka_settings).list_topics(timeout=10).topics
        if t.startswith(f"fwbench-{latest['run_id']}")
    ]  # fmt: skip
    assert leftovers == []
