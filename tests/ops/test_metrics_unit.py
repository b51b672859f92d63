"""Unit tests of the metrics plumbing: the batch histogram, the HTTP endpoint, the sink and
worker collectors over their stats, and how `fundwatch status` reads and renders them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from streams.config import Settings
from streams.ops import status as status_mod
from streams.ops.metrics import BulkHistogram, MetricsServer, health_verdict, metrics_dir
from streams.sink.metrics import SinkCollector
from streams.sink.service import SinkStats
from streams.worker.metrics import WorkerMetrics
from streams.worker.processor import Batch, OutRecord, WorkerStats
from streams.worker.state_table import PackedTable


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_bulk_histogram_counts_cumulative_buckets_and_sum() -> None:
    h = BulkHistogram("t_seconds", "test", (1, 10))
    h.observe_many([0.5, 1, 5, 50])
    h.observe(2)
    registry = CollectorRegistry()
    registry.register(h)
    got = _samples(registry)
    assert got[("t_seconds_bucket", (("le", "1"),))] == 2  # le is inclusive
    assert got[("t_seconds_bucket", (("le", "10"),))] == 4
    assert got[("t_seconds_bucket", (("le", "+Inf"),))] == 5
    assert got[("t_seconds_count", ())] == 5
    assert got[("t_seconds_sum", ())] == pytest.approx(58.5)


def test_health_verdict_flags_a_stall_only_while_records_wait() -> None:
    old = time.time() - 600
    ok, body = health_verdict(state="running", started=old, last_batch=old, lag=0, stall_s=60)
    assert ok and body["status"] == "ok" and body["lag"] == 0
    ok, body = health_verdict(state="running", started=old, last_batch=old, lag=5, stall_s=60)
    assert not ok and "5 records wait" in body["problems"][0]
    ok, _ = health_verdict(state="running", started=old, last_batch=time.time(), lag=5, stall_s=60)
    assert ok


def test_server_serves_metrics_and_health_and_announces_itself(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    registry = CollectorRegistry()
    h = BulkHistogram("x_records", "test", (1,))
    registry.register(h)
    h.observe(1)
    verdict = {"ok": True}

    def health() -> tuple[bool, dict]:
        return verdict["ok"], {"status": "ok" if verdict["ok"] else "unhealthy"}

    with MetricsServer(settings, "sink", "g/1", registry, health) as server:
        announced = json.loads((metrics_dir(settings) / "sink-g_1.json").read_text())
        assert announced["url"] == server.url and announced["component"] == "sink"
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
            assert "x_records_count 1.0" in resp.read().decode()
        with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
            assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        verdict["ok"] = False
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/health", timeout=5)
        assert err.value.code == 503
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/nope", timeout=5)
        assert err.value.code == 404
    assert not list(metrics_dir(settings).glob("*.json"))  # withdrawn on close


def _fake_sink(settings: Settings) -> SimpleNamespace:
    stats = SinkStats()
    stats.topics["settlement"].read = 10
    stats.topics["settlement"].stored = 8
    stats.topics["settlement"].dead_lettered = 2
    stats.topics["settlement"].lag = 3
    stats.dead_by_reason[("settlement", "corrupt_avro")] = 2
    stats.rows["settlements"] = 8
    stats.alerts_by_detector["cross_institution_frequency"] = 1
    stats.batches = 2
    stats.assigned = 4
    stats.last_flush_ms = int(time.time() * 1000)
    stats.state = "running"
    stats.batch_records.observe(10)
    return SimpleNamespace(
        stats=stats, role_of={"settlement": "settlement"}, settings=settings, group_id="g"
    )


def test_sink_collector_reads_the_stats_lazily() -> None:
    sink = _fake_sink(Settings())
    collector = SinkCollector(sink)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(collector)
    got = _samples(registry)
    topic = (("role", "settlement"), ("topic", "settlement"))
    assert got[("fundwatch_sink_records_read_total", topic)] == 10
    assert got[("fundwatch_sink_records_stored_total", topic)] == 8
    dead = (("reason", "corrupt_avro"), *topic)
    assert got[("fundwatch_sink_dead_letters_total", tuple(sorted(dead)))] == 2
    assert got[("fundwatch_sink_rows_stored_total", (("table", "settlements"),))] == 8
    assert got[("fundwatch_sink_consumer_lag", topic)] == 3
    assert got[("fundwatch_sink_store_up", ())] == 1
    assert got[("fundwatch_sink_batch_records_count", ())] == 1
    sink.stats.topics["settlement"].read += 5  # read at scrape time, not at registration
    assert _samples(registry)[("fundwatch_sink_records_read_total", topic)] == 15

    ok, body = collector.health()
    assert ok and body["assigned_partitions"] == 4 and body["lag"] == 3
    sink.stats.store_up = False
    ok, body = collector.health()
    assert not ok and "store unavailable" in body["problems"]


def test_worker_metrics_read_worker_stats_and_batches() -> None:
    stats = WorkerStats()
    stats.read.update({"settlement": 5, "by_institution": 3})
    stats.dead_lettered["not_single_object"] = 1
    stats.alerts["drug_swap"] = 2
    stats.batches = 1
    table = PackedTable(hot_groups=1)
    for i in range(3):  # a hot set of one: each group is packed as the next comes in
        table[f"0|drug_over_supply|P{i}"] = {"n": i}
    assert table.get("0|drug_over_supply|P0") == {"n": 0}  # read again (P2 packed)
    proc = SimpleNamespace(stats=stats, held_records=lambda: 2, table=table)
    app = SimpleNamespace(state="running")  # no consumer yet: lag unknown
    metrics = WorkerMetrics(Settings(), app, lambda: proc)  # type: ignore[arg-type]
    now = time.time()
    events = [SimpleNamespace(message=SimpleNamespace(timestamp=now - 2)) for _ in range(3)]
    batch = Batch(
        out=[OutRecord("alerts", b"k", b"v", 0), OutRecord("aggregates", b"k", b"v", 0)],
        done=events[:2],
    )
    metrics.batch_done(events, batch, time.monotonic())
    registry = CollectorRegistry()
    registry.register(metrics)
    got = _samples(registry)
    assert got[("fundwatch_worker_records_read_total", (("role", "settlement"),))] == 5
    assert got[("fundwatch_worker_dead_letters_total", (("reason", "not_single_object"),))] == 1
    assert got[("fundwatch_worker_alerts_total", (("detector", "drug_swap"),))] == 2
    assert got[("fundwatch_worker_records_out_total", (("role", "aggregates"),))] == 1
    assert got[("fundwatch_worker_held_records", ())] == 2
    assert got[("fundwatch_worker_state_keys", ())] == 3
    assert got[("fundwatch_worker_state_group_packs_total", ())] == 3
    assert got[("fundwatch_worker_state_group_loads_total", ())] == 1
    assert got[("fundwatch_worker_batch_records_count", ())] == 1
    assert got[("fundwatch_worker_latency_seconds_count", ())] == 2  # done records only
    assert got[("fundwatch_worker_latency_seconds_bucket", (("le", "1"),))] == 0
    assert got[("fundwatch_worker_latency_seconds_bucket", (("le", "2.5"),))] == 2
    ok, body = metrics.health()
    assert ok and body["state"] == "running" and body["last_batch_age_s"] is not None

    metrics.app = SimpleNamespace(state="crashed")
    assert metrics.health()[0] is False


def test_worker_metrics_before_the_first_batch() -> None:
    metrics = WorkerMetrics(Settings(), SimpleNamespace(state="init"), lambda: None)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(metrics)
    assert _samples(registry)[("fundwatch_worker_batches_total", ())] == 0


def test_status_summarizes_a_scrape_and_renders_it() -> None:
    registry = CollectorRegistry()
    registry.register(SinkCollector(_fake_sink(Settings())))  # type: ignore[arg-type]
    c = status_mod.Component("sink", "g-1", "http://127.0.0.1:1", 1, "f")
    summarize = status_mod.summarize_metrics
    summarize(c, generate_latest(registry).decode())
    assert c.events_in == {"settlement": 10}
    assert c.events_out == {"settlement": 8}
    assert c.dead_letters == {"corrupt_avro": 2}
    assert c.alerts == {"cross_institution_frequency": 1}
    assert c.lag == 3 and c.last_batch_age_s is not None and c.last_batch_age_s < 60
    c.health = "ok"

    status = {
        "components": [status_mod.asdict(c)],
        "groups": [{"group": "g", "topic": "settlement", "committed": 8, "end": 10, "lag": 2}],
        "kafka_error": None,
    }
    console = Console(record=True, width=200)
    status_mod.render(status, console)
    text = console.export_text()
    assert "sink" in text and "corrupt_avro=2" in text and "settlement=10" in text
    assert "consumer groups" in text

    console = Console(record=True, width=200)
    status_mod.render({"components": [], "groups": [], "kafka_error": "down"}, console)
    assert "no running components" in console.export_text()


def test_status_marks_an_announcement_of_a_dead_process_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path)
    metrics_dir(settings).mkdir(parents=True)
    gone = metrics_dir(settings) / "sink-gone.json"
    gone.write_text(
        json.dumps(
            {"component": "sink", "name": "gone", "url": "http://127.0.0.1:9", "pid": 2**22 + 1}
        )
    )
    monkeypatch.setattr(status_mod, "group_lags", lambda s, t: ([], None))
    args = SimpleNamespace(json=True, timeout=1.0, prune=False)
    assert status_mod.run_from_args(args, settings) == 0  # type: ignore[arg-type]
    out = json.loads(capsys.readouterr().out)
    assert [c["health"] for c in out["components"]] == ["stale"]
    args.prune = True
    status_mod.run_from_args(args, settings)  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out)["components"] == []
    assert not gone.exists()


class TP(NamedTuple):
    topic: str
    partition: int


class _FakeConsumer:
    """The parts of faust's consumer WorkerMetrics reads."""

    def __init__(self) -> None:
        self.tps = [TP("settlement", 0), TP("settlement", 1)]
        self.high = {0: 100, 1: 50}
        self._committed_offset = {self.tps[0]: 60, self.tps[1]: 50}  # 40 records held on p0
        self._read_offset = {self.tps[0]: 99, self.tps[1]: 49}  # everything read

    def assignment(self) -> set:
        return set(self.tps)

    def highwater(self, tp: TP) -> int:
        return self.high[tp.partition]


def test_worker_lag_counts_held_records_but_a_stall_needs_unread_ones() -> None:
    app = SimpleNamespace(state="running", _consumer=_FakeConsumer())
    metrics = WorkerMetrics(Settings(health_stall_seconds=1), app, lambda: None)  # type: ignore[arg-type]
    metrics.last_batch = time.time() - 60  # quiet for a minute
    assert metrics.lag() == ({"settlement": 40}, 0, 2)
    ok, body = metrics.health()
    assert ok and body["lag"] == 40 and body["unread"] == 0  # quiet input, held records: fine

    app._consumer.high[1] = 70  # 20 new records nobody reads
    assert metrics.lag() == ({"settlement": 60}, 20, 2)
    ok, body = metrics.health()
    assert not ok and "20 records wait" in body["problems"][0]

    registry = CollectorRegistry()
    registry.register(metrics)
    got = _samples(registry)
    assert got[("fundwatch_worker_consumer_lag", (("topic", "settlement"),))] == 60
    assert got[("fundwatch_worker_assigned_partitions", ())] == 2


def test_worker_reports_partitions_whose_commit_does_not_move() -> None:
    consumer = _FakeConsumer()
    consumer._acked = {}
    proc = SimpleNamespace(
        reading=lambda t, p: f"read 0..{consumer._read_offset[TP(t, p)]} since assigned",
        why_held=lambda t, p: "offset 60 held" if p == 0 else "nothing held",
    )
    app = SimpleNamespace(state="running", _consumer=consumer)
    metrics = WorkerMetrics(Settings(), app, lambda: proc)  # type: ignore[arg-type]
    assert metrics.stalled() == []  # the first look only remembers the committed offsets
    stalled = metrics.stalled()  # p0: 40 records to commit and no commit since; p1 caught up
    assert stalled == [
        "settlement[0]: committed 60, end 100, faust read to 99, 0 acknowledged not committed; "
        "processor: read 0..99 since assigned; offset 60 held"
    ]
    consumer._committed_offset[consumer.tps[0]] = 70  # it moved: nothing to report
    assert metrics.stalled() == []


def test_sink_lag_counts_records_before_the_first_commit() -> None:
    """librdkafka says consumer_lag -1 until the group commits: the backlog is still lag."""
    import json
    from types import SimpleNamespace

    from streams.sink.service import Sink, SinkStats

    fake = SimpleNamespace(stats=SinkStats())
    partitions = {
        "0": {"consumer_lag": -1, "fetch_state": "active", "hi_offset": 500, "lo_offset": 0,
              "committed_offset": -1001},
        "1": {"consumer_lag": 7, "fetch_state": "active", "hi_offset": 900},
        "2": {"consumer_lag": -1, "fetch_state": "none", "hi_offset": 300},  # not assigned
        "-1": {"consumer_lag": -1},
    }  # fmt: skip
    Sink._on_kafka_stats(fake, json.dumps({"topics": {"settlement": {"partitions": partitions}}}))
    assert fake.stats.topics["settlement"].lag == 507
