"""Whether the licensed doctor or pharmacist was really on duty (挂证)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.alerts import Alert, make_alert
from models.detector import (
    DUE,
    FACE_VERIFY,
    NO_ALERTS,
    SETTLEMENT,
    BaseDetector,
    Event,
    Params,
    Result,
    State,
    trigger,
)
from models.window import (
    DAY_MS,
    MINUTE_MS,
    add,
    between,
    evict_before,
    fmt_local,
    local_day,
    local_day_start,
    new,
)


@dataclass(kw_only=True)
class LicenceLendingParams(Params):
    clock_in_window_minutes: float = 60.0
    """Clock-ins at two institutions closer than this are one person in two places."""
    subject_types: tuple[str, ...] = ("DOCTOR", "PHARMACIST")
    """Whose licences are checked: settlements' doctor_id and/or pharmacist_id."""
    severity_no_clock_in: int = 2
    severity_two_places: int = 2
    max_evidence: int = 20


class LicenceLending(BaseDetector):
    """挂证 — a doctor's or pharmacist's licence used without them working.

    Keyed by doctor/pharmacist id (settlements' `doctor_id`/`pharmacist_id`, CLOCK_IN face checks
    of DOCTOR/PHARMACIST subjects). Fires (a) by timer at the end of a local day on which the
    subject appears on settlements but never clocked in — once per subject-day, triggered by the
    day's first settlement, money at risk their fund-paid total; (b) on CLOCK_INs at **two
    institutions within 60 min**, triggered by the later one, then quiet for 60 min.

    >>> det = LicenceLending()
    >>> rx = {"_topic": "settlement", "event_id": "S1", "event_time": 3_600_000,
    ...       "doctor_id": "D440300000001", "pharmacist_id": None,
    ...       "institution_id": "H440300000001", "region_code": "440300",
    ...       "fund_paid_fen": 2000, "reversal_of": None}
    >>> _, state = det.process(rx, None, 0, "D440300000001")
    >>> alerts, state = det.expire(state, 86_400_000, "D440300000001")
    >>> alerts[0].explanation
    '[licence_lending] 1970-01-01以其身份结算1笔,当日无上岗刷脸打卡记录'
    >>> state is None
    False
    """

    id = "licence_lending"
    topics = frozenset({SETTLEMENT, FACE_VERIFY})
    params_class = LicenceLendingParams
    params: LicenceLendingParams

    def __init__(self, params: LicenceLendingParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = int(self.params.clock_in_window_minutes * MINUTE_MS)
        self._doctors = "DOCTOR" in self.params.subject_types
        self._pharmacists = "PHARMACIST" in self.params.subject_types
        self._subjects = frozenset(self.params.subject_types)

    def keys(self, event: Event) -> list[str]:
        if event["_topic"] == FACE_VERIFY:
            if event["purpose"] == "CLOCK_IN" and event["subject_type"] in self._subjects:
                return [event["subject_id"]]
            return []
        if event["reversal_of"] is not None:
            return []
        out = []
        if self._doctors and event["doctor_id"] is not None:
            out.append(event["doctor_id"])
        if self._pharmacists and event["pharmacist_id"] is not None:
            out.append(event["pharmacist_id"])
        return out

    # state: "d" {local day: [clocked, n, fund, [[id, t, inst, region]...], judged]};
    # "ci" window of clock-ins [id, inst, region]; "fb" time of the last two-places alert

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        if state is None:
            state = {"d": {}, "ci": new()}
        t = event["event_time"]
        day = str(local_day(t))
        days = state["d"]
        d = days.get(day)
        if d is None:
            d = days[day] = [0, 0, 0, [], 0]
        alerts = NO_ALERTS
        if event["_topic"] == FACE_VERIFY:
            d[0], d[1], d[2], d[3] = 1, 0, 0, []
            alerts = self._clock_in(state, event, key, watermark_ms)
        elif not d[0] and not d[4]:
            eid = event["event_id"]
            if all(r[0] != eid for r in d[3]):
                d[1] += 1
                d[2] += event["fund_paid_fen"]
                if len(d[3]) < self.params.max_evidence:
                    d[3].append([eid, t, event["institution_id"], event["region_code"]])
        return alerts, self._due(state)

    def _clock_in(self, state: State, event: Event, key: str, watermark_ms: int) -> Sequence[Alert]:
        ci = state["ci"]
        width = self._width
        evict_before(ci, watermark_ms - width)
        t, inst = event["event_time"], event["institution_id"]
        entry = [event["event_id"], inst, event["region_code"]]
        if not add(ci, t, entry):
            return NO_ALERTS
        others = [
            (abs(t2 - t), t2, v) for t2, v in between(ci, t - width, t + width) if v[1] != inst
        ]
        last = state.get("fb")
        if not others or (last is not None and abs(t - last) < width):
            return NO_ALERTS
        gap, t2, other = min(others, key=lambda o: o[0])
        first, again, t_again = (other, entry, t) if t2 <= t else (entry, other, t2)
        state["fb"] = t_again
        return [
            make_alert(
                self,
                _entity_type(key),
                key,
                trigger(again[0], t_again),
                [first[0]],
                score=width / max(gap, MINUTE_MS),
                severity=self.params.severity_two_places,
                amount_at_risk_fen=0,
                explanation_zh=(
                    f"{gap // MINUTE_MS}分钟内先后在{first[1]}和{again[1]}两家机构上岗打卡"
                    f"(阈值{self.params.clock_in_window_minutes:g}分钟)"
                ),
                institution_id=again[1],
                region_code=again[2],
            )
        ]

    def _due(self, state: State) -> State | None:
        due = None
        for day, d in state["d"].items():
            end = local_day_start(int(day)) + DAY_MS
            at = end + DAY_MS if d[4] else end  # judged days linger a day for late events
            if due is None or at < due:
                due = at
        if state["ci"]["t"]:
            at = state["ci"]["t"][-1] + self._width + 1
            if due is None or at < due:
                due = at
        fb = state.get("fb")
        if due is None:
            return None
        if fb is not None and fb + self._width < due:
            state.pop("fb")
        state[DUE] = due
        return state

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        alerts: list[Alert] = []
        days = state["d"]
        for day in sorted(days, key=int):
            d = days[day]
            end = local_day_start(int(day)) + DAY_MS
            if not d[4] and end <= watermark_ms:
                if not d[0] and d[1] > 0:
                    alerts.append(self._no_clock_in(key, day, d))
                d[4], d[3] = 1, []
            if d[4] and end + DAY_MS <= watermark_ms:
                del days[day]
        evict_before(state["ci"], watermark_ms - self._width)
        if not days and not state["ci"]["t"]:
            return alerts, None
        return alerts, self._due(state)

    def _no_clock_in(self, key: str, day: str, d: list[Any]) -> Alert:
        rows = sorted(d[3], key=lambda r: (r[1], r[0]))
        first = rows[0]
        n = d[1]
        return make_alert(
            self,
            _entity_type(key),
            key,
            trigger(first[0], first[1]),
            [r[0] for r in rows[1:]],
            score=float(n),
            severity=self.params.severity_no_clock_in,
            amount_at_risk_fen=d[2],
            explanation_zh=(
                f"{fmt_local(local_day_start(int(day)))[:10]}以其身份结算{n}笔,当日无上岗刷脸打卡记录"
            ),
            institution_id=first[2],
            region_code=first[3],
        )


def _entity_type(subject_id: str) -> str:
    """Pharmacists are Y + 12 digits, doctors D + 12 digits (domain codes)."""
    return "pharmacist" if subject_id.startswith("Y") else "doctor"
