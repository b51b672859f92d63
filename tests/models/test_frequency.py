"""cross_institution_frequency and card_burst."""

from __future__ import annotations

from models.detectors import CardBurst, CrossInstitutionFrequency
from tests.models import factories as f

PLACES = [f.HOSP, f.HOSP2, f.CLINIC, f.PHARM, f.PHARM2, f.PHARM3, "H440305000020", "H440305000021"]


def visits(n: int, *, every_h: float = 2, person: str = "RY1", start: float = 8) -> list[dict]:
    return [
        f.settlement(f.at(0, start + every_h * k), person=person, institution=PLACES[k])
        for k in range(n)
    ]


class TestCrossInstitutionFrequency:
    def test_fires_when_distinct_institutions_exceed_five(self) -> None:
        events = visits(6)
        alerts, _ = f.run(CrossInstitutionFrequency(), events)
        assert len(alerts) == 1
        a = alerts[0]
        assert a.explanation == "[cross_institution_frequency] 24小时内在6家不同机构就诊(阈值5)"
        assert a.evidence_event_ids == [e["event_id"] for e in events]
        assert a.entity_id == "RY1" and a.severity == 1 and a.score == 6 / 5
        assert a.amount_at_risk_fen == sum(e["fund_paid_fen"] for e in events)

    def test_five_institutions_are_not_enough(self) -> None:
        alerts, _ = f.run(CrossInstitutionFrequency(), visits(5))
        assert alerts == []

    def test_same_institution_twice_counts_once(self) -> None:
        events = [*visits(5), f.settlement(f.at(0, 20), person="RY1", institution=f.HOSP)]
        assert f.run(CrossInstitutionFrequency(), events)[0] == []

    def test_outside_24_hours_does_not_count(self) -> None:
        assert f.run(CrossInstitutionFrequency(), visits(6, every_h=5))[0] == []  # spans 25 h

    def test_one_alert_per_episode_then_again_after_a_window(self) -> None:
        episode = visits(8, every_h=1)
        alerts, _ = f.run(CrossInstitutionFrequency(), episode)
        assert len(alerts) == 1 and alerts[0].evidence_event_ids[-1] == episode[5]["event_id"]
        later = visits(6, start=8 + 48)
        assert len(f.run(CrossInstitutionFrequency(), episode + later)[0]) == 2

    def test_severity_grows_with_the_excess(self) -> None:
        det = CrossInstitutionFrequency({"max_institutions": 3})
        # 4 institutions fire at once (4/3 → 1); with 3 as threshold 6 would be level 3
        assert f.run(det, visits(4))[0][0].severity == 1
        det = CrossInstitutionFrequency({"max_institutions": 2})
        assert f.run(det, visits(3))[0][0].severity == 2  # 3/2 = 1.5

    def test_other_persons_do_not_add_up(self) -> None:
        events = visits(3, person="RY1") + visits(3, person="RY2", start=9)
        assert f.run(CrossInstitutionFrequency(), f.by_time(events))[0] == []

    def test_a_reversal_cancels_its_visit(self) -> None:
        events = visits(6)
        events.insert(5, f.reversal(events[4], f.at(0, 17)))
        assert f.run(CrossInstitutionFrequency(), events)[0] == []

    def test_out_of_order_within_lateness_still_fires(self) -> None:
        events = visits(6, every_h=0.05)  # 6 visits in 15 minutes
        shuffled = [events[k] for k in (2, 0, 5, 1, 4, 3)]
        alerts, _ = f.run(CrossInstitutionFrequency(), shuffled)
        assert len(alerts) == 1 and not alerts[0].late

    def test_state_drops_after_the_window(self) -> None:
        _, ds = f.run(CrossInstitutionFrequency(), visits(3), flush=False)
        assert ds.store.count() == 1
        ds.advance(f.at(1, 14) + 1)
        assert ds.store.count() == 0


class TestCardBurst:
    def burst(self, n: int, gap_min: float = 2, person: str = "RY1") -> list[dict]:
        return [
            f.settlement(
                f.at(0, 14, gap_min * k), person=person, institution=f.PHARM, items=[f.drug(days=3)]
            )
            for k in range(n)
        ]

    def test_fires_at_four_within_ten_minutes(self) -> None:
        alerts, _ = f.run(CardBurst(), self.burst(4))
        assert len(alerts) == 1
        assert alerts[0].explanation == "[card_burst] 10分钟内同一参保人结算4次(阈值4)"
        assert len(alerts[0].evidence_event_ids) == 4

    def test_three_do_not_fire(self) -> None:
        assert f.run(CardBurst(), self.burst(3))[0] == []

    def test_spread_beyond_ten_minutes_does_not_fire(self) -> None:
        assert f.run(CardBurst(), self.burst(4, gap_min=3.5))[0] == []  # 10.5 min

    def test_six_in_a_burst_is_one_alert(self) -> None:
        alerts, _ = f.run(CardBurst(), self.burst(6, gap_min=1))
        assert len(alerts) == 1

    def test_another_card_does_not_count(self) -> None:
        events = self.burst(2) + self.burst(2, person="RY2")
        assert f.run(CardBurst(), f.by_time(events))[0] == []
