"""Online models on institutions: cost_growth (own history) and peer_deviation (peer groups)."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from models.alerts import Alert
from models.online.common import peer_level
from models.online.institution_series import CostGrowth
from models.online.peers import PeerDeviation
from models.runner import DetectorSet, InMemoryStateStore
from tests.models import factories as f

CLINIC = "H440305000010"


def visit(t: int, amount: int, institution: str = CLINIC, **kw: Any) -> dict[str, Any]:
    return f.settlement(t, institution=institution, items=[f.service(unit_price_fen=amount)], **kw)


def series(days: int, per_day: dict[int, int] | None = None, *, seed: int = 1,
           scale: dict[int, float] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """A clinic with a weekly rhythm: 8 settlements on weekdays, 3 at weekends, ~50 yuan each,
    at random daytime hours; `per_day` overrides a day's count, `scale` its amounts."""
    rng = random.Random(seed)
    out = []
    for d in range(days):
        n = (per_day or {}).get(d, 8 if d % 7 < 5 else 3)
        for _ in range(n):
            amount = int(rng.uniform(3000, 7000) * (scale or {}).get(d, 1.0))
            out.append(visit(f.at(d, rng.uniform(8, 18)), amount))
    return f.by_time(out)


def cost_alerts(events: list[dict[str, Any]], **params: Any) -> list[Alert]:
    alerts, _ = f.run(CostGrowth(params or None), events)
    return alerts


# --- cost_growth ----------------------------------------------------------------------------


def test_a_normal_seasonal_series_raises_nothing() -> None:
    for seed in range(5):
        assert cost_alerts(series(42, seed=seed)) == []


def test_a_planted_spike_is_found_on_its_day() -> None:
    alerts = cost_alerts(series(28, {16: 30}))
    assert len(alerts) == 1
    a = alerts[0]
    assert a.detector_id == "cost_growth" and a.kind == "suspicious"
    assert a.entity_id == CLINIC and a.severity >= 2
    assert "2025-12-03日结算笔数30笔" in a.explanation and "单日突增" in a.explanation
    assert f.at(16) <= a.event_time < f.at(17)


def test_a_planted_level_shift_is_found_within_days_of_its_start() -> None:
    """From day 21 on: 1.6 x the visits at 1.3 x the cost: no single day is a spike."""
    counts = {d: round((8 if d % 7 < 5 else 3) * 1.6) for d in range(21, 35)}
    events = series(35, counts, scale=dict.fromkeys(range(21, 35), 1.3))
    alerts = cost_alerts(events)
    assert alerts, "level shift missed"
    a = alerts[0]
    assert f.at(21) <= a.event_time < f.at(25)
    shifted = {e["event_id"] for e in events if e["event_time"] >= f.at(21)}
    assert set(a.evidence_event_ids) <= shifted
    # one alert per cooldown (7 days) while the shift lasts and the baseline catches up
    assert all(b.event_time - a.event_time >= 7 * f.DAY for a, b in itertools.pairwise(alerts))


def test_warm_up_no_alert_before_five_days_of_history() -> None:
    assert cost_alerts(series(4, {3: 60})) == []
    assert len(cost_alerts(series(7, {5: 60}))) == 1


def test_same_events_give_the_same_alerts() -> None:
    events = series(28, {16: 30})
    assert [a.to_record() for a in cost_alerts(events)] == [
        a.to_record() for a in cost_alerts(events)
    ]


# --- state: JSON, restore, idle, odd events -------------------------------------------------


def run_split(detector: Any, events: list[dict[str, Any]], cut: int) -> list[Alert]:
    """Run to `cut`, JSON round-trip every state into a new store and runner, run the rest."""
    first = DetectorSet([detector], now_ms=lambda: 0)
    alerts = first.process_batch(events[:cut])
    store = InMemoryStateStore()
    for did, key, state in first.store.items():  # type: ignore[attr-defined]
        store.put(did, key, json.loads(json.dumps(state)))
    second = DetectorSet([detector], store=store, now_ms=lambda: 0)
    second.reindex(store.items())
    second.advance(first.watermark_ms)
    alerts += second.process_batch(events[cut:]) + second.flush()
    return alerts


@pytest.mark.parametrize("make", [CostGrowth, PeerDeviation], ids=lambda c: c.__name__)
def test_state_round_trips_through_json_and_a_restored_detector_continues(make: Any) -> None:
    events = series(28, {16: 30}) + peer_world(3.0)
    events = f.by_time(events)
    plain, _ = f.run(make(), events)
    js, _ = f.run(make(), events, store=f.JsonStateStore())
    assert plain and [a.to_record() for a in js] == [a.to_record() for a in plain]
    for cut in (len(events) // 3, len(events) // 2):
        split = run_split(make(), events, cut)
        assert [a.alert_id for a in split] == [a.alert_id for a in plain]


@pytest.mark.parametrize("make", [CostGrowth, PeerDeviation], ids=lambda c: c.__name__)
def test_state_is_dropped_once_the_entity_is_idle(make: Any) -> None:
    _, ds = f.run(make(), series(10) + peer_world(1.0), flush=False)
    assert ds.store.count() > 0  # type: ignore[attr-defined]
    ds.advance(f.at(60))
    assert ds.store.count() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("make", [CostGrowth, PeerDeviation], ids=lambda c: c.__name__)
def test_odd_but_valid_events_never_raise(make: Any) -> None:
    odd = []
    for d in range(10):
        odd.append(f.settlement(f.at(d, 9), institution=CLINIC, items=[]))
        odd.append(visit(f.at(d, 10), 0, fund_ratio=0.0))
        odd.append(visit(f.at(d, 11), 0, institution=f.PHARM))
        odd.append(visit(f.at(d, 11), 0, institution=f.PHARM2))
    original = visit(f.at(3, 12), 5000)
    odd += [original, f.reversal(original, f.at(3, 13))]
    f.run(make(), f.by_time(odd))


# --- peer_deviation -------------------------------------------------------------------------


def peer_world(ratio: float, days: int = 1, visits: int = 6) -> list[dict[str, Any]]:
    """Three pharmacies of one city: two bill 100.00 yuan per visit, the first `ratio` times."""
    out = []
    for d in range(days):
        for k, (inst, price) in enumerate(
            ((f.PHARM, round(10000 * ratio)), (f.PHARM2, 10000), (f.PHARM3, 10000))
        ):
            for i in range(visits):
                out.append(visit(f.at(d, 9 + k, i), price, institution=inst))
    return f.by_time(out)


@pytest.mark.parametrize(
    ("ratio", "level"),
    [(1.1999, 0), (1.2, 1), (1.4999, 1), (1.5, 2), (1.9999, 2), (2.0, 3), (3.5, 3)],
)
def test_peer_levels_at_the_warning_lines(ratio: float, level: int) -> None:
    assert peer_level(ratio) == level
    alerts, _ = f.run(PeerDeviation({"min_level": 1}), peer_world(ratio))
    if level == 0:
        assert alerts == []
        return
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.entity_id, a.severity, a.kind) == (f.PHARM, level, "suspicious")
    assert f"偏离+{(ratio - 1) * 100:.0f}%" in a.explanation
    assert ("一级预警", "二级预警", "三级预警")[level - 1] in a.explanation
    assert a.evidence_event_ids[-1] == f"peer_deviation:{f.PHARM}:2025-11-17"


def test_peer_deviation_alerts_from_level_2_by_default() -> None:
    """Level 1 (+20 %) is a sensitive line: by default only levels 2 and 3 raise alerts."""
    assert f.run(PeerDeviation(), peer_world(1.4999))[0] == []
    assert [a.severity for a in f.run(PeerDeviation(), peer_world(1.5))[0]] == [2]


def test_peer_deviation_needs_enough_visits_and_peers() -> None:
    assert f.run(PeerDeviation(), peer_world(3.0, visits=4))[0] == []  # < 5 visits each
    two = [e for e in peer_world(3.0) if e["institution_id"] != f.PHARM3]
    assert f.run(PeerDeviation(), two)[0] == []  # one peer only


def test_peer_deviation_alerts_again_only_when_the_level_rises() -> None:
    events = peer_world(1.3, days=3)
    late = [visit(f.at(3, 9, i), 40000, institution=f.PHARM) for i in range(6)]
    late += [visit(f.at(3, 10, i), 10000, institution=f.PHARM2) for i in range(6)]
    alerts, _ = f.run(PeerDeviation({"min_level": 1}), f.by_time(events + late))
    assert [a.severity for a in alerts] == [1, 2]  # 7-day window: (18 x 130 + 6 x 400) / 24


def test_peer_deviation_gives_the_same_alerts_when_many_days_close_at_once() -> None:
    """A stage whose watermark waited for a slow partition closes several days in one call:
    the cooldown is counted per judged day, so the alerts are those of a day-by-day run."""
    events = peer_world(2.5, days=20)
    daily, _ = f.run(PeerDeviation(), events)
    # level 3 every day: again once each cooldown (7 days) has passed
    assert [a.evidence_event_ids[-1][-10:] for a in daily] == [
        "2025-11-17", "2025-11-24", "2025-12-01",
    ]  # fmt: skip
    ds = DetectorSet([PeerDeviation()], store=InMemoryStateStore(), external_watermark=True)
    at_once = ds.process_batch(events) + ds.advance(events[-1]["event_time"] + 2 * f.DAY)
    assert [(a.alert_id, a.severity) for a in at_once] == [(a.alert_id, a.severity) for a in daily]


def test_peers_are_grouped_by_city_type_and_level() -> None:
    det = PeerDeviation()
    keys = {det.keys(visit(0, 100, institution=i))[0] for i in (f.PHARM, f.PHARM2, CLINIC)}
    assert keys == {"4403|PHARMACY|0", "4403|HOSPITAL|2"}
    assert det.keys(f.reversal(visit(0, 100), 60_000)) == []


def test_a_late_event_of_a_day_already_scored_is_left_out() -> None:
    det = CostGrowth()
    first = visit(f.at(0, 9), 5000)
    _, state = det.process(first, None, 0, CLINIC)
    late = visit(f.at(0, 10), 5000)
    _, same = det.process(late, state, f.at(3), CLINIC)  # day 0 not scored yet: counted
    assert same is not None and same["o"][str((f.at(0) + 8 * f.HOUR) // f.DAY)][0] == 2
    _, scored = det.expire(same, f.at(1), CLINIC)
    assert scored is not None
    _, after = det.process(visit(f.at(0, 11), 5000), scored, f.at(1), CLINIC)
    assert after == scored


@pytest.mark.parametrize("make", [CostGrowth, PeerDeviation], ids=lambda c: c.__name__)
def test_a_re_delivered_settlement_is_counted_once(make: Any) -> None:
    """A kill between the sends and the state write forwards records to the repartition topic
    again: the copies carry the same event id."""
    events = series(28, {16: 30}) + peer_world(3.0)
    twice = f.by_time(events + [dict(e) for e in events[::3]])
    once, _ = f.run(make(), f.by_time(events))
    again, _ = f.run(make(), twice)
    assert once and [a.to_record() for a in again] == [a.to_record() for a in once]
