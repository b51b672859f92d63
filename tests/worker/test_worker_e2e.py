"""The detection worker on the real broker: every scenario of the simulator is caught, the same
input processed twice gives the same alert ids (the reorder buffer judges events in event time,
whatever the interleaving of the inputs), and a worker stopped and restarted in the middle of
the stream raises the alerts of an uninterrupted run, each stored once in ClickHouse."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from models.catalogue import SCENARIOS
from models.evaluation import score
from schemas.codec import Codec
from streams.config import Settings, Topics
from streams.simulator import SimConfig, Simulation
from streams.simulator.config import SHANGHAI, local_midnight_ms
from streams.simulator.output import produce_to_kafka, tee_labels
from streams.sink.service import Sink
from streams.stack.topics import ensure_topics
from streams.worker.process import WorkerProcess
from streams.worker.routing import REPARTITION_ROLES
from tests.kafka_helpers import drain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL_SCENARIOS: set[str] = set()  # online models: models/online (docs/detection.md)
INPUT_ROLES = ("settlement", "face_verify", "trace_scan")
WORLD_DAYS = 14


def recent_monday(days: int) -> int:
    """Local midnight of the Monday at least `days` + 1 days before today.

    The world then ends before today and well inside the inputs' 30-day retention (the broker
    deletes records by their timestamp, which is the event time), and it has the same weekly
    layout whatever the day the tests run.
    """
    day = dt.datetime.now(SHANGHAI).date() - dt.timedelta(days=days + 1)
    return local_midnight_ms(day - dt.timedelta(days=day.weekday()))


class WorkerRun:
    """A worker with its own consumer group, state dir, outputs and repartition topics."""

    def __init__(
        self,
        base: Settings,
        inputs: Topics,
        tmp: Path,
        name: str,
        engine: str = "transactional",
        batch_size: int | None = None,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        suffix = uuid.uuid4().hex[:8]
        own = {
            role: getattr(base.topics, role).model_copy(update={"name": f"{role}-{name}-{suffix}"})
            for role in ("alerts", "dead_letters", "aggregates", *REPARTITION_ROLES)
        }
        self.settings = base.model_copy(
            update={
                "topics": inputs.model_copy(update=own),
                "worker_app_id": f"fw-test-{name}-{suffix}",
                "data_dir": tmp / name,
            }
        )
        ensure_topics(self.settings, list(own.values()))
        self.tmp = tmp / name
        self.worker: WorkerProcess | None = None

    def env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDWATCH_")}
        env.update({
            "FUNDWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "FUNDWATCH_WORKER_APP_ID": s.worker_app_id,
            "FUNDWATCH_DATA_DIR": str(s.data_dir),
            "FUNDWATCH_WORKER_ENGINE": self.engine,
        })  # fmt: skip
        if self.batch_size is not None:
            env["FUNDWATCH_WORKER_BATCH_SIZE"] = str(self.batch_size)
        for role in type(s.topics).model_fields:
            env[f"FUNDWATCH_TOPICS__{role.upper()}__NAME"] = getattr(s.topics, role).name
        return env

    def start(self, registry: Path) -> WorkerRun:
        self.worker = WorkerProcess(
            self.settings, registry, "w", self.env(), log_path=self.tmp / "worker.log", verbose=True
        ).start()
        return self

    def stop(self) -> int:
        assert self.worker is not None
        return self.worker.stop()

    def log(self) -> str:
        return (self.tmp / "worker.log").read_text(errors="replace")[-3000:]

    def alerts(self) -> list[dict]:
        """Every alert record the worker produced (decoded), in topic order."""
        s = self.settings
        name = s.topics.alerts.name
        c = Consumer({**s.kafka_common(), "group.id": f"read-{uuid.uuid4().hex}",
                      "auto.offset.reset": "earliest", "enable.partition.eof": True})  # fmt: skip
        parts = c.list_topics(name, timeout=10).topics[name].partitions
        c.assign([TopicPartition(name, p, 0) for p in parts])
        codec, out, eof = Codec.default(), [], set()
        while len(eof) < len(parts):
            msg = c.poll(5)
            assert msg is not None, "alerts topic did not reach its end"
            if msg.error():
                eof.add(msg.partition())
                continue
            out.append(codec.decode(msg.value(), expect="Alert"))
        c.close()
        return out


def assert_same_alerts(got: list[dict], expected: list[dict]) -> None:
    """Same alert ids; on a difference, say which detectors and triggering events differ."""
    by_id = {a["alert_id"]: a for a in got + expected}
    g, e = {a["alert_id"] for a in got}, {a["alert_id"] for a in expected}
    diff = [
        (
            by_id[i]["detector_id"],
            by_id[i]["evidence_event_ids"][-1],
            "extra" if i in g else "missing",
        )
        for i in sorted(g ^ e)
    ]
    assert not diff, diff


def report_difference(got: list[dict], expected: list[dict], context: object) -> None:
    """An xfail shows no traceback: say what differed as a warning, which the test run's
    summary prints, so that a failure in CI can be diagnosed (alerts, explanations, and the
    `context`: the kill or stop points)."""
    by_id = {a["alert_id"]: a for a in expected} | {a["alert_id"]: a for a in got}
    diff = {a["alert_id"] for a in got} ^ {a["alert_id"] for a in expected}
    if not diff:
        return
    lines = [
        f"{'extra' if i in {a['alert_id'] for a in got} else 'missing'} {by_id[i]['detector_id']} "
        f"{by_id[i]['entity_type']} evidence {by_id[i]['evidence_event_ids'][-3:]} "
        f"at {by_id[i]['event_time']}: {by_id[i]['explanation']}"
        for i in sorted(diff)[:10]
    ]
    warnings.warn(
        f"the run differs from the reference in {len(diff)} alerts; {context}; "
        + " | ".join(lines),
        stacklevel=2,
    )


@pytest.fixture(scope="module")
def world(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A tiny two-week world with every scenario, produced once to topics of its own."""
    tmp = tmp_path_factory.mktemp("worker-e2e")
    suffix = uuid.uuid4().hex[:8]
    inputs = kafka_settings.topics.model_copy(
        update={
            role: getattr(kafka_settings.topics, role).model_copy(
                update={"name": f"{role}-in-{suffix}"}
            )
            for role in (*INPUT_ROLES, "sim_labels")
        }
    )
    settings = kafka_settings.model_copy(update={"topics": inputs})
    ensure_topics(settings, [getattr(inputs, r) for r in (*INPUT_ROLES, "sim_labels")])
    config = SimConfig(preset="tiny", seed=7, start_ms=recent_monday(WORLD_DAYS), days=WORLD_DAYS)
    sim = Simulation(config)
    sim.world.registry().dump(tmp / "registry")
    labels = []
    records = tee_labels(sim.records(), tmp / "labels.jsonl")
    summary = produce_to_kafka(settings, records)
    for line in (tmp / "labels.jsonl").read_text().splitlines():
        labels.append(json.loads(line))
    yield {"settings": settings, "inputs": inputs, "tmp": tmp, "labels": labels,
           "registry": tmp / "registry", "events": summary.total_events}  # fmt: skip


@pytest.fixture(scope="module")
def reference(world: dict) -> dict:
    """An uninterrupted worker run over the world: its alerts."""
    run = WorkerRun(world["settings"], world["inputs"], world["tmp"], "ref").start(
        world["registry"]
    )
    try:
        run.worker.wait_caught_up()
    finally:
        code = run.stop()
    assert code == 0, run.log()
    return {"run": run, "alerts": run.alerts()}


def test_every_scenario_is_caught(world: dict, reference: dict) -> None:
    scores = score(reference["alerts"], world["labels"])
    rows = []
    for scenario in SCENARIOS:
        if scenario.id in MODEL_SCENARIOS:
            continue
        sc = scores[scenario.detector_id]
        rows.append((scenario.detector_id, sc.labels, sc.recall, sc.alerts, sc.precision))
        assert sc.labels >= 3, scenario.id
        assert sc.recall is not None and sc.recall >= 0.95, (scenario.id, sc)
        if scenario.kind == "violation":
            assert sc.precision is not None and sc.precision >= 0.9, (scenario.id, sc)
    print("\n".join(f"{r[0]:28s} labels={r[1]} recall={r[2]:.2f} alerts={r[3]} "
                    f"precision={r[4]}" for r in rows))  # fmt: skip


def test_the_faust_engine_raises_the_same_alerts(world: dict, reference: dict) -> None:
    """The faust-streaming agent over the same input, uninterrupted: the same alert ids as the
    transactional engine (the same BatchProcessor behind both)."""
    run = WorkerRun(world["settings"], world["inputs"], world["tmp"], "faust", engine="faust")
    run.start(world["registry"])
    try:
        run.worker.wait_caught_up()
    finally:
        assert run.stop() == 0, run.log()
    assert_same_alerts(run.alerts(), reference["alerts"])


def test_same_input_twice_gives_the_same_alert_ids(world: dict, reference: dict) -> None:
    again = WorkerRun(world["settings"], world["inputs"], world["tmp"], "again")
    again.start(world["registry"])
    try:
        again.worker.wait_caught_up()
    finally:
        again.stop()
    assert reference["alerts"]
    assert_same_alerts(again.alerts(), reference["alerts"])


def wait_for_progress(
    run: WorkerRun, fraction: float, timeout_s: float = 120, past: int = 0
) -> tuple[int, int]:
    """Block until the worker has committed `fraction` of the records now in its topics, and
    more than `past` records."""
    assert run.worker is not None
    deadline = time.monotonic() + timeout_s
    while True:
        committed, end = run.worker.progress()
        if end and committed >= fraction * end and committed > past:
            return committed, end
        assert time.monotonic() < deadline, f"no progress: {committed}/{end}\n{run.log()}"
        time.sleep(0.2)


def test_a_worker_stopped_and_restarted_raises_the_same_alerts(
    world: dict, reference: dict, store
) -> None:
    # small batches: the commits move in small steps, so the stops land mid-stream (with the
    # default 2,000 the worker once went from under 60% to the end between two looks)
    run = WorkerRun(world["settings"], world["inputs"], world["tmp"], "restart", batch_size=200)
    run.start(world["registry"])
    stops: list[tuple[int, int]] = []
    for _ in range(2):
        # the first stop at 30 %; the second as soon as the restarted worker has committed
        # 1,000 records more (waiting for 60 % once found it had gone from under 60 % to the
        # end between two looks: the transactional engine does ~10,000 records/s here)
        previous = stops[-1][0] if stops else 0
        stops.append(wait_for_progress(run, 0.3, past=previous + 1000))
        assert run.stop() == 0, run.log()  # SIGTERM: the batch in flight is committed
        run.start(world["registry"])  # same group: resumes from the changelog
    try:
        run.worker.wait_caught_up()
    finally:
        assert run.stop() == 0, run.log()
    assert all(committed < end for committed, end in stops), stops  # both stops mid-stream
    got = run.alerts()
    report_difference(got, reference["alerts"], f"stops (committed, end) {stops}")
    assert_same_alerts(got, reference["alerts"])

    # Exactly once in the topic: a stop commits the batch in flight with its outputs, and the
    # restarted worker does not produce them again. The store keeps one row per id anyway.
    assert len(got) == len(reference["alerts"]), (stops, len(got))
    settings = run.settings
    sink = Sink(settings, store, roles=("alerts",), group_id=f"{settings.worker_app_id}-sink")
    drain(sink, settings, ("alerts",))
    rows = store.scalar(f"SELECT count() FROM `{store.database}`.alerts FINAL")
    assert rows == len({a["alert_id"] for a in reference["alerts"]}), (stops, len(got))


@pytest.mark.xfail(
    strict=False,
    reason="the faust engine: 2 of 5 runs on 2026-12-02 failed (a repartition partition never "
    "delivered after the restart; a SIGTERM that did not end cleanly). faust's rebalance "
    "defects, docs/worker.md 'Engines'; the default engine is tested by the tests above",
)
def test_a_faust_worker_that_lost_its_disk_restores_its_state_from_the_changelog(
    world: dict, reference: dict
) -> None:
    """The faust engine keeps its states in RocksDB: between a stop and a restart the worker's
    RocksDB directory is deleted, faust rebuilds the detector states and checkpoints from the
    changelog topic alone, and the alerts are the reference's. (The transactional engine keeps
    no disk: it restores from the changelog at every assignment, as the other tests show.)"""
    run = WorkerRun(world["settings"], world["inputs"], world["tmp"], "wiped", engine="faust")
    run.start(world["registry"])
    committed, end = wait_for_progress(run, 0.5)
    assert run.stop() == 0, run.log()
    state = run.settings.data_dir / "worker" / run.settings.worker_app_id / "w"
    assert list(state.rglob("detector-state-*.db"))
    shutil.rmtree(state)
    run.start(world["registry"])
    try:
        run.worker.wait_caught_up()
    finally:
        assert run.stop() == 0, run.log()
    assert committed < end  # stopped mid-stream
    assert list(state.rglob("detector-state-*.db"))  # rebuilt
    assert_same_alerts(run.alerts(), reference["alerts"])


def test_two_workers_share_the_partitions_and_raise_the_same_alerts(
    world: dict, reference: dict
) -> None:
    """A second worker joins the group mid-stream: the partitions are rebalanced, each moves
    with its state (the changelog) and its checkpoint, and the alerts are the reference's."""
    run = WorkerRun(world["settings"], world["inputs"], world["tmp"], "pair").start(
        world["registry"]
    )
    wait_for_progress(run, 0.3)
    second = WorkerProcess(
        run.settings,
        world["registry"],
        "w2",
        run.env(),
        log_path=run.tmp / "worker2.log",
        verbose=True,
    ).start()
    try:
        run.worker.wait_caught_up(timeout_s=150)
        second.wait_caught_up(timeout_s=60)
    finally:
        codes = (second.stop(), run.stop())
    assert codes == (0, 0), run.log()
    # the second worker did own partitions: it restored their state when they were assigned
    log2 = " ".join((run.tmp / "worker2.log").read_text(errors="replace").split())
    assert re.search(r"assigned partitions \[\d", log2), log2[-3000:]
    got = run.alerts()
    report_difference(got, reference["alerts"], "two workers")
    assert_same_alerts(got, reference["alerts"])
