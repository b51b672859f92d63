"""hanging_bed and split_hospitalization."""

from __future__ import annotations

from models.detectors import HangingBed, SplitHospitalization
from tests.models import factories as f


def stay(
    adm: float, dis: float, *, inst: str = f.HOSP, dx: str = "I63.900", person: str = "RY1"
) -> dict:
    return f.settlement(
        f.at(dis, 10),
        person=person,
        institution=inst,
        visit_type="INPATIENT",
        admission=f.at(adm, 10),
        discharge=f.at(dis, 10),
        diagnosis=[dx],
    )


def bedside(days: list[float], *, inst: str = f.HOSP, hour: float = 9) -> list[dict]:
    return [f.face(f.at(d, hour), "RY1", purpose="BEDSIDE", institution=inst) for d in days]


class TestHangingBed:
    def test_daily_bedside_checks_are_fine(self) -> None:
        events = [*bedside([1, 2, 3, 4, 5, 6]), stay(0, 6)]
        assert f.run(HangingBed(), events)[0] == []

    def test_three_days_without_checks_fire(self) -> None:
        checks = bedside([1, 2, 5, 6])
        events = [*checks, stay(0, 7)]
        alerts, ds = f.run(HangingBed(), events)
        assert len(alerts) == 1
        a = alerts[0]
        assert a.explanation == "[hanging_bed] 住院7.0天期间最长3.0天无床旁刷脸核验(阈值2天)"
        assert a.evidence_event_ids == [
            checks[1]["event_id"],
            checks[2]["event_id"],
            events[-1]["event_id"],
        ]
        assert a.amount_at_risk_fen == events[-1]["fund_paid_fen"]
        assert ds.store.count() == 0

    def test_a_two_day_gap_is_not_over_the_threshold(self) -> None:
        events = [*bedside([1, 3, 5]), stay(0, 6)]
        events[-1] = f.settlement(
            f.at(6, 9),
            person="RY1",
            visit_type="INPATIENT",
            admission=f.at(0, 10),
            discharge=f.at(6, 9),
        )
        # gaps: adm 0d10h→1d9h, 2d, 2d, 5d9h→6d9h
        assert f.run(HangingBed(), events)[0] == []

    def test_checks_at_another_institution_do_not_count(self) -> None:
        events = [*bedside([1, 2, 3, 4, 5, 6], inst=f.HOSP2), stay(0, 6)]
        assert len(f.run(HangingBed(), events)[0]) == 1

    def test_pharmacy_purchase_elsewhere_mid_stay_fires(self) -> None:
        buy = f.settlement(f.at(3, 15), person="RY1", institution=f.PHARM, items=[f.drug()])
        events = f.by_time([*bedside([1, 2, 3, 4, 5]), buy, stay(0, 6)])
        alerts, _ = f.run(HangingBed(), events)
        assert len(alerts) == 1
        assert "住院期间在其他机构有1笔门诊/购药结算" in alerts[0].explanation
        assert buy["event_id"] in alerts[0].evidence_event_ids

    def test_purchase_at_the_same_hospital_or_after_discharge_is_fine(self) -> None:
        same = f.settlement(f.at(3, 15), person="RY1", institution=f.HOSP)
        after = f.settlement(f.at(6, 15), person="RY1", institution=f.PHARM, items=[f.drug()])
        events = f.by_time([*bedside([1, 2, 3, 4, 5]), same, stay(0, 6), after])
        assert f.run(HangingBed(), events)[0] == []

    def test_bedside_check_arriving_a_little_late_still_counts(self) -> None:
        checks = bedside([1, 2, 3, 4, 5])
        last = f.face(f.at(5, 23), "RY1", purpose="BEDSIDE")
        s = f.settlement(
            f.at(7, 10),
            person="RY1",
            visit_type="INPATIENT",
            admission=f.at(0, 10),
            discharge=f.at(7, 8),
        )
        late_check = f.face(f.at(7, 7), "RY1", purpose="BEDSIDE")
        # the discharge settlement arrives before the check of the discharge morning
        events = [*checks, last, s, late_check]
        assert f.run(HangingBed(), events)[0] == []

    def test_persons_never_in_hospital_keep_no_state(self) -> None:
        events = [
            f.settlement(f.at(0, 9), person="RY9"),
            f.settlement(f.at(0, 10), person="RY9", institution=f.PHARM),
        ]
        _, ds = f.run(HangingBed(), events, flush=False)
        assert ds.store.count() == 0


class TestSplitHospitalization:
    def test_readmission_within_fifteen_days_same_place_and_diagnosis(self) -> None:
        first, second = stay(0, 5), stay(8, 12)
        alerts, _ = f.run(SplitHospitalization(), [first, second])
        assert len(alerts) == 1
        a = alerts[0]
        assert a.evidence_event_ids == [first["event_id"], second["event_id"]]
        assert a.explanation == (
            "[split_hospitalization] 出院后3.0天再次入住同一机构,主诊断相同(I63.900)(阈值15天)"
        )
        assert a.severity == 3 and a.amount_at_risk_fen == second["fund_paid_fen"]

    def test_fifteen_days_fires_sixteen_does_not(self) -> None:
        assert len(f.run(SplitHospitalization(), [stay(0, 5), stay(20, 25)])[0]) == 1
        assert f.run(SplitHospitalization(), [stay(0, 5), stay(21, 25)])[0] == []

    def test_elsewhere_or_other_diagnosis_is_fine(self) -> None:
        assert f.run(SplitHospitalization(), [stay(0, 5), stay(8, 12, inst=f.HOSP2)])[0] == []
        assert f.run(SplitHospitalization(), [stay(0, 5), stay(8, 12, dx="J18.900")])[0] == []
        assert f.run(SplitHospitalization(), [stay(0, 5), stay(8, 12, person="RY2")])[0] == []

    def test_late_first_stay_flags_the_readmission_with_the_same_id(self) -> None:
        first, second = stay(0, 5), stay(8, 12)
        forward, _ = f.run(SplitHospitalization(), [first, second])
        backward, _ = f.run(SplitHospitalization(), [second, first])
        assert [a.alert_id for a in forward] == [a.alert_id for a in backward]

    def test_each_readmission_once(self) -> None:
        events = [stay(0, 5), stay(8, 12), stay(15, 20)]
        assert len(f.run(SplitHospitalization(), events)[0]) == 2
