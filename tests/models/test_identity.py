"""impersonation, impossible_travel, fence_breach."""

from __future__ import annotations

import pytest

from models.detectors import FenceBreach, Impersonation, ImpossibleTravel
from tests.models import factories as f


class TestImpersonation:
    def pair(
        self,
        *,
        score: float = 0.95,
        liveness: bool = True,
        channel: str = "FACE",
        link: bool = True,
        result: str | None = None,
    ) -> tuple[dict, dict]:
        check = f.face(
            f.at(0, 9), "RY1", purpose="SETTLEMENT", score=score, liveness=liveness, result=result
        )
        s = f.settlement(
            f.at(0, 9, 1),
            person="RY1",
            channel=channel,
            face_verify_id=check["event_id"] if link else None,
        )
        return check, s

    @pytest.mark.parametrize(
        ("score", "liveness", "result", "severity"),
        [
            (0.69, True, "PASS", 1),  # the terminal passed it, our threshold does not
            (0.69, True, "FAIL", 2),
            (0.9, True, "FAIL", 2),
            (0.45, True, None, 2),
            (0.3, True, None, 3),
            (0.95, False, None, 3),
        ],
    )
    def test_bad_linked_check_fires(
        self, score: float, liveness: bool, result: str | None, severity: int
    ) -> None:
        check, s = self.pair(score=score, liveness=liveness, result=result)
        alerts, _ = f.run(Impersonation(), [check, s])
        assert len(alerts) == 1
        a = alerts[0]
        assert a.evidence_event_ids == [check["event_id"], s["event_id"]]
        assert a.severity == severity and a.amount_at_risk_fen == s["fund_paid_fen"]
        assert a.explanation.startswith("[impersonation] 结算所用刷脸核验未通过")

    def test_passing_check_is_fine(self) -> None:
        assert f.run(Impersonation(), list(self.pair(score=0.85)))[0] == []
        assert f.run(Impersonation(), list(self.pair(score=0.70)))[0] == []

    def test_check_arriving_after_the_settlement_gives_the_same_alert(self) -> None:
        check, s = self.pair(score=0.4)
        assert [a.alert_id for a in f.run(Impersonation(), [check, s])[0]] == [
            a.alert_id for a in f.run(Impersonation(), [s, check])[0]
        ]

    def test_face_settlement_without_any_check_fires_after_thirty_minutes(self) -> None:
        s = f.settlement(f.at(0, 9), person="RY1", channel="FACE")
        _, ds = f.run(Impersonation(), [s], flush=False)
        assert ds.advance(f.at(0, 9, 29)) == []
        alerts = ds.advance(f.at(0, 9, 30))
        assert len(alerts) == 1
        assert alerts[0].explanation == "[impersonation] 刷脸结算但30分钟内无对应的刷脸核验记录"
        assert ds.store.count() == 0

    def test_face_settlement_with_an_unlinked_passing_check_nearby_is_fine(self) -> None:
        s = f.settlement(f.at(0, 9), person="RY1", channel="FACE")
        later = f.face(f.at(0, 9, 20), "RY1")
        assert f.run(Impersonation(), [s, later])[0] == []
        early = f.face(f.at(0, 8, 35), "RY1")
        assert f.run(Impersonation(), [early, s])[0] == []

    def test_unlinked_check_too_far_or_of_another_person_does_not_help(self) -> None:
        s = f.settlement(f.at(0, 9), person="RY1", channel="FACE")
        assert len(f.run(Impersonation(), [f.face(f.at(0, 8), "RY1"), s])[0]) == 1
        assert len(f.run(Impersonation(), [f.face(f.at(0, 9), "RY2"), s])[0]) == 1

    def test_only_failed_checks_nearby_fire_with_them_as_evidence(self) -> None:
        bad = f.face(f.at(0, 8, 58), "RY1", score=0.3)
        s = f.settlement(f.at(0, 9), person="RY1", channel="FACE")
        alerts, _ = f.run(Impersonation(), [bad, s])
        assert len(alerts) == 1 and alerts[0].evidence_event_ids == [bad["event_id"], s["event_id"]]
        assert "1次刷脸核验均未通过" in alerts[0].explanation

    def test_card_settlements_are_not_judged(self) -> None:
        s = f.settlement(f.at(0, 9), person="RY1", channel="CARD")
        alerts, ds = f.run(Impersonation(), [s], flush=False)
        assert alerts == [] and ds.store.count() == 0


class TestImpossibleTravel:
    def test_shenzhen_to_guangzhou_in_twenty_minutes_fires(self) -> None:
        a = f.face(f.at(0, 9), "RY1")
        b = f.face(f.at(0, 9, 20), "RY1", lat=f.GUANGZHOU[0], lon=f.GUANGZHOU[1])
        alerts, _ = f.run(ImpossibleTravel(), [a, b])
        assert len(alerts) == 1
        al = alerts[0]
        assert al.evidence_event_ids == [a["event_id"], b["event_id"]]
        assert "20分钟内两次刷脸相距105公里" in al.explanation
        assert "阈值200公里/小时" in al.explanation

    def test_same_trip_in_an_hour_is_possible(self) -> None:
        a = f.face(f.at(0, 9), "RY1")
        b = f.face(f.at(0, 10), "RY1", lat=f.GUANGZHOU[0], lon=f.GUANGZHOU[1])
        assert f.run(ImpossibleTravel(), [a, b])[0] == []

    def test_short_hops_never_fire_even_instantly(self) -> None:
        a = f.face(f.at(0, 9), "RY1")
        b = f.face(f.at(0, 9), "RY1", lat=f.SHENZHEN[0] + 0.4)  # ~44 km, same minute
        assert f.run(ImpossibleTravel(), [a, b])[0] == []

    def test_only_consecutive_checks_are_compared(self) -> None:
        far = {"lat": f.GUANGZHOU[0], "lon": f.GUANGZHOU[1]}
        events = [
            f.face(f.at(0, 9), "RY1"),
            f.face(f.at(0, 11), "RY1", **far),
            f.face(f.at(0, 11, 10), "RY1", **far),
        ]
        assert f.run(ImpossibleTravel(), events)[0] == []

    def test_other_persons_and_staff_are_apart(self) -> None:
        events = [
            f.face(f.at(0, 9), "RY1"),
            f.face(f.at(0, 9, 5), "RY2", lat=f.GUANGZHOU[0], lon=f.GUANGZHOU[1]),
            f.clock_in(f.at(0, 9, 6)),
        ]
        assert f.run(ImpossibleTravel(), events)[0] == []

    def test_out_of_order_middle_check_fires_both_ways_once_each(self) -> None:
        gz = {"lat": f.GUANGZHOU[0], "lon": f.GUANGZHOU[1]}
        a, b, c = (
            f.face(f.at(0, 9), "RY1"),
            f.face(f.at(0, 9, 5), "RY1", **gz),
            f.face(f.at(0, 9, 9), "RY1"),
        )
        forward, _ = f.run(ImpossibleTravel(), [a, b, c])
        backward, _ = f.run(ImpossibleTravel(), [a, c, b])
        assert len(forward) == 2
        assert sorted(x.alert_id for x in forward) == sorted(x.alert_id for x in backward)


class TestFenceBreach:
    def det(self) -> FenceBreach:
        return FenceBreach(registry=f.registry())

    def test_device_kilometres_away_fires(self) -> None:
        ev = f.face(f.at(0, 9), "RY1", purpose="BEDSIDE", lat=f.SHENZHEN[0] + 0.05)
        alerts, _ = f.run(self.det(), [ev])
        assert len(alerts) == 1
        a = alerts[0]
        assert a.entity_type == "institution" and a.entity_id == f.HOSP
        assert "超出电子围栏半径500米(容差100米)" in a.explanation and a.severity == 3

    def test_just_inside_radius_plus_tolerance_is_fine(self) -> None:
        # 500 m radius + 100 m tolerance; 0.0053 degrees of latitude is ~589 m
        assert f.run(self.det(), [f.face(f.at(0, 9), lat=f.SHENZHEN[0] + 0.0053)])[0] == []
        assert len(f.run(self.det(), [f.face(f.at(0, 9), lat=f.SHENZHEN[0] + 0.0056)])[0]) == 1

    def test_clock_in_outside_the_fence_fires_too(self) -> None:
        ev = {**f.clock_in(f.at(0, 8)), "device_lat": f.SHENZHEN[0] + 0.1}
        assert len(f.run(self.det(), [ev])[0]) == 1

    def test_unknown_institution_is_skipped(self) -> None:
        ev = f.face(f.at(0, 9), institution="H999999000001", lat=40.0)
        assert f.run(self.det(), [ev])[0] == []
