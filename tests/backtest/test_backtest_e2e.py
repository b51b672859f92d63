"""`fundwatch backtest` on the real broker and chDB: over a simulated week it reproduces a live
worker's alert ids exactly; the candidate configuration loses alerts of the two detectors whose
thresholds it raises and nothing else; two runs give the same ids and figures; and a run over
the events the sink stored in ClickHouse finds what a run over Kafka finds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from models.reference import Registry
from streams.backtest.report import comparison_table, write_html
from streams.backtest.run import (
    BASELINE_SUFFIX,
    BacktestResult,
    BacktestSpec,
    finding_key,
    run_backtest,
)
from streams.config import Settings
from streams.simulator import SimConfig, Simulation
from streams.simulator.output import produce_to_kafka, tee_labels
from streams.sink.service import Sink
from streams.stack.topics import ensure_topics
from streams.store.client import Store
from tests.kafka_helpers import drain, with_own_topics
from tests.worker.test_worker_e2e import INPUT_ROLES, WorkerRun, recent_monday

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = 7
DAY_MS = 86_400_000
RAISED = {"cross_institution_frequency", "card_burst"}  # what candidate.toml changes


@pytest.fixture(scope="module")
def week(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A tiny simulated week ending before today, produced to topics of its own."""
    tmp = tmp_path_factory.mktemp("backtest-e2e")
    roles = (*INPUT_ROLES, "sim_labels", "dead_letters")
    settings = with_own_topics(kafka_settings, roles, "bt")
    inputs = settings.topics
    ensure_topics(settings, [getattr(inputs, r) for r in roles])
    start = recent_monday(DAYS)
    sim = Simulation(SimConfig(preset="tiny", seed=11, start_ms=start, days=DAYS))
    sim.world.registry().dump(tmp / "registry")
    summary = produce_to_kafka(settings, tee_labels(sim.records(), tmp / "labels.jsonl"))
    yield {
        "settings": settings,
        "inputs": inputs,
        "tmp": tmp,
        "registry": tmp / "registry",
        "labels": tmp / "labels.jsonl",
        "events": summary.total_events,
        "from": start,
        "to": start + (DAYS + 3) * DAY_MS,  # past the simulator's final watermark
    }


@pytest.fixture(scope="module")
def live(week: dict) -> list[dict]:
    """The alerts of a live worker (configuration `default`) over the week."""
    run = WorkerRun(week["settings"], week["inputs"], week["tmp"], "live").start(week["registry"])
    try:
        run.worker.wait_caught_up()
    finally:
        code = run.stop()
    assert code == 0, run.log()
    return run.alerts()


def backtest(week: dict, store: Store, **kw: object) -> BacktestResult:
    kw.setdefault("labels_path", week["labels"])
    spec = BacktestSpec(from_ms=week["from"], to_ms=week["to"], **kw)  # type: ignore[arg-type]
    return run_backtest(week["settings"], spec, store, Registry.load(week["registry"]))


def test_backtest_reproduces_the_live_workers_alert_ids(week: dict, live: list, store) -> None:
    result = backtest(week, store, config="default")
    assert result.stats.valid == week["events"]
    assert result.stats.invalid_total == 0
    assert result.stats.events_read == result.stats.valid + result.stats.invalid_total
    got = {a["alert_id"] for a in result.alerts}
    expected = {a["alert_id"] for a in live}
    assert expected
    missing = sorted({(a["detector_id"], a["alert_id"]) for a in live} - {
        (a["detector_id"], a["alert_id"]) for a in result.alerts})  # fmt: skip
    assert got == expected, (missing, len(got - expected))
    assert {a["config_version"] for a in result.alerts} == {"default@2026.12.2"}
    # stored under the run id, apart from the live alerts table
    n = store.scalar(
        f"SELECT count() FROM `{store.database}`.backtest_alerts FINAL WHERE run_id = %(r)s",
        {"r": result.run_id},
    )
    assert n == len(got)
    assert store.scalar(f"SELECT count() FROM `{store.database}`.alerts") == 0


def test_candidate_loses_alerts_of_the_raised_thresholds_only(week: dict, store, tmp_path) -> None:
    result = backtest(week, store, config="candidate", baseline="default")
    rows = {r.detector_id: r for r in result.comparison}
    for det, r in rows.items():
        assert r.baseline is not None
        if det in RAISED:
            # fewer alerts; a finding still raised at a later event of the same burst has a new
            # id (the id hashes the triggering event): gained ids are all re-triggered ones
            assert r.lost > 0, det
            assert r.gained == r.retriggered, det
            assert r.candidate.alerts <= r.baseline.alerts, det
            assert r.candidate.alerts == r.baseline.alerts - r.lost + r.gained
            assert r.candidate.labels == r.baseline.labels
            assert r.candidate.labels_found <= r.baseline.labels_found
        else:
            assert (r.gained, r.lost) == (0, 0), det
            assert r.candidate.alerts == r.baseline.alerts, det
    # the tiny week's injected bursts still pass the raised thresholds (at a later event); the
    # card bursts of exactly four settlements do not
    assert sum(rows[d].candidate.alerts for d in RAISED) < sum(
        rows[d].baseline.alerts for d in RAISED
    )
    assert sum(r.candidate.labels_found for r in rows.values()) <= sum(
        r.baseline.labels_found
        for r in rows.values()  # type: ignore[union-attr]
    )
    n_base = store.scalar(
        f"SELECT count() FROM `{store.database}`.backtest_alerts FINAL WHERE run_id = %(r)s",
        {"r": result.run_id + BASELINE_SUFFIX},
    )
    assert n_base == len(result.baseline_alerts or [])
    run = store.query_rows(
        f"SELECT config_label, baseline_label, source, alerts, baseline_alerts, events_processed,"
        f" metrics FROM `{store.database}`.backtest_runs FINAL WHERE run_id = %(r)s",
        {"r": result.run_id},
    )
    assert len(run) == 1
    label, base, source, n, nb, processed, metrics = run[0]
    assert (label, base, source) == ("candidate@2026.12.2-rc1", "default@2026.12.2", "kafka")
    assert (n, nb, processed) == (len(result.alerts), n_base, week["events"])
    assert json.loads(metrics)["totals"]["lost"] == sum(rows[d].lost for d in RAISED)
    html = write_html(result, tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert comparison_table(result).row_count == len(rows) + 1
    print(f"\n{len(result.alerts)} vs {len(result.baseline_alerts or [])} alerts, "
          f"{result.events_per_s:,.0f} events/s")  # fmt: skip


def test_two_runs_give_the_same_ids_and_figures(week: dict, store) -> None:
    a = backtest(week, store, config="candidate", baseline="default")
    b = backtest(week, store, config="candidate", baseline="default")
    assert a.run_id == b.run_id
    assert [x["alert_id"] for x in a.alerts] == [x["alert_id"] for x in b.alerts]
    # every figure of every alert (peer_deviation's too: one partition judges a peer group)
    assert [_figures(x) for x in a.alerts] == [_figures(x) for x in b.alerts]
    assert a.metrics_json() == b.metrics_json()
    runs = store.scalar(
        f"SELECT count() FROM `{store.database}`.backtest_runs FINAL WHERE run_id = %(r)s",
        {"r": a.run_id},
    )
    assert runs == 1


def _figures(alert: dict) -> dict:
    return {k: v for k, v in alert.items() if k != "detected_at"}


def test_clickhouse_source_finds_what_kafka_finds(week: dict, store) -> None:
    settings = week["settings"]
    sink = Sink(settings, store, roles=(*INPUT_ROLES, "sim_labels"), group_id=uuid.uuid4().hex)
    drain(sink, settings, (*INPUT_ROLES, "sim_labels"))
    from_kafka = backtest(week, store, config="default", labels_path=None)
    from_store = backtest(week, store, config="default", source="clickhouse", labels_path=None)
    assert from_store.run_id != from_kafka.run_id
    assert from_store.stats.valid == week["events"]
    keys = sorted(map(finding_key, from_kafka.alerts))
    assert sorted(map(finding_key, from_store.alerts)) == keys
    # labels from the sim_labels table: the same figures either way
    assert from_store.labels == from_kafka.labels > 0
    assert [r.to_dict() for r in from_store.comparison] == [
        r.to_dict() for r in from_kafka.comparison
    ]
