"""Worker faults on the real broker: SIGKILL at random points of a stream, and duplicated input.

A killed worker commits nothing after its last batch and leaves no group: its open transaction
is aborted when the restarted one (same name, same transactional id) starts, which then waits
for the group's session timeout (6 s here, `FUNDWATCH_WORKER_SESSION_TIMEOUT_S`), restores its
state from the changelog and re-reads from the committed offsets. The alerts must be an
uninterrupted run's, alert for alert and each once in the topic, and ClickHouse must keep one
row per alert. A producer that
retries delivers a record twice (same event id): the worker must raise the same alerts.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.config import Settings
from streams.simulator.output import produce_to_kafka
from streams.sink.service import Sink
from tests.faults.helpers import (
    INPUT_ROLES,
    KillableWorkerRun,
    World,
    make_world,
    wait_until,
)
from tests.kafka_helpers import drain
from tests.worker.test_worker_e2e import assert_same_alerts, report_difference

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = 5
KILLS = 3
SEED = 2026
RATE = 120.0  # events/s produced during the kill test


@pytest.fixture(scope="module")
def kill_world(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The world's topics; its records are produced by the kill test (live) or the reference."""
    return make_world(kafka_settings, tmp_path_factory.mktemp("faults-kill"), DAYS, seed=13)


def _produce_all(world: World, rate: float | None = None) -> None:
    if not getattr(world, "produced", False):
        world.produced = True  # type: ignore[attr-defined]
        produce_to_kafka(world.settings, iter(world.records), rate=rate)


@pytest.fixture(scope="module")
def kill_reference(kill_world: World) -> dict:
    """An uninterrupted worker over the whole world (produced first)."""
    _produce_all(kill_world)
    run = KillableWorkerRun(kill_world.settings, kill_world.inputs, kill_world.tmp, "ref")
    run.start(kill_world.registry)
    t0 = time.monotonic()
    try:
        run.worker.wait_caught_up(timeout_s=240)
    finally:
        assert run.stop() == 0, run.log()
    alerts = run.alerts()
    print(f"\nreference: {kill_world.events} events, {len(alerts)} alerts, "
          f"{time.monotonic() - t0:.1f}s")  # fmt: skip
    assert alerts
    return {"alerts": alerts, "run": run}


def test_a_worker_killed_three_times_raises_the_same_alerts_once_stored(
    kill_world: World, request: pytest.FixtureRequest, store
) -> None:
    """The stream is produced live (RATE events/s) while the worker runs, so each kill lands
    mid-stream; after each restart the test waits for a new commit (the recovery time)."""
    producer = threading.Thread(target=_produce_all, args=(kill_world, RATE), daemon=True)
    producer.start()
    rng = random.Random(SEED)
    fractions = sorted(rng.uniform(0.2, 0.8) for _ in range(KILLS))
    run = KillableWorkerRun(kill_world.settings, kill_world.inputs, kill_world.tmp, "killed")
    run.start(kill_world.registry)
    kills = []
    expected = kill_world.events
    try:
        for fraction in fractions:
            # a committed fraction of the input the world will have in the end, with records
            # still to commit: a kill after the worker caught up with a finished producer
            # would wait for a commit that cannot come
            def due(f: float = fraction) -> bool:
                committed, end = run.worker.progress()
                return committed < end and _inputs_committed(run) >= f * expected

            wait_until(due, 180, f"worker below {fraction:.0%} while records were pending "
                       f"(producer alive: {producer.is_alive()})\n{run.log()}")  # fmt: skip
            run.kill()
            killed_at = time.monotonic()
            committed, end = run.worker.progress()
            run.start(kill_world.registry)  # same group, same state dir
            restart = wait_until(
                lambda c=committed: run.worker.progress()[0] > c,
                120,
                f"no commit after the kill at {committed}/{end}\n{run.log()}",
            )
            kills.append({"target": round(fraction, 3), "committed": committed, "end": end,
                          "inputs": round(_inputs_committed(run) / expected, 3),
                          "recovery_s": round(time.monotonic() - killed_at, 1),
                          "restart_to_commit_s": round(restart, 1)})  # fmt: skip
        producer.join(300)
        run.worker.wait_caught_up(timeout_s=240)
    finally:
        code = run.stop()
    assert code == 0, run.log()
    for k in kills:
        print(f"kill at {k['target']:.0%} of the input committed ({k['committed']}/{k['end']} "
              f"records of all source topics then): first new commit {k['recovery_s']}s "
              f"after the kill")  # fmt: skip
    assert all(k["committed"] < k["end"] for k in kills), kills  # every kill mid-stream
    reference = request.getfixturevalue("kill_reference")

    got = run.alerts()
    report_difference(got, reference["alerts"], f"kills {kills}")
    assert_same_alerts(got, reference["alerts"])
    distinct = {a["alert_id"] for a in got}
    print(f"alert records {len(got)} ({len(distinct)} distinct ids); uninterrupted run: "
          f"{len(reference['alerts'])} records")  # fmt: skip
    assert len(got) == len(reference["alerts"])  # no alert of an aborted batch is visible

    settings = run.settings
    sink = Sink(settings, store, roles=("alerts",), group_id=f"{settings.worker_app_id}-sink")
    drain(sink, settings, ("alerts",))
    rows = store.scalar(f"SELECT count() FROM `{store.database}`.alerts FINAL")
    assert rows == len(distinct) == len({a["alert_id"] for a in reference["alerts"]})

    # No person id in the worker's log (killed and restarted four times).
    text = run.full_log()
    leaked = [p for p in kill_world.person_ids if p in text]
    assert not leaked, f"{len(leaked)} person ids in the worker log"


def _inputs_committed(run: KillableWorkerRun) -> int:
    """Offsets the worker group committed on the three input topics (events and watermarks)."""
    s = run.settings
    c = Consumer({**s.kafka_common(), "group.id": s.worker_app_id})
    try:
        tps = [TopicPartition(getattr(s.topics, role).name, p)
               for role in INPUT_ROLES for p in range(s.topics.settlement.partitions)]  # fmt: skip
        return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
    finally:
        c.close()


@pytest.fixture(scope="module")
def dup_world(kill_world: World, kafka_settings: Settings, tmp_path_factory) -> Iterator[World]:
    """The same world on new input topics, about a third of its events produced twice in a row
    (a producer's retries: same key, same event id, same timestamp)."""
    tmp = tmp_path_factory.mktemp("faults-dup")
    world = make_world(kafka_settings, tmp, DAYS, seed=13)
    rng = random.Random(SEED)
    doubled = []
    for rec in world.records:
        doubled.append(rec)
        if rng.random() < 0.33:
            doubled.append(rec)
    produce_to_kafka(world.settings, iter(doubled))
    world.records = doubled
    yield world


def test_duplicated_input_records_raise_the_same_alert_ids(
    dup_world: World, kill_world: World, kill_reference: dict
) -> None:
    duplicates = len(dup_world.records) - len({r.record["event_id"] for r in dup_world.records})
    print(f"\n{duplicates} duplicate deliveries among {dup_world.events} records")
    assert duplicates > 500
    run = KillableWorkerRun(dup_world.settings, dup_world.inputs, dup_world.tmp, "dup")
    run.start(dup_world.registry)
    try:
        run.worker.wait_caught_up(timeout_s=240)
    finally:
        assert run.stop() == 0, run.log()
    got, expected = run.alerts(), kill_reference["alerts"]
    # Every detector, the online models' counts included: a re-delivered event id is judged
    # once (the processor drops the second copy).
    assert_same_alerts(got, expected)
