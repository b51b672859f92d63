"""drug_swap and trace_code_resale."""

from __future__ import annotations

from models.detectors import DrugSwap, TraceCodeResale
from tests.models import factories as f

CODE = f.trace_code("8123456", 1)


class TestDrugSwap:
    def sale(self, t: int = f.at(0, 15), drugs: tuple[str, ...] = (f.DRUG_A,)) -> dict:
        return f.settlement(t, institution=f.PHARM, items=[f.drug(d) for d in drugs])

    def test_scanned_box_of_another_drug_fires_at_once(self) -> None:
        s = self.sale()
        sc = f.scan(
            f.at(0, 15, 1),
            f.trace_code("8234567", 1),
            drug_code=f.DRUG_B,
            settlement_id=s["event_id"],
        )
        alerts, _ = f.run(DrugSwap(), [s, sc], flush=False)
        assert len(alerts) == 1
        a = alerts[0]
        assert a.evidence_event_ids == [sc["event_id"], s["event_id"]]
        assert a.entity_type == "institution" and a.entity_id == f.PHARM
        assert a.amount_at_risk_fen == s["fund_paid_fen"]
        assert f.DRUG_B in a.explanation and f.DRUG_A in a.explanation

    def test_scan_arriving_first_gives_the_same_alert(self) -> None:
        s = self.sale()
        sc = f.scan(
            f.at(0, 14, 59),
            f.trace_code("8234567", 1),
            drug_code=f.DRUG_B,
            settlement_id=s["event_id"],
        )
        first, _ = f.run(DrugSwap(), [sc, s])
        second, _ = f.run(DrugSwap(), [s, sc])
        assert [a.alert_id for a in first] == [a.alert_id for a in second]

    def test_every_box_scanned_is_clean(self) -> None:
        s = self.sale(drugs=(f.DRUG_A, f.DRUG_B))
        scans = [
            f.scan(f.at(0, 15, 1), CODE, settlement_id=s["event_id"]),
            f.scan(
                f.at(0, 15, 1),
                f.trace_code("8234567", 2),
                drug_code=f.DRUG_B,
                settlement_id=s["event_id"],
            ),
        ]
        assert f.run(DrugSwap(), [s, *scans])[0] == []

    def test_unscanned_drug_fires_by_timer_after_sixty_minutes(self) -> None:
        s = self.sale(drugs=(f.DRUG_A, f.DRUG_B))
        scanned = f.scan(f.at(0, 15, 1), CODE, settlement_id=s["event_id"])
        _, ds = f.run(DrugSwap(), [s, scanned], flush=False)
        assert ds.advance(f.at(0, 15, 59)) == []
        alerts = ds.advance(f.at(0, 16))
        assert len(alerts) == 1
        a = alerts[0]
        assert a.evidence_event_ids == [s["event_id"]] and a.event_time == s["event_time"]
        assert a.explanation == f"[drug_swap] 结算药品{f.DRUG_B}在结算后60分钟内无销售扫码"
        assert ds.store.count() == 0

    def test_a_scan_after_sixty_minutes_does_not_count(self) -> None:
        s = self.sale()
        late_scan = f.scan(f.at(0, 16, 5), CODE, settlement_id=s["event_id"])
        assert len(f.run(DrugSwap(), [s, late_scan])[0]) == 1

    def test_swap_alerts_once_per_settlement(self) -> None:
        s = self.sale()
        scans = [
            f.scan(
                f.at(0, 15, 1),
                f.trace_code("8234567", k),
                drug_code=f.DRUG_B,
                settlement_id=s["event_id"],
            )
            for k in range(3)
        ]
        assert len(f.run(DrugSwap(), [s, *scans])[0]) == 1

    def test_settlements_without_drugs_and_reversals_are_ignored(self) -> None:
        s = self.sale()
        events = [f.settlement(f.at(0, 9)), f.reversal(s, f.at(0, 15, 2))]
        _, ds = f.run(DrugSwap(), events, flush=False)
        assert ds.store.count() == 0

    def test_orphan_scans_expire_silently(self) -> None:
        alerts, ds = f.run(DrugSwap(), [f.scan(f.at(0, 9), CODE, settlement_id="ST-GONE")])
        assert alerts == [] and ds.store.count() == 0


class TestTraceCodeResale:
    def test_second_sale_without_return_fires(self) -> None:
        a = f.scan(f.at(0, 10), CODE, settlement_id="S1")
        b = f.scan(f.at(3, 10), CODE, institution=f.PHARM2, settlement_id="S2")
        alerts, _ = f.run(TraceCodeResale(registry=f.registry()), [a, b])
        assert len(alerts) == 1
        al = alerts[0]
        assert al.entity_type == "trace_code" and al.entity_id == CODE
        assert al.evidence_event_ids == [a["event_id"], b["event_id"]]
        assert al.institution_id == f.PHARM2 and al.amount_at_risk_fen == 3000
        assert "2025-11-17 10:00" in al.explanation and "2025-11-20 10:00" in al.explanation

    def test_sale_after_a_return_is_fine(self) -> None:
        events = [
            f.scan(f.at(0, 10), CODE, settlement_id="S1"),
            f.scan(f.at(1, 10), CODE, scan_type="RETURN"),
            f.scan(f.at(2, 10), CODE, institution=f.PHARM2, settlement_id="S2"),
        ]
        assert f.run(TraceCodeResale(), events)[0] == []

    def test_double_scan_in_one_sale_is_not_a_resale(self) -> None:
        events = [
            f.scan(f.at(0, 10), CODE, settlement_id="S1"),
            f.scan(f.at(0, 10, 1), CODE, settlement_id="S1"),
        ]
        assert f.run(TraceCodeResale(), events)[0] == []

    def test_stock_in_is_ignored_and_other_codes_are_separate(self) -> None:
        events = [
            f.scan(f.at(0, 8), CODE, scan_type="STOCK_IN"),
            f.scan(f.at(0, 10), CODE, settlement_id="S1"),
            f.scan(f.at(0, 11), f.trace_code("8123456", 2), settlement_id="S2"),
        ]
        assert f.run(TraceCodeResale(), events)[0] == []

    def test_third_sale_fires_again(self) -> None:
        events = [f.scan(f.at(d, 10), CODE, settlement_id=f"S{d}") for d in (0, 2, 4)]
        assert len(f.run(TraceCodeResale(), events)[0]) == 2

    def test_out_of_order_return_between_sales_prevents_nothing_retroactively(self) -> None:
        # the earlier sale arrives after the later one: the later one is flagged, by its own id
        a = f.scan(f.at(0, 10), CODE, settlement_id="S1")
        b = f.scan(f.at(0, 10, 5), CODE, institution=f.PHARM2, settlement_id="S2")
        forward, _ = f.run(TraceCodeResale(), [a, b])
        backward, _ = f.run(TraceCodeResale(), [b, a])
        assert [x.alert_id for x in forward] == [x.alert_id for x in backward]

    def test_memory_is_thirty_days(self) -> None:
        events = [
            f.scan(f.at(0, 10), CODE, settlement_id="S1"),
            f.scan(f.at(31, 10), CODE, settlement_id="S2"),
        ]
        assert f.run(TraceCodeResale(), events)[0] == []
