"""duplicate_billing, split_charging, maintenance_window, odd_hour_sales."""

from __future__ import annotations

import pytest

from models.detectors import DuplicateBilling, MaintenanceWindow, OddHourSales, SplitCharging
from models.detectors.billing import load_packages
from tests.models import factories as f

LIVER = ["250305002", "250305003", "250305004", "250305005"]


class TestDuplicateBilling:
    def first(self, **kw) -> dict:
        return f.settlement(f.at(0, 9), person="RY1", items=[f.exam(), f.service()], **kw)

    def test_a_copy_within_ten_minutes_fires(self) -> None:
        s = self.first()
        copy = f.copy_of(s, f.at(0, 9, 8))
        alerts, _ = f.run(DuplicateBilling(), [s, copy])
        assert len(alerts) == 1
        a = alerts[0]
        assert a.evidence_event_ids == [s["event_id"], copy["event_id"]]
        assert a.entity_type == "institution" and a.entity_id == f.HOSP
        assert a.amount_at_risk_fen == copy["fund_paid_fen"]
        assert a.explanation.startswith("[duplicate_billing] 8分钟内重复结算")
        assert "时限10分钟" in a.explanation

    def test_exactly_ten_minutes_still_fires_eleven_does_not(self) -> None:
        s = self.first()
        assert len(f.run(DuplicateBilling(), [s, f.copy_of(s, f.at(0, 9, 10))])[0]) == 1
        assert f.run(DuplicateBilling(), [s, f.copy_of(s, f.at(0, 9, 11))])[0] == []

    def test_same_basket_another_day_does_not_fire(self) -> None:
        s = self.first()
        assert f.run(DuplicateBilling(), [s, f.copy_of(s, f.at(1, 9))])[0] == []

    def test_different_quantities_or_total_do_not_fire(self) -> None:
        s = self.first()
        other = f.settlement(
            f.at(0, 9, 2), person="RY1", items=[f.exam(), f.service(unit_price_fen=99)]
        )
        assert f.run(DuplicateBilling(), [s, other])[0] == []

    def test_other_institution_is_another_key(self) -> None:
        s = self.first()
        elsewhere = {**f.copy_of(s, f.at(0, 9, 2)), "institution_id": f.HOSP2}
        assert f.run(DuplicateBilling(), [s, elsewhere])[0] == []

    def test_reversal_then_resettle_is_clean(self) -> None:
        s = self.first()
        events = [s, f.reversal(s, f.at(0, 9, 1)), f.copy_of(s, f.at(0, 9, 2))]
        assert f.run(DuplicateBilling(), events)[0] == []

    def test_every_extra_copy_fires(self) -> None:
        s = self.first()
        events = [s, f.copy_of(s, f.at(0, 9, 1)), f.copy_of(s, f.at(0, 9, 2))]
        assert len(f.run(DuplicateBilling(), events)[0]) == 2


class TestSplitCharging:
    def bill(self, codes: list[str]) -> dict:
        return f.settlement(
            f.at(0, 9), items=[f.item(c, item_type="EXAM", unit_price_fen=2500) for c in codes]
        )

    def test_three_sub_items_fire(self) -> None:
        alerts, _ = f.run(SplitCharging(), [self.bill(LIVER[:3])])
        assert len(alerts) == 1
        a = alerts[0]
        assert "肝功能检查(组合)(250305001)拆分为3项子项目计费(阈值3)" in a.explanation
        assert a.config_version == "2026.11.1"
        assert a.amount_at_risk_fen == int((7500 - 6000) * 0.7)

    def test_four_sub_items_fire_once(self) -> None:
        alerts, _ = f.run(SplitCharging(), [self.bill(LIVER)])
        assert len(alerts) == 1 and "4项" in alerts[0].explanation

    def test_two_sub_items_do_not(self) -> None:
        assert f.run(SplitCharging(), [self.bill(LIVER[:2])])[0] == []

    def test_the_package_code_itself_does_not(self) -> None:
        assert f.run(SplitCharging(), [self.bill(["250305001"])])[0] == []

    def test_sub_items_of_different_packages_do_not_add_up(self) -> None:
        assert f.run(SplitCharging(), [self.bill(["250305002", "250305003", "250307002"])])[0] == []

    def test_two_split_packages_in_one_alert(self) -> None:
        bill = self.bill([*LIVER[:3], "250307002", "250307003", "250307004"])
        alerts, _ = f.run(SplitCharging(), [bill])
        assert len(alerts) == 1 and "肾功能" in alerts[0].explanation

    def test_rule_library_loads(self) -> None:
        version, packages = load_packages()
        assert version == "2026.11.1" and len(packages) == 4
        assert all(p.min_sub_items == 3 and len(p.sub_items) == 4 for p in packages)


class TestMaintenanceWindow:
    @pytest.mark.parametrize(
        ("day", "hour", "fires"),
        [
            (-1, 1, True),  # Sunday 01:00
            (-1, 3.99, True),  # Sunday 03:59
            (-1, 4, False),  # Sunday 04:00 (end exclusive)
            (-1, 0.99, False),  # Sunday 00:59
            (0, 2, False),  # Monday 02:00
            (-2, 2, False),  # Saturday 02:00
            (6, 2.5, True),  # next Sunday
        ],
    )
    def test_window_bounds(self, day: float, hour: float, fires: bool) -> None:
        alerts, _ = f.run(MaintenanceWindow(), [f.settlement(f.at(day, hour))])
        assert bool(alerts) is fires

    def test_one_alert_per_institution_and_window(self) -> None:
        events = [f.settlement(f.at(-1, 1, 10 + k), person=f"RY{k}") for k in range(3)]
        events.append(f.settlement(f.at(-1, 2), institution=f.HOSP2))
        events.append(f.settlement(f.at(6, 2)))  # next week's window
        alerts, _ = f.run(MaintenanceWindow(), events)
        assert [a.entity_id for a in alerts] == [f.HOSP, f.HOSP2, f.HOSP]
        assert "周日01:00-04:00" in alerts[0].explanation
        assert "2025-11-16 01:10" in alerts[0].explanation

    def test_configured_windows(self) -> None:
        det = MaintenanceWindow({"windows": [[2, "22:00", "23:30"]]})
        assert f.run(det, [f.settlement(f.at(2, 22, 15))])[0]
        assert not f.run(det, [f.settlement(f.at(-1, 2))])[0]
        with pytest.raises(ValueError):
            MaintenanceWindow({"windows": [[2, "23:00", "01:00"]]})


class TestOddHourSales:
    def night(self, hours: list[float], pharmacy: str = f.PHARM) -> list[dict]:
        return [
            f.settlement(f.at(1, h), person=f"RY{k}", institution=pharmacy, items=[f.drug(days=5)])
            for k, h in enumerate(hours)
        ]

    def test_three_small_hour_sales_fire(self) -> None:
        alerts, _ = f.run(OddHourSales(), self.night([0.5, 2, 4.5]))
        assert len(alerts) == 1
        assert alerts[0].explanation == (
            "[odd_hour_sales] 2025-11-18夜间00:00-05:00药店结算3笔(阈值3)"
        )

    def test_two_do_not(self) -> None:
        assert f.run(OddHourSales(), self.night([1, 2]))[0] == []

    def test_daytime_and_evening_sales_do_not_count(self) -> None:
        assert f.run(OddHourSales(), self.night([5, 8, 21.9, 23.5]))[0] == []

    def test_once_per_night_and_pharmacies_apart(self) -> None:
        events = self.night([1, 1.5, 2, 2.5, 3]) + self.night([1, 2], pharmacy=f.PHARM2)
        alerts, _ = f.run(OddHourSales(), f.by_time(events))
        assert len(alerts) == 1 and alerts[0].entity_id == f.PHARM

    def test_hospital_night_settlements_do_not_count(self) -> None:
        events = [f.settlement(f.at(1, h), person=f"RY{h}") for h in (1, 2, 3)]
        assert f.run(OddHourSales(), events)[0] == []
