"""Online models on settlements and doctors: settlement_anomaly and doctor_profile."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from models.online.doctor_profile import DoctorProfile
from models.online.settlement_score import MODEL_KEY, SettlementAnomaly
from models.runner import DetectorSet, InMemoryStateStore
from tests.models import factories as f

SMALL = {"warmup_events": 64, "window_size": 32, "min_calibration": 30}


def ordinary(n: int, seed: int = 3, start: float = 0) -> list[dict[str, Any]]:
    """Pharmacy purchases of 30-60 yuan by 60 people, a few minutes apart, 8:00-20:00."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = f.at(start + i // 40, 8 + (i % 40) * 0.3)
        price = rng.randint(3000, 6000)
        out.append(
            f.settlement(
                t,
                person=f"RY{rng.randrange(60):04d}",
                institution=rng.choice([f.PHARM, f.PHARM2, f.PHARM3]),
                items=[f.drug(unit_price_fen=price)],
            )
        )
    return out


def outlier(t: int) -> dict[str, Any]:
    items = [f.drug(unit_price_fen=400_000, quantity=3), f.exam(), f.exam("250403002")]
    return f.settlement(t, person="RY9999", institution=f.PHARM, items=items)


def anomaly_alerts(events: list[dict[str, Any]], store: Any = None, **params: Any) -> list:
    alerts, _ = f.run(SettlementAnomaly({**SMALL, **params}), events, store=store)
    return alerts


def test_an_outlier_after_warm_up_is_flagged_with_the_features_that_drove_it() -> None:
    events = [*ordinary(300), outlier(f.at(8, 21))]
    alerts = anomaly_alerts(events)
    assert [a.evidence_event_ids[-1] for a in alerts][-1] == events[-1]["event_id"]
    a = alerts[-1]
    assert a.detector_id == "settlement_anomaly" and a.kind == "suspicious"
    assert a.entity_type == "person" and a.entity_id == "RY9999"
    assert "分位" in a.explanation and "主要因素:结算金额" in a.explanation
    assert a.amount_at_risk_fen == events[-1]["fund_paid_fen"]
    assert len(alerts) <= 3  # the ordinary purchases stay under the 99.5 % quantile


def test_no_alert_during_warm_up() -> None:
    events = [*ordinary(40), outlier(f.at(2, 21))]
    assert anomaly_alerts(events) == []
    assert anomaly_alerts(events, warmup_events=10_000) == []


def test_same_events_give_the_same_scores_and_alerts() -> None:
    events = [*ordinary(300), outlier(f.at(8, 21))]
    first, second = anomaly_alerts(events), anomaly_alerts(events)
    assert first and [a.to_record() for a in first] == [a.to_record() for a in second]
    other_seed = anomaly_alerts(events, seed=7)
    assert other_seed[-1].evidence_event_ids[-1] == events[-1]["event_id"]


def test_model_state_is_plain_json_and_a_restored_model_continues_identically() -> None:
    events = [*ordinary(300), outlier(f.at(8, 21))]
    plain = anomaly_alerts(events)
    assert [a.to_record() for a in anomaly_alerts(events, store=f.JsonStateStore())] == [
        a.to_record() for a in plain
    ]
    for cut in (100, 200):
        det = SettlementAnomaly(SMALL)
        first = DetectorSet([det], now_ms=lambda: 0)
        alerts = first.process_batch(events[:cut])
        store = InMemoryStateStore()
        for did, key, state in first.store.items():  # type: ignore[attr-defined]
            store.put(did, key, json.loads(json.dumps(state)))
        assert store.get(det.id, MODEL_KEY)["v"] == det.model_version  # type: ignore[index]
        again = DetectorSet([SettlementAnomaly(SMALL)], store=store, now_ms=lambda: 0)
        again.reindex(store.items())
        again.advance(first.watermark_ms)
        alerts += again.process_batch(events[cut:]) + again.flush()
        assert [a.alert_id for a in alerts] == [a.alert_id for a in plain]


def test_a_model_of_another_version_is_discarded_and_warms_up_again() -> None:
    events = ordinary(300)
    _, ds = f.run(SettlementAnomaly(SMALL), events, flush=False)
    state = ds.store.get("settlement_anomaly", MODEL_KEY)
    assert state is not None and state["k"] == 300
    det = SettlementAnomaly({**SMALL, "n_trees": 5})
    alerts, new = det.process(outlier(f.at(8, 21)), state, 0, MODEL_KEY)
    assert not alerts and new is not None and new["k"] == 1 and new["v"] != state["v"]


def test_process_updates_the_state_in_place_like_its_json_copy() -> None:
    """In-place learning: the state given is the state returned, and a JSON copy of it (what a
    restored worker holds) ends up the same with the same alerts."""
    det = SettlementAnomaly(SMALL)
    _, ds = f.run(det, ordinary(300), flush=False)
    state = ds.store.get(det.id, MODEL_KEY)
    copy = json.loads(json.dumps(state))
    event = outlier(f.at(8, 21))
    alerts, new = det.process(event, state, 0, MODEL_KEY)
    copy_alerts, copy_new = SettlementAnomaly(SMALL).process(event, copy, 0, MODEL_KEY)
    assert new is state and copy_new is copy and new["k"] == 301
    assert json.dumps(new) == json.dumps(copy_new)
    assert [a.to_record() for a in alerts] == [a.to_record() for a in copy_alerts]
    doctors = DoctorProfile()
    events = doctors_day((10, 30000))
    _, ds = f.run(doctors, events[:-1], flush=False)
    state = ds.store.get(doctors.id, "HOSPITAL|2")
    copy = json.loads(json.dumps(state))
    assert doctors.process(events[-1], state, 0, "HOSPITAL|2")[1] is state
    doctors.process(events[-1], copy, 0, "HOSPITAL|2")
    assert json.dumps(state) == json.dumps(copy)


def test_states_are_bounded_and_dropped_when_idle() -> None:
    _, ds = f.run(SettlementAnomaly(SMALL), ordinary(200), flush=False)
    assert ds.store.count() == 61  # type: ignore[attr-defined]  # 60 people and the model
    ds.advance(f.at(60))
    assert ds.store.count() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("make", [lambda: SettlementAnomaly(SMALL), DoctorProfile])
def test_odd_but_valid_events_never_raise(make: Any) -> None:
    odd = ordinary(80)
    for d in range(3):
        odd.append(f.settlement(f.at(d, 22), items=[]))
        odd.append(f.settlement(f.at(d, 22, 5), items=[f.service(unit_price_fen=0)]))
        odd.append(f.settlement(f.at(d, 22, 9), doctor=None, items=[f.exam()]))
    odd.append(f.reversal(odd[0], f.at(0, 23)))
    f.run(make(), f.by_time(odd))


# --- doctor_profile -------------------------------------------------------------------------


def doctors_day(first: tuple[int, int], others: int = 3, visits: int = 10) -> list[dict]:
    """One day at a level-2 hospital: doctor 0 with (visits, price), `others` doctors with
    `visits` settlements of 100 yuan."""
    out = []
    for d in range(others + 1):
        n, price = first if d == 0 else (visits, 10000)
        for i in range(n):
            out.append(
                f.settlement(
                    f.at(0, 8, i),
                    doctor=f"D44030500010{d}",
                    items=[f.service(unit_price_fen=price)],
                )
            )
    return f.by_time(out)


@pytest.mark.parametrize(
    ("first", "level"),
    [((10, 10000), 0), ((10, 14000), 0), ((10, 14999), 0), ((10, 15000), 2), ((10, 20000), 3),
     ((15, 10000), 2), ((14, 10000), 0), ((20, 10000), 3)],
)  # fmt: skip
def test_doctor_profile_fires_from_level_2(first: tuple[int, int], level: int) -> None:
    alerts, _ = f.run(DoctorProfile(), doctors_day(first))
    if not level:
        assert alerts == []
        return
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.entity_type, a.entity_id, a.severity) == ("doctor", "D440305000100", level)
    assert a.explanation.startswith("[doctor_profile] 截至2025-11-17近1日医师")


def test_doctor_profile_levels_1_with_min_level_1() -> None:
    alerts, _ = f.run(DoctorProfile({"min_level": 1}), doctors_day((10, 12000)))
    assert [a.severity for a in alerts] == [1]


def test_doctor_profile_needs_enough_visits_and_peers() -> None:
    assert f.run(DoctorProfile(), doctors_day((7, 90000)))[0] == []  # < 8 that day
    assert f.run(DoctorProfile(), doctors_day((10, 90000), others=2))[0] == []  # 2 peers


def test_doctor_profile_state_round_trips_through_json() -> None:
    events = doctors_day((10, 30000)) + [
        e | {"event_time": e["event_time"] + f.DAY, "event_id": e["event_id"] + "b"}
        for e in doctors_day((10, 30000))
    ]
    plain, _ = f.run(DoctorProfile(), events)
    js, _ = f.run(DoctorProfile(), events, store=f.JsonStateStore())
    assert plain and [a.to_record() for a in js] == [a.to_record() for a in plain]


def test_a_re_delivered_settlement_is_neither_counted_nor_learnt_again() -> None:
    events = [*ordinary(300), outlier(f.at(8, 21))]
    twice = f.by_time(events + [dict(e) for e in events[::4]])
    once = anomaly_alerts(events)
    again = anomaly_alerts(twice)
    assert once and [a.to_record() for a in again] == [a.to_record() for a in once]
    doctors = doctors_day((10, 30000))
    plain, _ = f.run(DoctorProfile(), doctors)
    copies, _ = f.run(DoctorProfile(), f.by_time(doctors + [dict(e) for e in doctors[::2]]))
    assert plain and [a.to_record() for a in copies] == [a.to_record() for a in plain]
