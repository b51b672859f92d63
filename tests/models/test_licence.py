"""licence_lending."""

from __future__ import annotations

from models.detectors import LicenceLending
from tests.models import factories as f


def rx(t: int, doctor: str = f.DOCTOR, **kw) -> dict:
    return f.settlement(t, doctor=doctor, **kw)


class TestNoClockIn:
    def test_prescribing_without_clock_in_fires_at_end_of_day(self) -> None:
        events = [rx(f.at(0, 9)), rx(f.at(0, 10)), rx(f.at(0, 15))]
        _, ds = f.run(LicenceLending(), events, flush=False)
        assert ds.advance(f.at(0, 23, 59)) == []
        alerts = ds.advance(f.at(1))
        assert len(alerts) == 1
        a = alerts[0]
        assert a.entity_type == "doctor" and a.entity_id == f.DOCTOR
        assert a.evidence_event_ids[-1] == events[0]["event_id"]  # the day's first
        assert a.event_time == events[0]["event_time"]
        assert a.explanation == "[licence_lending] 2025-11-17以其身份结算3笔,当日无上岗刷脸打卡记录"
        assert a.amount_at_risk_fen == sum(e["fund_paid_fen"] for e in events)

    def test_clock_in_that_day_is_fine_even_after_the_first_patient(self) -> None:
        events = [f.clock_in(f.at(0, 8)), rx(f.at(0, 9))]
        assert f.run(LicenceLending(), events)[0] == []
        events = [rx(f.at(0, 9)), f.clock_in(f.at(0, 12))]
        assert f.run(LicenceLending(), events)[0] == []

    def test_clock_in_another_day_does_not_count(self) -> None:
        events = [f.clock_in(f.at(-1, 8)), rx(f.at(0, 9))]
        assert len(f.run(LicenceLending(), events)[0]) == 1

    def test_one_alert_per_day(self) -> None:
        events = [rx(f.at(d, 9)) for d in (0, 0, 1)]
        assert len(f.run(LicenceLending(), events)[0]) == 2

    def test_pharmacist_is_checked_too(self) -> None:
        s = f.settlement(f.at(0, 9), institution=f.PHARM, pharmacist=f.PHARMACIST, items=[f.drug()])
        alerts, _ = f.run(LicenceLending(), [s])
        assert [a.entity_type for a in alerts] == ["pharmacist"]
        assert f.run(LicenceLending({"subject_types": ["DOCTOR"]}), [s])[0] == []

    def test_every_working_day_clocked_in_never_fires(self) -> None:
        events = []
        for d in range(5):
            events += [f.clock_in(f.at(d, 7, 50)), rx(f.at(d, 9)), rx(f.at(d, 16))]
        assert f.run(LicenceLending(), events)[0] == []


class TestTwoPlaces:
    def test_clock_ins_at_two_institutions_within_an_hour_fire(self) -> None:
        a, b = f.clock_in(f.at(0, 8)), f.clock_in(f.at(0, 8, 40), institution=f.HOSP2)
        alerts, _ = f.run(LicenceLending(), [a, b])
        assert len(alerts) == 1
        al = alerts[0]
        assert al.evidence_event_ids == [a["event_id"], b["event_id"]]
        assert al.explanation == (
            f"[licence_lending] 40分钟内先后在{f.HOSP}和{f.HOSP2}两家机构上岗打卡(阈值60分钟)"
        )

    def test_more_than_an_hour_apart_is_fine(self) -> None:
        events = [f.clock_in(f.at(0, 8)), f.clock_in(f.at(0, 9, 1), institution=f.HOSP2)]
        assert f.run(LicenceLending(), events)[0] == []

    def test_same_institution_twice_is_fine(self) -> None:
        events = [f.clock_in(f.at(0, 8)), f.clock_in(f.at(0, 8, 5))]
        assert f.run(LicenceLending(), events)[0] == []

    def test_arrival_order_does_not_change_the_id(self) -> None:
        a, b = f.clock_in(f.at(0, 8)), f.clock_in(f.at(0, 8, 5), institution=f.HOSP2)
        assert [x.alert_id for x in f.run(LicenceLending(), [a, b])[0]] == [
            x.alert_id for x in f.run(LicenceLending(), [b, a])[0]
        ]
