"""drug_over_supply, pharmacy_hopping, repeated_exam."""

from __future__ import annotations

from models.detectors import DrugOverSupply, PharmacyHopping, RepeatedExam
from tests.models import factories as f


def purchases(
    days: list[float],
    *,
    group: str = f.GROUP_A,
    supply: int = 30,
    person: str = "RY1",
    places: list[str] | None = None,
) -> list[dict]:
    places = places or [f.HOSP, f.HOSP2, f.CLINIC, f.HOSP, f.HOSP2]
    code = f.DRUG_A if group == f.GROUP_A else f.DRUG_B
    return [
        f.settlement(
            f.at(d, 10),
            person=person,
            institution=places[k % len(places)],
            items=[f.drug(code, group=group, days=supply, unit_price_fen=3000)],
        )
        for k, d in enumerate(days)
    ]


class TestDrugOverSupply:
    def test_fires_over_sixty_days_in_thirty(self) -> None:
        events = purchases([0, 7, 14])
        alerts, _ = f.run(DrugOverSupply(), events)
        assert len(alerts) == 1
        a = alerts[0]
        assert a.explanation == ("[drug_over_supply] 30天内metformin_oral累计开药90天(阈值60天)")
        assert a.evidence_event_ids == [e["event_id"] for e in events]
        fund = sum(e["fund_paid_fen"] for e in events)
        assert a.amount_at_risk_fen == fund * 30 // 90  # the excess third

    def test_exactly_sixty_does_not_fire(self) -> None:
        assert f.run(DrugOverSupply(), purchases([0, 10, 20], supply=20))[0] == []

    def test_chronic_monthly_refills_never_fire(self) -> None:
        days = [0, 26, 60, 86, 112, 146, 172]
        assert f.run(DrugOverSupply(), purchases(days))[0] == []

    def test_other_groups_and_persons_are_separate(self) -> None:
        events = purchases([0, 7]) + purchases([3], group=f.GROUP_B) + purchases([5], person="RY2")
        assert f.run(DrugOverSupply(), f.by_time(events))[0] == []

    def test_two_groups_over_in_one_settlement_give_one_alert(self) -> None:
        both = [f.drug(f.DRUG_A, days=40), f.drug(f.DRUG_B, group=f.GROUP_B, days=40)]
        events = [f.settlement(f.at(d, 10), person="RY1", items=both) for d in (0, 5)]
        alerts, _ = f.run(DrugOverSupply(), events)
        assert len(alerts) == 1
        assert "metformin_oral" in alerts[0].explanation
        assert "valsartan_oral" in alerts[0].explanation

    def test_a_reversal_removes_its_supply(self) -> None:
        events = purchases([0, 7, 14])
        events.insert(2, f.reversal(events[1], f.at(7, 11)))
        assert f.run(DrugOverSupply(), events)[0] == []

    def test_five_purchases_alert_once(self) -> None:
        assert len(f.run(DrugOverSupply(), purchases([0, 4, 8, 12, 16]))[0]) == 1


class TestPharmacyHopping:
    def hops(self, days: list[float], places: list[str], person: str = "RY1") -> list[dict]:
        return purchases(days, group=f.GROUP_B, supply=7, person=person, places=places)

    def test_fires_at_three_pharmacies_in_seven_days(self) -> None:
        alerts, _ = f.run(PharmacyHopping(), self.hops([0, 2, 4], [f.PHARM, f.PHARM2, f.PHARM3]))
        assert len(alerts) == 1
        assert alerts[0].explanation == (
            "[pharmacy_hopping] 7天内在3家不同药店购买valsartan_oral(阈值3)"
        )

    def test_two_pharmacies_do_not(self) -> None:
        assert f.run(PharmacyHopping(), self.hops([0, 2, 4], [f.PHARM, f.PHARM2]))[0] == []

    def test_usual_pharmacy_never_fires(self) -> None:
        assert f.run(PharmacyHopping(), self.hops(list(range(10)), [f.PHARM]))[0] == []

    def test_beyond_seven_days_does_not(self) -> None:
        places = [f.PHARM, f.PHARM2, f.PHARM3]
        assert f.run(PharmacyHopping(), self.hops([0, 4, 8], places))[0] == []

    def test_hospitals_are_not_pharmacies(self) -> None:
        events = self.hops([0, 2, 4], [f.PHARM, f.PHARM2, f.HOSP])
        assert f.run(PharmacyHopping(), events)[0] == []


class TestRepeatedExam:
    def exams(self, days: list[float], visit_type: str = "OUTPATIENT") -> list[dict]:
        extra = {"admission": f.at(0), "discharge": f.at(9)} if visit_type == "INPATIENT" else {}
        return [
            f.settlement(
                f.at(d, 10), person="RY1", visit_type=visit_type, items=[f.exam()], **extra
            )
            for d in days
        ]

    def test_fires_at_three_in_seven_days(self) -> None:
        alerts, _ = f.run(RepeatedExam(), self.exams([0, 2, 4]))
        assert len(alerts) == 1
        assert alerts[0].explanation == (
            "[repeated_exam] 7天内门诊重复检查250403001(CT检查)3次(阈值3)"
        )

    def test_twice_is_not_enough(self) -> None:
        assert f.run(RepeatedExam(), self.exams([0, 2]))[0] == []

    def test_outside_the_window(self) -> None:
        assert f.run(RepeatedExam(), self.exams([0, 4, 8]))[0] == []

    def test_inpatient_labs_are_not_counted(self) -> None:
        assert f.run(RepeatedExam(), self.exams([1, 2, 3, 4], visit_type="INPATIENT"))[0] == []
