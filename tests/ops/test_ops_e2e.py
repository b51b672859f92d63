"""Operations on the real broker: a running sink and a running worker serve /metrics and
/health, `fundwatch status` finds them, and SIGTERM stops a sink mid-stream with nothing lost
and nothing stored twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from schemas.codec import Codec
from streams.config import Settings
from streams.kafka.clients import make_producer
from streams.stack.topics import ensure_topics
from streams.worker.process import WorkerProcess
from streams.worker.routing import REPARTITION_ROLES
from tests.kafka_helpers import encoded, produce
from tests.records import settlement

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The environment of a `fundwatch` child with these settings and its own data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
    env.update(
        {
            "FUNDWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "FUNDWATCH_LOCAL_KAFKA_PORT": str(settings.local_kafka_port),
            "FUNDWATCH_CONSUMER_GROUP": settings.consumer_group,
            "FUNDWATCH_WORKER_APP_ID": settings.worker_app_id,
            "FUNDWATCH_DATA_DIR": str(data_dir),
            "FUNDWATCH_CLICKHOUSE_URL": f"chdb://{data_dir / 'clickhouse'}",
            "FUNDWATCH_SINK_BATCH_SECONDS": "0.2",
        }
    )
    for role in type(settings.topics).model_fields:
        env[f"FUNDWATCH_TOPICS__{role.upper()}__NAME"] = getattr(settings.topics, role).name
    return env


def _fundwatch(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _endpoint(data_dir: Path, component: str) -> Callable[[], str | None]:
    def find() -> str | None:
        for path in (data_dir / "metrics").glob(f"{component}-*.json"):
            try:
                return json.loads(path.read_text())["url"]
            except (OSError, ValueError):
                return None
        return None

    return find


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _sum(samples: dict, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


def _health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _recent_settlements(n: int, tag: str) -> list[dict]:
    now = int(time.time() * 1000)
    return [
        settlement(event_id=f"ST{tag}{i:08d}", person_id=f"3601020000{i:010d}",
                   event_time=now - 60_000 + i)
        for i in range(n)
    ]  # fmt: skip


class SinkChild:
    """`fundwatch sink` as a child process with its own data dir (and chDB store)."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        self.env = _env(settings, data_dir)
        self.data_dir = data_dir
        self.log = data_dir / "sink.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "-v", "sink"],
            env=self.env, stdout=self._out, stderr=self._out, start_new_session=True,
        )  # fmt: skip

    def url(self) -> str:
        def up() -> str | None:
            assert self.proc.poll() is None, self.tail()
            return _endpoint(self.data_dir, "sink")()

        return _wait("the sink's metrics endpoint", up)

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("sink did not stop on SIGTERM: " + self.tail()) from None
        self._out.close()
        return self.proc.returncode

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def sink_child(isolated_settings: Settings, tmp_path: Path) -> Iterator[SinkChild]:
    child = SinkChild(isolated_settings, tmp_path / "sink-data")
    yield child
    if child.proc.poll() is None:
        child.proc.kill()
        child.proc.wait()


def test_sink_metrics_health_and_status(isolated_settings: Settings, sink_child) -> None:
    settings = isolated_settings
    url = sink_child.url()
    produce(settings, "settlement", encoded("SettlementEvent", _recent_settlements(20, "m"),
                                            "person_id"))  # fmt: skip
    valid = Codec.default().encode("SettlementEvent", _recent_settlements(1, "x")[0])
    produce(settings, "settlement", [("bad", b"not avro"), ("bad", valid[: len(valid) // 2])])
    topic = settings.topics.settlement.name

    def counted() -> dict | None:
        m = _scrape(url)
        stored = _sum(m, "fundwatch_sink_records_stored_total", topic=topic)
        dead = _sum(m, "fundwatch_sink_dead_letters_total", topic=topic)
        return m if stored == 20 and dead == 2 else None

    m = _wait("20 stored and 2 dead letters in /metrics", counted)
    assert _sum(m, "fundwatch_sink_records_read_total", role="settlement") == 22
    assert _sum(m, "fundwatch_sink_dead_letters_total", reason="not_single_object") == 1
    assert _sum(m, "fundwatch_sink_dead_letters_total", reason="corrupt_avro") == 1
    assert _sum(m, "fundwatch_sink_rows_stored_total", table="settlements") == 20
    assert _sum(m, "fundwatch_sink_store_up") == 1
    assert _sum(m, "fundwatch_sink_batch_records_count") >= 1
    assert _sum(m, "fundwatch_sink_latency_seconds_count") >= 20  # committed records
    code, body = _health(url)
    assert code == 200 and body["status"] == "ok", body
    assert body["assigned_partitions"] > 0 and body["last_batch_age_s"] is not None

    status = json.loads(_fundwatch("status", "--json", env=sink_child.env))
    [component] = status["components"]
    assert component["component"] == "sink" and component["health"] == "ok"
    assert component["url"] == url
    assert component["events_in"]["settlement"] == 22
    assert component["dead_letters"] == {"not_single_object": 1, "corrupt_avro": 1}
    sink_group = [g for g in status["groups"] if g["group"] == settings.consumer_group]
    assert {g["topic"] for g in sink_group} >= {topic}
    assert status["kafka_error"] is None

    assert sink_child.stop() == 0, sink_child.tail()
    assert not list((sink_child.data_dir / "metrics").glob("*.json"))  # withdrawn
    text = _fundwatch("status", env=sink_child.env)
    assert "no running components" in text


def _committed(settings: Settings, group: str, topic: str) -> int:
    c = Consumer({**settings.kafka_common(), "group.id": group})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        tps = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        c.close()


def test_sigterm_mid_stream_stores_and_commits_exactly_what_was_read(
    isolated_settings: Settings, sink_child
) -> None:
    settings = isolated_settings
    topic = settings.topics.settlement.name
    url = sink_child.url()
    stop_producing = threading.Event()
    produced = [0]

    def producer() -> None:  # a steady stream, still flowing when the signal arrives
        p = make_producer(settings)
        codec, i = Codec.default(), 0
        while not stop_producing.is_set():
            for rec in _recent_settlements(50, f"s{i:04d}"):
                p.produce(topic, key=rec["person_id"], value=codec.encode("SettlementEvent", rec))
            i += 1
            produced[0] += 50
            p.poll(0)
            time.sleep(0.05)
        assert p.flush(30) == 0

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        _wait(
            "a few stored batches",
            lambda: _sum(_scrape(url), "fundwatch_sink_records_stored_total", topic=topic) >= 500,
        )
        assert thread.is_alive()
        assert sink_child.stop() == 0, sink_child.tail()
    finally:
        stop_producing.set()
        thread.join(60)
    assert produced[0] > 0
    committed = _committed(settings, settings.consumer_group, topic)
    out = _fundwatch(
        "query", "--format", "json",
        "SELECT count() AS n, uniqExact(event_id) AS u FROM settlements",
        env=sink_child.env,
    )  # fmt: skip
    row = json.loads(out)
    row = row[0] if isinstance(row, list) else row
    assert committed > 0
    assert int(row["n"]) == int(row["u"]) == committed, (row, committed, produced[0])
    assert "sink stopped" in sink_child.tail()


def test_worker_metrics_after_a_few_events(isolated_settings: Settings, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    own = {
        role: getattr(isolated_settings.topics, role).model_copy(
            update={"name": f"{role}-ops-{suffix}"}
        )
        for role in ("alerts", "dead_letters", "aggregates", *REPARTITION_ROLES)
    }
    settings = isolated_settings.model_copy(
        update={
            "topics": isolated_settings.topics.model_copy(update=own),
            "worker_app_id": f"fw-ops-{suffix}",
            "data_dir": tmp_path / "worker-data",
        }
    )
    ensure_topics(settings, list(own.values()))
    produce(settings, "settlement", encoded("SettlementEvent", _recent_settlements(30, "w"),
                                            "person_id"))  # fmt: skip
    produce(settings, "settlement", [("bad", b"not avro at all")])
    worker = WorkerProcess(
        settings, None, "w", _env(settings, settings.data_dir), log_path=tmp_path / "worker.log"
    ).start()
    try:

        def url() -> str | None:
            assert worker.alive(), (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
            return _endpoint(settings.data_dir, "worker")()

        endpoint = _wait("the worker's metrics endpoint", url, timeout_s=120)

        def counted() -> dict | None:
            assert worker.alive(), (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
            m = _scrape(endpoint)
            read = _sum(m, "fundwatch_worker_records_read_total", role="settlement")
            # records are counted when a batch reads them, outputs once the batch has sent
            # them: a scrape in between sees the bad record read but its dead letter not yet out
            sent = _sum(m, "fundwatch_worker_records_out_total", role="dead_letters")
            return m if read == 31 and sent >= 1 else None

        m = _wait("31 settlement records read and the dead letter sent", counted, timeout_s=120)
        assert _sum(m, "fundwatch_worker_dead_letters_total", reason="not_single_object") == 1
        assert _sum(m, "fundwatch_worker_records_out_total", role="dead_letters") == 1
        assert _sum(m, "fundwatch_worker_batches_total") >= 1
        assert _sum(m, "fundwatch_worker_batch_records_count") >= 1
        assert _sum(m, "fundwatch_worker_assigned_partitions") > 0
        assert any(n == "fundwatch_worker_consumer_lag" for n, _ in m)
        code, body = _health(endpoint)
        assert code == 200 and body["state"] == "running", body
        status = json.loads(_fundwatch("status", "--json", env=_env(settings, settings.data_dir)))
        [component] = status["components"]
        assert component["component"] == "worker" and component["health"] == "ok", component
        assert component["events_in"]["settlement"] == 31
        assert component["dead_letters"] == {"not_single_object": 1}
    finally:
        rc = worker.stop()
    assert rc == 0
    assert not list((settings.data_dir / "metrics").glob("*.json"))


class _DownStore:
    """A store that refuses every insert."""

    embedded = False

    def insert_rows(self, table: str, rows: list) -> None:
        raise ConnectionError("store down")


def test_stop_while_the_store_is_down_commits_nothing_and_says_so(
    isolated_settings: Settings,
) -> None:
    from streams.sink.metrics import SinkCollector
    from streams.sink.service import Sink, StoreUnavailable

    settings = isolated_settings
    topic = settings.topics.settlement.name
    produce(settings, "settlement", encoded("SettlementEvent", _recent_settlements(10, "d"),
                                            "person_id"))  # fmt: skip
    sink = Sink(settings, _DownStore(), roles=("settlement",))  # type: ignore[arg-type]
    collector = SinkCollector(sink)
    seen: list[tuple[bool, dict]] = []

    def stop_once_failing() -> None:
        _wait("a failed insert", lambda: sink.stats.store_failures > 0, timeout_s=60)
        seen.append(collector.health())
        sink.stop()

    thread = threading.Thread(target=stop_once_failing, daemon=True)
    thread.start()
    with pytest.raises(StoreUnavailable, match="not committed"):
        sink.run()
    thread.join(10)
    ok, body = seen[0]
    assert not ok and "store unavailable" in body["problems"]
    assert sink.stats.store_up is False
    assert _committed(settings, settings.consumer_group, topic) == 0  # re-read by the next sink
