"""The engine: day after day, inject the instances that start today, plan normal life, and
yield every record in event-time order.

Memory stays bounded by a day's plan (tuples) plus the records pending on the timeline (a few
minutes of visits and the future days of ongoing stays); a city's week is never a list.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from models.catalogue import SCENARIOS
from streams.simulator.acts import Acts
from streams.simulator.behaviour import NormalLife, Roster
from streams.simulator.config import DAY_MS, LOCAL_OFFSET_MS, SimConfig, local_weekday
from streams.simulator.events import SIM_LABELS, IdGen, SimRecord, Timeline
from streams.simulator.scenarios import Context, inject, plan_instances
from streams.simulator.world import World

UNBOUNDED_EPOCH_DAYS = 7  # unbounded runs plan their fraud a week at a time


class Simulation:
    """One deterministic run: the same seed, preset, start and sizes give the same records."""

    def __init__(self, config: SimConfig, world: World | None = None) -> None:
        self.config = config
        self.sizes = config.sizes()
        self.seed = config.seed
        start = config.resolved_start_ms()
        self.start_ms = (start + LOCAL_OFFSET_MS) // DAY_MS * DAY_MS - LOCAL_OFFSET_MS
        self.days = self.sizes.days  # 0: unbounded
        self.world = world or World.build(self.sizes, self.seed)
        self.timeline = Timeline()
        self.timeline.clock = self.start_ms
        self.ids = IdGen(self.seed)
        self.acts = Acts(self.world, self.timeline, self.ids, self.seed, self.start_ms)
        self.roster = Roster(self.world, self.seed, self.start_ms)
        self.life = NormalLife(self.world, self.acts, self.roster, self.start_ms, self.seed)
        end_day = self.days if self.days > 0 else None
        self.context = Context(
            self.world,
            self.acts,
            self.life,
            self.roster,
            self.ids,
            self.start_ms,
            end_day,
            self.seed,
        )
        self._plan_rng = random.Random(f"plan:{self.seed}")
        self.injected: dict[str, int] = {s.id: 0 for s in SCENARIOS}
        self.skipped: dict[str, int] = {s.id: 0 for s in SCENARIOS}

    @property
    def end_ms(self) -> int | None:
        """End of the simulated span (None when unbounded)."""
        return self.start_ms + self.days * DAY_MS if self.days > 0 else None

    def instances_per_scenario(self, days: int) -> int:
        rate = self.sizes.fraud_rate
        if rate <= 0:
            return 0
        return max(self.sizes.min_instances, round(rate * self.sizes.persons / 10_000 * days))

    def records(self) -> Iterator[SimRecord]:
        """Every record of the run in event-time order (labels right after their last event)."""
        epoch = self.days if self.days > 0 else UNBOUNDED_EPOCH_DAYS
        end_day = self.days if self.days > 0 else None
        fraud: dict[int, list[str]] = {}
        d = 0
        while end_day is None or d < end_day:
            if d % epoch == 0:
                n = self.instances_per_scenario(epoch)
                fraud.update(
                    plan_instances(
                        self._plan_rng,
                        d,
                        epoch,
                        end_day,
                        lambda _s, n=n: n,
                        lambda day: local_weekday(self.start_ms + day * DAY_MS),
                    )
                )
            for scenario in fraud.pop(d, ()):
                if inject(self.context, scenario, d):
                    self.injected[scenario] += 1
                else:
                    self.skipped[scenario] += 1
            pop = self.timeline.pop_before
            materialise = self.life.materialise
            for entry in self.life.plan_day(d):
                yield from pop(entry[0])
                materialise(entry)
            d += 1
            yield from pop(self.start_ms + d * DAY_MS)


def simulate(config: SimConfig, world: World | None = None) -> Iterator[SimRecord]:
    """The records of a run; with `config.max_events`, stop after that many events (labels
    are not counted; a label is yielded only once all its events have been)."""
    records = Simulation(config, world).records()
    return records if config.max_events is None else limit(records, config.max_events)


def limit(records: Iterator[SimRecord], max_events: int) -> Iterator[SimRecord]:
    """The first `max_events` events, and the labels that directly follow the last of them."""
    n = 0
    for rec in records:
        if rec.topic == SIM_LABELS:
            yield rec
            continue
        if n >= max_events:
            return
        n += 1
        yield rec
