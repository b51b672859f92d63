"""Shared simulator runs: generated once per session (tiny takes about a second)."""

from __future__ import annotations

import pytest

from streams.simulator import SimConfig, Simulation, parse_start
from streams.simulator.events import SimRecord

START = parse_start("2026-11-02")  # a Monday


class Run:
    """A finished simulation: its records and the simulation object (world, counts)."""

    def __init__(self, config: SimConfig) -> None:
        self.sim = Simulation(config)
        self.records: list[SimRecord] = list(self.sim.records())

    def topic(self, name: str) -> list[dict]:
        return [r.record for r in self.records if r.topic == name]


@pytest.fixture(scope="session")
def tiny() -> Run:
    """tiny with its default fraud."""
    return Run(SimConfig(preset="tiny", seed=7, start_ms=START))


@pytest.fixture(scope="session")
def tiny_normal() -> Run:
    """tiny without fraud: normal behaviour only."""
    return Run(SimConfig(preset="tiny", seed=11, start_ms=START, fraud_rate=0))
