"""The local broker and topic management.

Integration tests use the shared broker of `kafka_settings` without ever stopping it; start/stop
tests run a second broker on free ports in a temporary data dir (sharing the installed jars).
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import DAY_MS, REPO_ROOT, Settings, TopicSpec
from streams.kafka.clients import make_consumer, make_producer
from streams.stack import StackError, local_kafka
from streams.stack.cli import add_arguments, run_from_args
from streams.stack.topics import (
    admin_client,
    ensure_topics,
    partition_counts,
    topic_configs,
    topic_end_offsets,
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _local_settings(data_dir: Path, port: int | None = None) -> Settings:
    """Settings of a scratch local broker in `data_dir` on free ports (ignoring env/.env)."""
    broker_port, controller_port = _free_ports(2)
    port = port or broker_port
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        kafka_bootstrap=f"127.0.0.1:{port}",
        local_kafka_port=port,
        local_kafka_controller_port=controller_port,
        kafka_heap="512m",
    )


def _share_jars(settings: Settings) -> None:
    """Point the scratch data dir at the jars installed in the default data dir."""
    installed = local_kafka.install(Settings(local_kafka_version=settings.local_kafka_version))
    libs = local_kafka.kafka_paths(settings).libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    libs.symlink_to(installed, target_is_directory=True)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fundwatch infra")
    add_arguments(parser)
    return parser.parse_args(argv)


def _delete_topics(settings: Settings, names: list[str]) -> None:
    admin = admin_client(settings)
    for future in admin.delete_topics(names, operation_timeout=30).values():
        assert future.exception() is None


@pytest.fixture(scope="module")
def second_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A second local broker (own data dir, free ports), stopped after the module."""
    settings = _local_settings(tmp_path_factory.mktemp("broker2"))
    _share_jars(settings)
    local_kafka.ensure_broker(settings)
    yield settings
    local_kafka.stop(settings)


def _require_local(settings: Settings) -> None:
    if not settings.is_local_kafka:
        pytest.skip(f"Kafka is remote ({settings.kafka_bootstrap})")


# --- the shared broker -------------------------------------------------------------------------


@pytest.mark.integration
def test_up_is_idempotent(kafka_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    _require_local(kafka_settings)
    first = local_kafka.ensure_broker(kafka_settings)
    second = local_kafka.ensure_broker(kafka_settings)
    assert first is not None and second is not None
    assert second.reused and second.pid == first.pid

    assert run_from_args(_args("up"), kafka_settings) == 0
    assert f"Reusing the broker already running: pid {first.pid}" in capsys.readouterr().out
    assert local_kafka.status(kafka_settings).pid == first.pid


@pytest.mark.integration
def test_status_reports_the_broker_and_the_topics(
    kafka_settings: Settings, topics, capsys: pytest.CaptureFixture[str]
) -> None:
    st = local_kafka.status(kafka_settings)
    assert st.running, st.problem
    assert st.problem is None
    if st.managed:
        assert st.pid is not None
        assert st.version == kafka_settings.local_kafka_version

    specs = topics.all()
    configs = topic_configs(kafka_settings, [spec.name for spec in specs])
    for spec in specs:
        assert st.topics[spec.name] == spec.partitions
        assert int(configs[spec.name]["retention.ms"]) == spec.retention_ms

    assert run_from_args(_args("status"), kafka_settings) == 0
    out = capsys.readouterr().out
    assert "running" in out and topics.settlement.name in out


@pytest.mark.integration
def test_ensure_topics_is_idempotent_and_only_grows(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"test-grow-{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name=name, partitions=1, retention_ms=DAY_MS)
    try:
        assert ensure_topics(kafka_settings, [spec]) == [name]
        assert ensure_topics(kafka_settings, [spec]) == []

        grown = spec.model_copy(update={"partitions": 3, "retention_ms": 2 * DAY_MS})
        with caplog.at_level(logging.WARNING, logger="streams.stack.topics"):
            assert ensure_topics(kafka_settings, [grown]) == []
        assert f"Topic {name} has 1 partitions, 3 configured" in caplog.text
        assert partition_counts(kafka_settings, [name]) == {name: 3}
        assert topic_configs(kafka_settings, [name])[name]["retention.ms"] == str(2 * DAY_MS)

        assert ensure_topics(kafka_settings, [grown.model_copy(update={"partitions": 2})]) == []
        assert partition_counts(kafka_settings, [name]) == {name: 3}  # never shrinks
    finally:
        _delete_topics(kafka_settings, [name])


@pytest.mark.integration
def test_derived_topics_keep_old_records_by_append_time(kafka_settings: Settings) -> None:
    """Inputs are stamped with the event time; a derived topic's retention must count from when
    its records were written, or a replay of older history loses its repartitioned copies."""
    topics = kafka_settings.topics
    for role in ("settlement", "trace_scan", "face_verify"):
        assert getattr(topics, role).timestamp_type == "CreateTime", role
    for role in ("by_institution", "by_doctor", "by_group", "alerts", "aggregates", "dead_letters"):
        assert getattr(topics, role).timestamp_type == "LogAppendTime", role
    name = f"test-derived-{uuid.uuid4().hex[:8]}"
    spec = topics.by_institution.model_copy(update={"name": name, "partitions": 1})
    try:
        ensure_topics(kafka_settings, [spec])
        assert topic_configs(kafka_settings, [name])[name]["message.timestamp.type"] == (
            "LogAppendTime"
        )
        month_ago = int(time.time() * 1000) - 30 * DAY_MS
        producer = make_producer(kafka_settings)
        producer.produce(name, value=b"x", timestamp=month_ago)
        assert producer.flush(30) == 0
        consumer = make_consumer(kafka_settings, f"g-{name}", **{"auto.offset.reset": "earliest"})
        consumer.subscribe([name])
        msg = None
        deadline = time.monotonic() + 30
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(1)
        consumer.close()
        assert msg is not None and msg.error() is None
        kind, ts = msg.timestamp()
        assert kind == 2 and ts > month_ago + 29 * DAY_MS  # the broker's append time
    finally:
        _delete_topics(kafka_settings, [name])


@pytest.mark.integration
def test_produce_consume_round_trip(isolated_settings: Settings) -> None:
    topic = isolated_settings.topics.settlement.name
    sent = {f"v{i}": f"k{i % 17}" for i in range(200)}
    producer = make_producer(isolated_settings)
    for value, key in sent.items():
        producer.produce(topic, key=key.encode(), value=value.encode())
    assert producer.flush(30) == 0

    ends = topic_end_offsets(isolated_settings, [topic])[topic]
    assert sorted(ends) == list(range(isolated_settings.topics.settlement.partitions))
    assert sum(ends.values()) == len(sent)

    consumer = make_consumer(isolated_settings, isolated_settings.consumer_group)
    consumer.subscribe([topic])
    received: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                assert msg.error() is None, msg.error()
                received[msg.value().decode()] = (msg.key().decode(), msg.partition())
    finally:
        consumer.close()
    assert {value: key for value, (key, _) in received.items()} == sent
    partitions_of_key: dict[str, set[int]] = {}
    for key, partition in received.values():
        partitions_of_key.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in partitions_of_key.values())


# --- a second broker: start, stop, leftovers, port conflicts -----------------------------------


@pytest.mark.integration
def test_stop_start_cycle_keeps_the_data(second_broker: Settings) -> None:
    settings, paths = second_broker, local_kafka.kafka_paths(second_broker)
    first = local_kafka.ensure_broker(settings)
    assert first is not None and first.reused
    ensure_topics(settings, [TopicSpec(name="cycle", partitions=1, retention_ms=-1)])
    producer = make_producer(settings)
    for i in range(10):
        producer.produce("cycle", value=str(i).encode())
    assert producer.flush(30) == 0
    cluster_id = paths.cluster_id.read_text()

    assert local_kafka.stop(settings) == first.pid
    assert not paths.pid_file.exists()
    assert not local_kafka.port_in_use(settings.local_kafka_port)
    stopped = local_kafka.status(settings)
    assert not stopped.running and stopped.pid is None and stopped.problem is None
    assert local_kafka.stop(settings) is None

    again = local_kafka.start(settings)
    assert not again.reused and again.pid != first.pid
    assert paths.cluster_id.read_text() == cluster_id  # formatted once
    assert topic_end_offsets(settings, ["cycle"]) == {"cycle": {0: 10}}


@pytest.mark.integration
def test_another_process_reuses_the_running_broker(second_broker: Settings) -> None:
    running = local_kafka.status(second_broker)
    assert running.running and running.pid is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
    env.update(
        FUNDWATCH_DATA_DIR=str(second_broker.data_dir),
        FUNDWATCH_LOCAL_KAFKA_PORT=str(second_broker.local_kafka_port),
        FUNDWATCH_LOCAL_KAFKA_CONTROLLER_PORT=str(second_broker.local_kafka_controller_port),
    )
    code = (
        "import argparse, sys\n"
        "from streams.config import Settings\n"
        "from streams.stack.cli import add_arguments, run_from_args\n"
        "p = argparse.ArgumentParser(); add_arguments(p)\n"
        "sys.exit(run_from_args(p.parse_args(['up']), Settings()))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Reusing the broker already running: pid {running.pid}" in proc.stdout
    assert local_kafka.status(second_broker).pid == running.pid


@pytest.mark.integration
def test_port_held_by_another_process_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        settings = _local_settings(tmp_path, port=port)
        _share_jars(settings)

        with pytest.raises(StackError, match=rf"port {port} is in use by another process"):
            local_kafka.ensure_broker(settings)
        assert not local_kafka.kafka_paths(settings).pid_file.exists()

        st = local_kafka.status(settings)
        assert not st.running and st.problem and f"port {port}" in st.problem
        assert run_from_args(_args("up"), settings) == 1
        err = capsys.readouterr().err
        assert f"error: port {port} is in use by another process (pid {os.getpid()}" in err


@pytest.mark.integration
def test_a_broker_of_another_data_dir_on_the_port_is_used_not_duplicated(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """A second checkout (another .local) finds the first one's broker on the port: it uses it."""
    other = Settings(
        _env_file=None,
        data_dir=tmp_path,
        kafka_bootstrap=kafka_settings.kafka_bootstrap,
        local_kafka_port=kafka_settings.local_kafka_port,
        local_kafka_controller_port=kafka_settings.local_kafka_controller_port,
    )
    _share_jars(other)
    assert local_kafka.ensure_broker(other) is None
    assert not local_kafka.kafka_paths(other).pid_file.exists()  # nothing was started


# --- unit tests (no broker) --------------------------------------------------------------------


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    settings = _local_settings(tmp_path)
    paths = local_kafka.kafka_paths(settings)
    paths.root.mkdir(parents=True)
    paths.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker

    st = local_kafka.status(settings)
    assert not st.running and st.pid is None
    assert not paths.pid_file.exists()


def test_stop_kills_a_broker_that_ignores_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _local_settings(tmp_path)
    paths = local_kafka.kafka_paths(settings)
    paths.root.mkdir(parents=True)
    # A stand-in whose command line looks like this data dir's broker, and that ignores SIGTERM.
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    cmd = [sys.executable, "-c", code, "kafka.Kafka", str(paths.properties)]
    stand_in = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        assert stand_in.stdout is not None and stand_in.stdout.readline()  # handler installed
        paths.pid_file.write_text(f"{stand_in.pid}\n")
        with caplog.at_level(logging.WARNING, logger="streams.stack.local_kafka"):
            assert local_kafka.stop(settings, timeout=0.5) == stand_in.pid
        assert "did not stop within" in caplog.text
        assert stand_in.wait(5) == -9
        assert not paths.pid_file.exists()
    finally:
        stand_in.kill()
        stand_in.wait()


def _fake_java(bin_dir: Path, version_line: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)


def test_missing_java_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    settings = _local_settings(tmp_path / "data")
    with pytest.raises(StackError, match="java not found"):
        local_kafka.install(settings)
    assert run_from_args(_args("up"), settings) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: java not found") and err.count("\n") == 1


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path / "bin", 'openjdk version "11.0.22" 2024-01-16')
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(StackError, match="is Java 11; the local Kafka broker needs Java 17"):
        local_kafka.install(_local_settings(tmp_path / "data"))


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path / "bin", 'openjdk version "17.0.15" 2025-04-15')
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(StackError, match="mvn not found on PATH"):
        local_kafka.install(_local_settings(tmp_path / "data"))


@pytest.mark.parametrize(
    ("line", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
    ],
)
def test_java_version(tmp_path: Path, line: str, major: int) -> None:
    _fake_java(tmp_path, line)
    assert local_kafka.java_version(str(tmp_path / "java")) == major


def test_is_local_kafka_follows_the_configured_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUNDWATCH_KAFKA_BOOTSTRAP", raising=False)
    moved = Settings(_env_file=None, local_kafka_port=29092)
    assert moved.kafka_bootstrap == "127.0.0.1:29092" and moved.is_local_kafka
    assert not Settings(
        _env_file=None, local_kafka_port=29092, kafka_bootstrap="127.0.0.1:19092"
    ).is_local_kafka
    assert not Settings(_env_file=None, kafka_bootstrap="kafka:9092").is_local_kafka


def test_cluster_ids_look_like_kafkas() -> None:
    cluster_id = local_kafka.new_cluster_id()
    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
