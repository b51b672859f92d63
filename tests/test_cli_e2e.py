"""The front door, as a user runs it: `fundwatch run --events N` then `fundwatch query`,
in subprocesses with their own data dir and topics, against the real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from models.catalogue import SCENARIOS
from streams.config import Settings
from tests.kafka_helpers import start_sink_holding_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(kafka_settings: Settings, data_dir: Path) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
    # the store is this test's own; the broker (and its data dir) stay the shared ones
    env["FUNDWATCH_CLICKHOUSE_URL"] = f"chdb://{data_dir / 'clickhouse'}"
    env["COLUMNS"] = "200"  # rich renders the summary tables unwrapped
    env["FUNDWATCH_KAFKA_BOOTSTRAP"] = kafka_settings.kafka_bootstrap
    env["FUNDWATCH_CONSUMER_GROUP"] = f"cli-e2e-{suffix}"
    env["FUNDWATCH_WORKER_APP_ID"] = f"cli-e2e-worker-{suffix}"
    env["FUNDWATCH_LOCAL_KAFKA_PORT"] = str(kafka_settings.local_kafka_port)
    for role in type(kafka_settings.topics).model_fields:  # every topic: this test's own
        name = getattr(kafka_settings.topics, role).name
        env[f"FUNDWATCH_TOPICS__{role.upper()}__NAME"] = f"{name}-{suffix}"
    return env


def fundwatch(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_stores_every_event_then_query_reads_them(kafka_settings, tmp_path) -> None:
    env = _env(kafka_settings, tmp_path)
    run = fundwatch("run", "--days", "14", "--preset", "tiny", "--plain", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Summary" in run.stdout

    def q(sql: str) -> list[dict]:
        out = fundwatch("query", "--format", "json", sql, env=env)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]

    simulated = kafka_settings.data_dir / "sim" / "7-tiny"
    labels = [json.loads(x) for x in (simulated / "labels.jsonl").read_text().splitlines()]
    stored_labels = q("SELECT scenario, count() AS n FROM sim_labels FINAL GROUP BY scenario")
    assert {r["scenario"] for r in stored_labels} == {s.id for s in SCENARIOS}
    assert sum(r["n"] for r in stored_labels) == len(labels)
    counts = q("SELECT (SELECT count() FROM settlements FINAL) AS s, "
               "(SELECT uniqExact(event_id) FROM settlements) AS u")[0]  # fmt: skip
    assert counts["s"] == counts["u"] > 0
    # the summary reconciles: produced = stored + dead letters + watermarks, and stored rows
    # are what ClickHouse holds
    topic = env["FUNDWATCH_TOPICS__SETTLEMENT__NAME"]
    line = next(x for x in run.stdout.splitlines() if f"│ {topic} " in x)
    produced, stored, dead, marks = (int(c.strip().replace(",", "")) for c in line.split("│")[2:6])
    assert produced == stored + dead + marks and marks > 0
    assert stored == counts["s"]


def test_an_unbounded_run_runs_ahead_of_the_clock_without_dead_letters(
    kafka_settings, tmp_path
) -> None:
    """Without --days/--events the simulator runs ahead of real time: its events must not be
    dead-lettered as 'in the future' (validation's wall-clock bounds are off for that run)."""
    env = _env(kafka_settings, tmp_path)
    run = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "run", "--preset", "tiny", "--plain"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(25)
    finally:
        run.send_signal(signal.SIGINT)
        _out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    result = fundwatch(
        "query", "--format", "json",
        "SELECT (SELECT count() FROM settlements) AS stored, "
        "(SELECT toUnixTimestamp64Milli(max(event_time)) FROM settlements) AS newest, "
        "(SELECT count() FROM dead_letters WHERE reason_code = 'future_event_time') AS future",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.splitlines()[0])
    assert row["stored"] > 0
    assert int(row["newest"]) > time.time() * 1000 + 86_400_000  # it did run ahead of the clock
    assert row["future"] == 0


def test_query_reaches_a_store_held_by_a_running_sink(kafka_settings, tmp_path) -> None:
    env = _env(kafka_settings, tmp_path)
    sink = start_sink_holding_store(env, tmp_path)
    try:
        out = fundwatch("query", "--format", "csv", "SELECT count() AS n FROM settlements", env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["n", "0"]
        refused = fundwatch("query", "DROP TABLE settlements", env=env)
        assert refused.returncode == 1 and "read-only" in refused.stderr
    finally:
        sink.terminate()
        sink.wait(30)
    assert sink.returncode == 0, sink.stderr.read()[-2000:]


def test_help_explains_every_command() -> None:
    env = dict(os.environ)
    top = fundwatch("--help", env=env)
    assert top.returncode == 0
    for command in ("run", "simulate", "infra", "sink", "query", "store", "config"):
        assert command in top.stdout
        sub = fundwatch(command, "--help", env=env)
        assert sub.returncode == 0 and "usage: fundwatch " + command in sub.stdout
