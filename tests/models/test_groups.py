"""pharmacy_basket_ring and group_visit."""

from __future__ import annotations

from models.detectors import GroupVisit, PharmacyBasketRing
from tests.models import factories as f

BASKET = [f.drug(f.DRUG_A, quantity=2), f.drug(f.DRUG_B), f.drug(f.DRUG_C)]


def buyers(
    n: int,
    *,
    every_min: float = 30,
    basket: list | None = None,
    pharmacy: str = f.PHARM,
    same_person: bool = False,
) -> list[dict]:
    return [
        f.settlement(
            f.at(0, 9, every_min * k),
            person="RY0" if same_person else f"RY{k}",
            institution=pharmacy,
            items=basket or BASKET,
        )
        for k in range(n)
    ]


class TestPharmacyBasketRing:
    def test_six_persons_one_basket_fire(self) -> None:
        events = buyers(6)
        alerts, _ = f.run(PharmacyBasketRing(), events)
        assert len(alerts) == 1
        a = alerts[0]
        assert a.explanation == (
            "[pharmacy_basket_ring] 24小时内6名不同参保人在同一药店购买相同的3项药品组合(阈值6)"
        )
        assert a.evidence_event_ids == [e["event_id"] for e in events]
        assert a.entity_id == f.PHARM

    def test_five_persons_do_not(self) -> None:
        assert f.run(PharmacyBasketRing(), buyers(5))[0] == []

    def test_one_person_six_times_is_not_a_ring(self) -> None:
        assert f.run(PharmacyBasketRing(), buyers(6, same_person=True))[0] == []

    def test_ten_persons_one_alert(self) -> None:
        alerts, _ = f.run(PharmacyBasketRing(), buyers(10))
        assert len(alerts) == 1

    def test_beyond_24_hours_does_not(self) -> None:
        assert f.run(PharmacyBasketRing(), buyers(6, every_min=300))[0] == []

    def test_quantities_matter_and_small_baskets_are_ignored(self) -> None:
        events = buyers(5)
        events.append(
            f.settlement(
                f.at(0, 12),
                person="RYX",
                institution=f.PHARM,
                items=[f.drug(f.DRUG_A), f.drug(f.DRUG_B), f.drug(f.DRUG_C)],
            )
        )
        assert f.run(PharmacyBasketRing(), events)[0] == []
        two = [f.drug(f.DRUG_A), f.drug(f.DRUG_B)]
        assert f.run(PharmacyBasketRing(), buyers(8, basket=two))[0] == []

    def test_pharmacies_are_apart(self) -> None:
        events = buyers(3) + buyers(3, pharmacy=f.PHARM2)
        assert f.run(PharmacyBasketRing(), f.by_time(events))[0] == []

    def test_counts_stay_consistent_with_the_window(self) -> None:
        _, ds = f.run(PharmacyBasketRing(), buyers(4), flush=False)
        state = ds.store.get("pharmacy_basket_ring", f.PHARM)
        assert sum(state["n"].values()) == len(state["w"]["t"]) == 4
        ds.advance(f.at(2))
        assert ds.store.count() == 0


class TestGroupVisit:
    def group(
        self,
        n: int,
        *,
        every_min: float = 5,
        dx: str = "A09.900",
        codes: tuple[str, ...] = ("110200001", "250101015"),
        who: str = "RY",
    ) -> list[dict]:
        return [
            f.settlement(
                f.at(0, 10, every_min * k),
                person=f"{who}{k}",
                institution=f.CLINIC,
                diagnosis=[dx],
                items=[f.item(c) for c in codes],
            )
            for k in range(n)
        ]

    def test_eight_persons_same_diagnosis_and_items_within_an_hour_fire(self) -> None:
        alerts, _ = f.run(GroupVisit(), self.group(8))
        assert len(alerts) == 1
        a = alerts[0]
        assert a.entity_type == "group" and a.entity_id == f"{f.CLINIC}|A09.900|20251117T10"
        assert "60分钟内8名不同参保人以相同主诊断A09.900" in a.explanation

    def test_seven_do_not(self) -> None:
        assert f.run(GroupVisit(), self.group(7))[0] == []

    def test_spread_over_more_than_an_hour_does_not(self) -> None:
        assert f.run(GroupVisit(), self.group(8, every_min=9))[0] == []  # 63 minutes

    def test_different_diagnoses_or_items_are_different_groups(self) -> None:
        events = self.group(4) + self.group(4, dx="J06.900", who="RZ")
        assert f.run(GroupVisit(), f.by_time(events))[0] == []
        events = self.group(4) + self.group(4, codes=("110200001",), who="RZ")
        assert f.run(GroupVisit(), f.by_time(events))[0] == []

    def test_item_order_and_quantities_do_not_matter(self) -> None:
        events = self.group(4) + self.group(4, codes=("250101015", "110200001"), who="RZ")
        assert len(f.run(GroupVisit(), f.by_time(events))[0]) == 1
