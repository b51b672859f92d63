"""Burst: an offered load far above capacity (two days of the `small` preset, about 32,000
events, produced as fast as the producer goes: some 15 times what one worker judges per second)
into a worker process and a sink process. Their memory (VmRSS) stays bounded while the lag first
grows, then drains to zero: both consume in bounded batches, so a backlog waits in Kafka, not in
memory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.config import REPO_ROOT, Settings
from streams.simulator import SimConfig, Simulation
from streams.simulator.output import produce_to_kafka
from streams.stack.topics import ensure_topics
from tests.faults.helpers import INPUT_ROLES, KillableWorkerRun, rss_kib, wait_until
from tests.worker.test_worker_e2e import recent_monday

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = 2
WORKER_RSS_BOUND_MIB = 1_000  # generous: a tiny-world worker runs at 150-250 MiB
SINK_RSS_BOUND_MIB = 1_500  # the sink embeds chDB


def _group_lag(settings: Settings, group: str, topics: list[str]) -> int:
    c = Consumer({**settings.kafka_common(), "group.id": group})
    try:
        parts = range(settings.topics.settlement.partitions)
        tps = [TopicPartition(t, p) for t in topics for p in parts]
        committed = sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
        end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return end - committed
    finally:
        c.close()


def test_a_burst_far_above_capacity_keeps_memory_bounded_and_drains(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    inputs = kafka_settings.topics.model_copy(update={
        role: getattr(kafka_settings.topics, role).model_copy(
            update={"name": f"{role}-burst-{suffix}"})
        for role in (*INPUT_ROLES, "sim_labels")
    })  # fmt: skip
    run = KillableWorkerRun(kafka_settings, inputs, tmp_path, "burst")
    settings = run.settings
    ensure_topics(settings, settings.topics.inputs())
    sim = Simulation(SimConfig(preset="small", seed=3, start_ms=recent_monday(DAYS), days=DAYS))
    sim.world.registry().dump(tmp_path / "registry")
    records = list(sim.records())
    run.start(tmp_path / "registry")
    sink_env = {**run.env(), "FUNDWATCH_DATA_DIR": str(tmp_path / "sink")}
    sink_log = (tmp_path / "sink.log").open("wb")
    sink = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "sink", "--group", f"{settings.worker_app_id}-sink"],
        cwd=REPO_ROOT, env=sink_env, stdout=sink_log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    worker_pid = run.worker.proc.pid
    names = [t.name for t in settings.topics.inputs()]
    sink_group = f"{settings.worker_app_id}-sink"
    samples: list[tuple[float, int, int, int, int]] = []  # t, worker kib, sink kib, lags
    try:
        time.sleep(8)  # both start up and join their groups
        base_w, base_s = rss_kib(worker_pid), rss_kib(sink.pid)
        t0 = time.monotonic()
        summary = produce_to_kafka(settings, iter(records))
        produced_s = time.monotonic() - t0

        def drained() -> bool:
            w_lag = _group_lag(settings, settings.worker_app_id, names)
            s_lag = _group_lag(settings, sink_group, names)
            samples.append((time.monotonic() - t0, rss_kib(worker_pid), rss_kib(sink.pid),
                            w_lag, s_lag))  # fmt: skip
            assert run.worker.alive() and sink.poll() is None, "a process died"
            return w_lag == 0 and s_lag == 0

        try:
            took = wait_until(drained, 90, "the backlog did not drain in 90 s", every_s=0.5)
        except AssertionError:
            raise AssertionError(f"not drained: (t, worker KiB, sink KiB, worker lag, sink lag) "
                                 f"{samples[::20]} {samples[-1]}") from None  # fmt: skip
    finally:
        run.stop()
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(60)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()
        sink_log.close()

    peak_w = max(s[1] for s in samples) / 1024
    peak_s = max(s[2] for s in samples) / 1024
    max_w_lag, max_s_lag = max(s[3] for s in samples), max(s[4] for s in samples)
    print(
        f"\nburst: {summary.total_events} events produced in {produced_s:.1f}s "
        f"({summary.total_events / produced_s:,.0f}/s); drained {took:.1f}s later; "
        f"worker RSS {base_w / 1024:.0f} -> peak {peak_w:.0f} MiB, max lag {max_w_lag}; "
        f"sink RSS {base_s / 1024:.0f} -> peak {peak_s:.0f} MiB, max lag {max_s_lag}"
    )
    assert sink.returncode == 0, (tmp_path / "sink.log").read_text()[-2000:]
    assert max_w_lag > summary.total_events // 4 and max_s_lag > 0  # a backlog built up ...
    assert samples[-1][3] == samples[-1][4] == 0  # ... and drained
    assert peak_w < WORKER_RSS_BOUND_MIB and peak_s < SINK_RSS_BOUND_MIB
