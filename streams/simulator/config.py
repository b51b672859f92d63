"""Sizes, presets and the run configuration of a simulation.

Times are int epoch milliseconds; "local" means Asia/Shanghai (UTC+8, no daylight saving), the
zone the detectors use for opening hours, nights and maintenance windows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000
LOCAL_OFFSET_MS = 8 * HOUR_MS
SHANGHAI = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")


@dataclass(frozen=True, slots=True)
class Preset:
    """A world size and its default fraud rate.

    `fraud_rate`: injected instances per scenario per 10,000 insured persons per simulated day;
    `min_instances`: the floor per scenario for a run (tiny guarantees 3 of every scenario).
    """

    name: str
    persons: int
    institutions: int
    days: int
    cities: int
    fraud_rate: float
    min_instances: int


PRESETS: dict[str, Preset] = {
    # Tiny spans two weeks: stays of 6-10 days and readmissions within 15 days must fit.
    "tiny": Preset(
        "tiny", persons=2_000, institutions=36, days=14, cities=3, fraud_rate=1.5, min_instances=3
    ),
    "small": Preset(
        "small", persons=50_000, institutions=400, days=7, cities=4, fraud_rate=0.1, min_instances=1
    ),
    "city": Preset(
        "city",
        persons=1_500_000,
        institutions=3_000,
        days=7,
        cities=3,
        fraud_rate=0.02,
        min_instances=1,
    ),
}


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulation run. `days == 0` means unbounded (day after day until stopped)."""

    preset: str = "tiny"
    seed: int = 7
    start_ms: int | None = None  # local midnight; default: today - days
    days: int | None = None  # None: the preset's; 0: unbounded
    persons: int | None = None
    institutions: int | None = None
    fraud_rate: float | None = None  # None: the preset's; 0 disables injection
    max_events: int | None = None  # stop after this many events (labels not counted)

    def sizes(self) -> Preset:
        """The preset with this run's overrides applied."""
        base = PRESETS[self.preset]
        return replace(
            base,
            persons=self.persons or base.persons,
            institutions=self.institutions or base.institutions,
            days=base.days if self.days is None else self.days,
            fraud_rate=base.fraud_rate if self.fraud_rate is None else self.fraud_rate,
        )

    def resolved_start_ms(self, today: dt.date | None = None) -> int:
        """The start (local midnight); by default `days` days before today so retention keeps it."""
        if self.start_ms is not None:
            return self.start_ms
        today = today or dt.datetime.now(SHANGHAI).date()
        days = self.sizes().days
        return local_midnight_ms(today - dt.timedelta(days=days))


def local_midnight_ms(day: dt.date) -> int:
    """Epoch ms of 00:00 Asia/Shanghai on a date."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).timestamp() * 1000)


def parse_start(text: str, what: str = "--start") -> int:
    """`YYYY-MM-DD` (local midnight) or an ISO date-time (local time unless it has an offset),
    as epoch ms. The one parser of the command line's times; `what` names the option."""
    text = text.strip()
    try:
        if len(text) == 10:
            return local_midnight_ms(dt.date.fromisoformat(text))
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{what} must be YYYY-MM-DD or an ISO date-time, got {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    return int(moment.timestamp() * 1000)


def local_hour(ts_ms: int) -> int:
    return (ts_ms + LOCAL_OFFSET_MS) // HOUR_MS % 24


def local_weekday(ts_ms: int) -> int:
    """Monday 0 ... Sunday 6 (1970-01-01 was a Thursday)."""
    return ((ts_ms + LOCAL_OFFSET_MS) // DAY_MS + 3) % 7


def local_text(ts_ms: int) -> str:
    """`YYYY-MM-DD HH:MM` local, for descriptions."""
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, SHANGHAI)
    return moment.strftime("%Y-%m-%d %H:%M")
