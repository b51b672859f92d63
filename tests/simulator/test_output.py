"""Avro files, side files and the CLI, without a broker."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import fastavro
import pytest

from models.reference import Registry
from streams.config import Settings
from streams.simulator import SimConfig, Simulation, produce_to_kafka, tee_labels, write_avro_files
from streams.simulator.cli import add_arguments, config_from_args, run_from_args
from streams.simulator.output import DeliveryError, Pacer

from .conftest import START


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_avro_files_are_readable_and_complete(tmp_path: Path):
    sim = Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=3))
    summary = write_avro_files(
        tmp_path, tee_labels(sim.records(), tmp_path / "labels.jsonl"), seed=7
    )
    counts = {}
    for topic in ("settlement", "trace_scan", "face_verify", "sim_labels"):
        with (tmp_path / f"{topic}.avro").open("rb") as fh:
            reader = fastavro.reader(fh)
            assert reader.metadata["avro.codec"] == "deflate"
            counts[topic] = sum(1 for _ in reader)
    assert {k: counts[k] for k in summary.events} == summary.events
    labels = [
        json.loads(line) for line in (tmp_path / "labels.jsonl").read_text("utf-8").splitlines()
    ]
    assert len(labels) == counts["sim_labels"] == sum(summary.labels.values()) > 0


def test_cli_writes_identical_files_twice(tmp_path: Path, capsys):
    settings = Settings(data_dir=tmp_path / "data")
    digests = []
    for n in (1, 2):
        out = tmp_path / f"run{n}"
        code = run_from_args(
            _args(
                "--preset",
                "tiny",
                "--days",
                "2",
                "--start",
                "2026-11-02",
                "--to",
                "avro",
                "--out",
                str(out),
                "--quiet",
            ),
            settings,
        )
        assert code == 0
        digests.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1]
    assert {"institutions.jsonl", "drugs.jsonl", "labels.jsonl", "settlement.avro"} <= set(
        digests[0]
    )
    registry = Registry.load(tmp_path / "run1")
    assert len(registry.institutions) > 30 and len(registry.drugs) >= 60


def test_cli_default_out_dir_and_summary(tmp_path: Path, capsys):
    settings = Settings(data_dir=tmp_path)
    code = run_from_args(
        _args(
            "--preset",
            "tiny",
            "--days",
            "1",
            "--start",
            "2026-11-02",
            "--to",
            "avro",
            "--seed",
            "9",
        ),
        settings,
    )
    assert code == 0
    assert (tmp_path / "sim" / "9-tiny" / "settlement.avro").exists()
    err = capsys.readouterr().err
    assert "events (settlement" in err and "labels" in err


def test_cli_options():
    config = config_from_args(_args("--preset", "tiny", "--forever"))
    assert config.days == 0 and config.start_ms is not None
    config = config_from_args(
        _args(
            "--preset",
            "city",
            "--persons",
            "1000",
            "--institutions",
            "40",
            "--days",
            "2",
            "--fraud-rate",
            "0",
            "--events",
            "5",
        )
    )
    sizes = config.sizes()
    assert (sizes.persons, sizes.institutions, sizes.days, sizes.fraud_rate) == (1000, 40, 2, 0)
    assert config.max_events == 5
    with pytest.raises(ValueError):
        config_from_args(_args("--forever", "--days", "3"))
    config = config_from_args(_args("--preset", "tiny", "--events", "100000"))
    assert config.days == 0 and config.max_events == 100_000  # N events even beyond 14 days


def test_help_names_every_option(capsys):
    parser = argparse.ArgumentParser(prog="fundwatch simulate")
    add_arguments(parser)
    help_text = parser.format_help()
    for option in (
        "--preset",
        "--seed",
        "--start",
        "--days",
        "--persons",
        "--institutions",
        "--events",
        "--rate",
        "--to",
        "--out",
        "--fraud-rate",
        "--quiet",
        "--forever",
    ):
        assert option in help_text
    assert "default" in help_text and "labels.jsonl" in help_text


def test_summary_line_has_counts_not_people():
    sim = Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=2))
    records = list(sim.records())
    from streams.simulator.output import Summary

    summary = Summary()
    for r in records:
        summary.count(r)
    line = summary.line()
    assert "settlement" in line and "labels" in line
    people = {r.record["person_id"] for r in records if r.topic == "settlement"}
    assert not any(p in line for p in people)


def test_pacer_is_smooth():
    pacer = Pacer(1000.0)
    t0 = time.monotonic()
    for _ in range(200):
        pacer.wait()
    assert 0.17 <= time.monotonic() - t0 < 1.0


def test_failed_delivery_fails_the_run():
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9", kafka_client_config={"message.timeout.ms": "300"}
    )
    records = Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=1)).records()
    with pytest.raises(DeliveryError, match=r"did not acknowledge|no metadata"):
        produce_to_kafka(settings, records, max_events=20, flush_timeout_s=10)


def test_counts_per_topic_in_a_summary(tmp_path: Path):
    sim = Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=1))
    summary = write_avro_files(tmp_path, sim.records(), max_events=500)
    assert summary.total_events == 500
    assert Counter(summary.events).total() == 500


def test_interrupted_run_keeps_what_was_written(tmp_path: Path):
    """Ctrl-C: the writer stops, flushes, and the files hold every record counted."""

    def interrupted():
        for n, rec in enumerate(
            Simulation(SimConfig(preset="tiny", seed=7, start_ms=START)).records()
        ):
            if n == 700:
                raise KeyboardInterrupt
            yield rec

    summary = write_avro_files(tmp_path, interrupted())
    assert summary.interrupted
    total = 0
    for topic in ("settlement", "trace_scan", "face_verify", "sim_labels"):
        with (tmp_path / f"{topic}.avro").open("rb") as fh:
            total += sum(1 for _ in fastavro.reader(fh))
    assert total == 700


def test_a_start_older_than_the_inputs_retention_is_warned(caplog: pytest.LogCaptureFixture):
    """The broker deletes input records older than retention (by event time) within a minute."""
    from streams.simulator.cli import _warn_past_retention

    settings = Settings()
    now_ms = int(time.time() * 1000)
    retention = settings.topics.settlement.retention_ms
    with caplog.at_level("WARNING", logger="streams.simulator"):
        _warn_past_retention(settings, now_ms - retention + 3_600_000)
        assert not caplog.records
        _warn_past_retention(settings, now_ms - retention - 3_600_000)
    assert len(caplog.records) == 1
    assert "input topics keep 30 days" in caplog.records[0].getMessage()


class _Acked:
    """A delivered message as librdkafka reports it (offset None: acknowledged as a duplicate)."""

    def __init__(self, topic: str, key: bytes, value: bytes, ts: int, offset: int | None) -> None:
        self._t, self._k, self._v, self._ts, self._o = topic, key, value, ts, offset

    def topic(self) -> str:
        return self._t

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return 1, self._ts

    def offset(self) -> int | None:
        return self._o


class DuplicateAnsweringProducer:
    """Acknowledges the first `no_offset` records it is given without an offset, the rest
    (and every record produced again) with one; keeps what it stored."""

    def __init__(self, no_offset: int) -> None:
        self.no_offset = no_offset
        self.pending: list = []
        self.stored: list[bytes] = []

    def produce(self, topic, value, key, timestamp, on_delivery) -> None:
        self.pending.append((topic, key, value, timestamp, on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        pending, self.pending = self.pending, []
        for topic, key, value, ts, callback in pending:
            if self.no_offset:
                self.no_offset -= 1  # the batch the broker called a duplicate: not stored
                callback(None, _Acked(topic, key, value, ts, None))
            else:
                self.stored.append(value)
                callback(None, _Acked(topic, key, value, ts, len(self.stored) - 1))
        return 0


def test_records_acknowledged_without_an_offset_are_produced_again(monkeypatch, caplog):
    """After a broker restart librdkafka once reported records delivered (as duplicates, no
    offset) that the topic did not hold: the simulator produces those again, so every record
    reaches the topic at least once (consumers are idempotent by event id)."""
    from streams.kafka import clients

    fake = DuplicateAnsweringProducer(no_offset=3)
    monkeypatch.setattr(clients, "make_producer", lambda settings, **overrides: fake)
    records = list(Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=1)).records())
    events = [r for r in records if r.topic != "sim_labels"][:50]
    summary = produce_to_kafka(Settings(), events, heartbeat_ms=None)
    assert summary.resent == 3
    assert len(fake.stored) == 50  # every record, once: the 3 unconfirmed were not stored
    assert "acknowledged without an offset" in caplog.text


def test_records_never_confirmed_fail_the_run(monkeypatch):
    from streams.kafka import clients

    fake = DuplicateAnsweringProducer(no_offset=10**6)  # never an offset
    monkeypatch.setattr(clients, "make_producer", lambda settings, **overrides: fake)
    records = list(Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=1)).records())
    events = [r for r in records if r.topic != "sim_labels"][:5]
    with pytest.raises(DeliveryError, match="did not acknowledge 5 record"):
        produce_to_kafka(Settings(), events, heartbeat_ms=None)


class _Meta:
    def __init__(self, partitions: int) -> None:
        self.partitions = dict.fromkeys(range(partitions))
        self.error = None


class RecordingProducer(DuplicateAnsweringProducer):
    """Stores everything in order (events and watermarks) and knows 2 partitions a topic."""

    def __init__(self) -> None:
        super().__init__(no_offset=0)
        self.log: list[tuple[str, bytes, int]] = []

    def produce(self, topic, value, key, timestamp, on_delivery=None, partition=None) -> None:
        self.log.append((topic, key, timestamp))
        if on_delivery is not None:
            super().produce(topic, value, key, timestamp, on_delivery)

    def list_topics(self, topic: str, timeout: float):
        return type("Md", (), {"topics": {topic: _Meta(2)}})()


def _watermarks(log: list[tuple[str, bytes, int]]) -> list[int]:
    return [i for i, (_, key, _) in enumerate(log) if key == b"__watermark__"]


def test_a_paced_stream_promises_progress_on_the_wall_clock_too(monkeypatch):
    """At a fixed rate the simulator also sends watermarks every WALL_HEARTBEAT_S of wall time
    (a quiet partition would otherwise hold a stage fed by every partition until the next
    simulated hour), and never promises a time an event produced after it is earlier than."""
    from streams.kafka import clients
    from streams.simulator import output

    monkeypatch.setattr(output, "WALL_HEARTBEAT_S", 0.05)
    records = list(Simulation(SimConfig(preset="tiny", seed=7, start_ms=START, days=1)).records())
    events = [r for r in records if r.topic != "sim_labels"][:60]
    paced, bulk = RecordingProducer(), RecordingProducer()
    monkeypatch.setattr(clients, "make_producer", lambda settings, **overrides: paced)
    produce_to_kafka(Settings(), events, rate=300.0)  # 0.2 s: about 4 wall-clock promises
    monkeypatch.setattr(clients, "make_producer", lambda settings, **overrides: bulk)
    produce_to_kafka(Settings(), events)
    extra = len(_watermarks(paced.log)) - len(_watermarks(bulk.log))
    assert extra >= 2 * 3 * 2  # at least two promises to 3 topics x 2 partitions
    for i in _watermarks(paced.log)[:-6]:  # the last 6: the end-of-run promise
        promised = paced.log[i][2]
        later = [ts for _, key, ts in paced.log[i:] if key != b"__watermark__"]
        assert all(ts >= promised for ts in later)
