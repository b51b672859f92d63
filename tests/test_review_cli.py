"""`fundwatch review` as an analyst runs it, in subprocesses with their own data dir (chDB allows
one data path per process): an unknown alert is refused, a known one is recorded in the topic
and, with the store free, directly in the reviews table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.config import Settings
from tests.kafka_helpers import encoded, produce, start_sink_holding_store
from tests.records import alert

pytestmark = pytest.mark.integration

ALERT = "c" * 32


def _env(data_dir: Path, settings: Settings | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
    env["FUNDWATCH_DATA_DIR"] = str(data_dir)
    if settings is not None:
        env["FUNDWATCH_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
        env["FUNDWATCH_CONSUMER_GROUP"] = settings.consumer_group
        env["FUNDWATCH_VALIDATE_WALL_CLOCK"] = "false"
        for role, spec in settings.topics:
            env[f"FUNDWATCH_TOPICS__{role.upper()}__NAME"] = spec.name
    return env


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_review_of_a_missing_alert_exits_1_and_says_so(tmp_path) -> None:
    out = _run("-m", "streams.cli", "review", "0" * 32, "confirmed", env=_env(tmp_path))
    assert out.returncode == 1
    assert f"alert {'0' * 32} not found" in out.stderr
    assert "nothing was recorded" in out.stderr
    bad = _run("-m", "streams.cli", "review", "x' OR 1=1", "rejected", env=_env(tmp_path))
    assert bad.returncode == 1 and "is not an alert id" in bad.stderr


def test_review_of_a_stored_alert_is_produced_and_stored(isolated_settings, tmp_path) -> None:
    env = _env(tmp_path, isolated_settings)
    seed = (
        "from streams.config import Settings\n"
        "from streams.store.client import Store\n"
        "from streams.sink.rows import alert_rows, Lineage\n"
        "from streams.privacy import Pseudonymizer\n"
        "from tests.records import alert\n"
        "with Store(Settings()) as s:\n"
        "    s.ensure_schema()\n"
        f"    for t, r in alert_rows(alert(alert_id='{ALERT}'), Lineage(0, 0, 2, 0), "
        "Pseudonymizer(b'k')):\n"
        "        s.insert_rows(t, [r])\n"
    )
    assert _run("-c", seed, env=env).returncode == 0
    args = ("-m", "streams.cli", "review", ALERT, "confirmed", "--reviewer", "analyst01")
    out = _run(*args, "--note", "病历核实", env=env)
    assert out.returncode == 0, out.stderr
    assert "cross_institution_frequency, suspicious) confirmed by analyst01" in out.stdout
    assert f"sent to topic {isolated_settings.topics.reviews.name} [partition 0, offset 0]" in (
        out.stdout
    )
    assert "stored in fundwatch.reviews" in out.stdout
    query = "SELECT outcome, reviewer, note, reviews FROM alert_outcomes"
    rows = _run("-m", "streams.cli", "query", "--format", "json", query, env=env)
    assert rows.returncode == 0, rows.stderr
    assert [json.loads(line) for line in rows.stdout.splitlines()] == [
        {"outcome": "confirmed", "reviewer": "analyst01", "note": "病历核实", "reviews": 1}
    ]


def _poll(sql: str, env: dict[str, str], until: int, timeout_s: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        out = _run("-m", "streams.cli", "query", "--format", "json", sql, env=env)
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        if len(rows) >= until or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


@pytest.mark.slow
def test_review_while_a_sink_holds_the_store_goes_through_it(isolated_settings, tmp_path) -> None:
    env = _env(tmp_path, isolated_settings)
    sink = start_sink_holding_store(env, tmp_path)
    try:
        produce(isolated_settings, "alerts", encoded("Alert", [alert(alert_id=ALERT)], "entity_id"))
        stored = _poll("SELECT alert_id, confirm_score FROM alerts", env, until=1)
        assert stored == [{"alert_id": ALERT, "confirm_score": pytest.approx(0.4)}]

        args = ("-m", "streams.cli", "review", ALERT, "rejected", "--reviewer", "analyst02")
        out = _run(*args, env=env)
        assert out.returncode == 0, out.stderr
        assert "not inserted directly: the store is held by process" in out.stdout
        rows = _poll("SELECT outcome, reviewer FROM alert_outcomes", env, until=1)
        assert rows == [{"outcome": "rejected", "reviewer": "analyst02"}]  # stored by the sink
    finally:
        sink.terminate()
        sink.wait(30)
    assert sink.returncode == 0, sink.stderr.read()[-2000:]
    assert (tmp_path / "models" / "ranker.pkl").exists()  # the sink learnt the review
