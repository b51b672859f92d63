"""Shared pieces of the fault tests: small simulated worlds on topics of their own, workers
that can be killed, memory of a process, person ids to look for in logs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException

from streams.config import Settings, Topics
from streams.simulator import SimConfig, Simulation
from streams.simulator.events import SimRecord
from streams.stack.topics import ensure_topics
from tests.worker.test_worker_e2e import WorkerRun, recent_monday

INPUT_ROLES = ("settlement", "face_verify", "trace_scan")
SESSION_TIMEOUT_S = 6.0  # the broker's group.min.session.timeout.ms


@dataclass
class World:
    """A small simulated world: its records, its input topics, its reference data."""

    settings: Settings
    inputs: Topics
    tmp: Path
    registry: Path
    records: list[SimRecord]
    person_ids: set[str] = field(default_factory=set)

    @property
    def events(self) -> int:
        return sum(1 for r in self.records if r.topic != "sim_labels")


def make_world(base: Settings, tmp: Path, days: int, seed: int) -> World:
    """Simulate a tiny region for `days` ending before today; create input topics for it."""
    suffix = uuid.uuid4().hex[:8]
    inputs = base.topics.model_copy(
        update={
            role: getattr(base.topics, role).model_copy(update={"name": f"{role}-flt-{suffix}"})
            for role in (*INPUT_ROLES, "sim_labels")
        }
    )
    settings = base.model_copy(update={"topics": inputs})
    ensure_topics(settings, [getattr(inputs, r) for r in (*INPUT_ROLES, "sim_labels")])
    sim = Simulation(SimConfig(preset="tiny", seed=seed, start_ms=recent_monday(days), days=days))
    sim.world.registry().dump(tmp / "registry")
    records = [r for r in sim.records() if r.topic != "sim_labels"]
    persons = {r.record["person_id"] for r in records if r.topic == "settlement"}
    persons |= {
        r.record["subject_id"]
        for r in records
        if r.topic == "face_verify" and r.record.get("subject_type") == "PATIENT"
    }
    return World(settings, inputs, tmp, tmp / "registry", records, persons)


class KillableWorkerRun(WorkerRun):
    """A WorkerRun with a short group session timeout, so a killed worker's partitions move on
    after seconds rather than a minute, and a SIGKILL."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env["FUNDWATCH_WORKER_SESSION_TIMEOUT_S"] = str(SESSION_TIMEOUT_S)
        env["FUNDWATCH_WORKER_HEARTBEAT_INTERVAL_S"] = "1"
        env["FUNDWATCH_METRICS_ENABLED"] = "false"
        return env

    def kill(self) -> None:
        """SIGKILL: no commit, no leave-group, no flush."""
        assert self.worker is not None and self.worker.proc is not None
        self.worker.proc.kill()
        self.worker.proc.wait()
        self.worker.stop()  # closes the log file; the process is gone

    def full_log(self) -> str:
        return (self.tmp / "worker.log").read_text(errors="replace")

    def committed(self) -> int:
        """The group's committed offsets summed, -1 while the broker cannot tell (a restarted
        broker answers NOT_COORDINATOR until it has loaded the group)."""
        assert self.worker is not None
        try:
            return self.worker.progress()[0]
        except KafkaException:
            return -1


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS of /proc/<pid>/status), in KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def wait_until(
    predicate, timeout_s: float, what: str | Callable[[], str], every_s: float = 0.2
) -> float:
    """Poll until predicate() is true; returns the seconds it took. `what` names the wait in
    the failure (a callable is asked then, to describe the state it timed out in)."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 >= timeout_s:
            raise AssertionError(
                f"timed out after {timeout_s:.0f}s: {what() if callable(what) else what}"
            )
        time.sleep(every_s)
    return time.monotonic() - t0
