"""The benchmark's workload: a seeded simulated world, and topics of its own on the broker.

Every phase gets its own topics (`fwbench-<run>-<phase>-<role>`, kept without time-based
retention: the event times lie up to `days` in the past) and, for the live phases, its own
worker group and state directory. They are deleted at the end of the run.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from models.reference import Registry
from streams.config import Settings, Topics
from streams.simulator import SimConfig, SimRecord, Simulation
from streams.simulator.events import SIM_LABELS
from streams.stack.topics import admin_client, ensure_topics

log = logging.getLogger(__name__)


@dataclass
class Workload:
    """The records of one simulated run, in event-time order (labels included), and the
    reference data its detectors read."""

    config: SimConfig
    records: list[SimRecord]
    events: int
    registry: Registry
    registry_dir: Path
    build_s: float

    @classmethod
    def build(
        cls, preset: str, days: int, seed: int, max_events: int | None, work_dir: Path
    ) -> Workload:
        """Simulate `days` days of a preset's world ending today (event times close to now)."""
        t0 = time.perf_counter()
        config = SimConfig(preset=preset, seed=seed, days=days)
        sim = Simulation(config)
        records = sim.records()
        out: list[SimRecord] = []
        events = 0
        for rec in records:
            if rec.topic != SIM_LABELS:
                if max_events is not None and events >= max_events:
                    break
                events += 1
            out.append(rec)
        registry = sim.world.registry()
        registry_dir = work_dir / "registry"
        registry.dump(registry_dir)
        return cls(config, out, events, registry, registry_dir, time.perf_counter() - t0)

    def prefix(self, n: int) -> list[SimRecord]:
        """The records up to the n-th event (labels in between included)."""
        if n >= self.events:
            return self.records
        seen = 0
        for i, rec in enumerate(self.records):
            if rec.topic != SIM_LABELS:
                seen += 1
                if seen > n:
                    return self.records[:i]
        return self.records


class BenchTopics:
    """Settings whose topics, worker group, sink group and data dir belong to one phase."""

    def __init__(self, base: Settings, run_id: str, phase: str, data_dir: Path) -> None:
        self.prefix = f"fwbench-{run_id}-{phase}"
        specs = {
            role: spec.model_copy(update={"name": f"{self.prefix}-{role}", "retention_ms": -1})
            for role, spec in base.topics
        }
        self.settings = base.model_copy(
            update={
                "topics": Topics(**specs),
                "worker_app_id": f"{self.prefix}-worker",
                "consumer_group": f"{self.prefix}-sink",
                "data_dir": data_dir,
            }
        )

    def create(self) -> BenchTopics:
        ensure_topics(self.settings, self.settings.topics.all())
        return self

    def delete(self) -> None:
        """Delete every topic of the phase, the worker's changelog topics included."""
        admin = admin_client(self.settings)
        try:
            names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(self.prefix)]
            if names:
                for future in admin.delete_topics(names, operation_timeout=30).values():
                    future.exception()
        except Exception as exc:  # cleanup must not hide the figures
            log.warning("could not delete the topics of %s: %s", self.prefix, exc)


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]
