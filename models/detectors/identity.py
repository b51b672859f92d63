"""Who was really there: face checks that fail, travel that is impossible, devices off-site."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Self

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
from models.reference import Registry, distance_m
from models.window import HOUR_MS, MINUTE_MS, add, evict_before, new, span, trim


@dataclass(kw_only=True)
class ImpersonationParams(Params):
    min_match_score: float = 0.70
    window_minutes: float = 30.0
    """How far a face check may be from a FACE settlement it identifies."""
    purposes: tuple[str, ...] = ("VISIT", "SETTLEMENT", "ADMISSION")
    """Patient check purposes that can identify a person for a settlement."""
    max_checks: int = 20


class Impersonation(BaseDetector):
    """冒名就医 — someone using another person's insurance.

    Keyed by person; joins settlements with the person's face checks in either arrival order.
    Fires when a settlement is identified by a check (its `face_verify_id`, or a check carrying
    its settlement id) that failed, scored **below 0.70** or failed liveness; or when a FACE
    settlement has no passing check of the person within **30 min** (decided by timer when the
    watermark passes settlement time + 30 min). One alert per settlement. Money at risk: the
    settlement's fund-paid amount.

    >>> det = Impersonation()
    >>> check = {"_topic": "face_verify", "event_id": "F1", "event_time": 0,
    ...          "subject_id": "P1", "result": "PASS", "match_score": 0.45,
    ...          "liveness_passed": True, "settlement_id": None}
    >>> _, state = det.process(check, None, 0, "P1")
    >>> settle = {"_topic": "settlement", "event_id": "S1", "event_time": 60_000,
    ...           "person_id": "P1", "institution_id": "H440300000001",
    ...           "region_code": "440300", "fund_paid_fen": 5000, "channel": "FACE",
    ...           "face_verify_id": "F1", "reversal_of": None}
    >>> alerts, state = det.process(settle, state, 0, "P1")
    >>> alerts[0].explanation
    '[impersonation] 结算所用刷脸核验未通过:比对分0.45(阈值0.70)'
    >>> alerts[0].evidence_event_ids
    ['F1', 'S1']
    """

    id = "impersonation"
    topics = frozenset({SETTLEMENT, FACE_VERIFY})
    params_class = ImpersonationParams
    params: ImpersonationParams

    def __init__(self, params: ImpersonationParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = int(self.params.window_minutes * MINUTE_MS)
        self._purposes = frozenset(self.params.purposes)
        self._min = self.params.min_match_score

    def keys(self, event: Event) -> list[str]:
        if event["_topic"] == FACE_VERIFY:
            if event["subject_type"] == "PATIENT" and event["purpose"] in self._purposes:
                return [event["subject_id"]]
            return []
        if event["reversal_of"] is None and (
            event["channel"] == "FACE" or event["face_verify_id"] is not None
        ):
            return [event["person_id"]]
        return []

    # state: "fc" window of checks [id, ok, score, liveness, settlement_id, result];
    # "ps" pending settlements [id, t, face_verify_id, inst, region, fund, channel_face, bad_ids]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        if state is None:
            state = {"fc": new(), "ps": []}
        checks = state["fc"]
        evict_before(checks, watermark_ms - self._width)
        t = event["event_time"]
        alerts: list[Alert] = []
        if event["_topic"] == FACE_VERIFY:
            score = event["match_score"]
            live = bool(event["liveness_passed"])
            ok = int(event["result"] == "PASS" and live and score >= self._min)
            check = [event["event_id"], ok, score, live, event["settlement_id"], event["result"]]
            if add(checks, t, check):
                trim(checks, self.params.max_checks)
                self._resolve(state, event, key, check, alerts)
        else:
            self._settle(state, event, key, alerts)
        return alerts, self._due(state)

    def _settle(self, state: State, event: Event, key: str, alerts: list[Alert]) -> None:
        t = event["event_time"]
        eid = event["event_id"]
        pending = state["ps"]
        if any(p[0] == eid for p in pending):
            return
        fvid = event["face_verify_id"]
        p = [
            eid,
            t,
            fvid,
            event["institution_id"],
            event["region_code"],
            event["fund_paid_fen"],
            event["channel"] == "FACE",
            [],
        ]
        checks = state["fc"]
        for c in checks["v"]:
            if c[0] == fvid or c[4] == eid:
                if not c[1]:
                    alerts.append(self._bad_check(key, p, c))
                return
        if fvid is None:
            i, j = span(checks, t - self._width, t + self._width)
            near = checks["v"][i:j]
            if any(c[1] for c in near):
                return
            p[7] = [c[0] for c in near]
        pending.append(p)

    def _resolve(
        self, state: State, event: Event, key: str, check: list[Any], alerts: list[Alert]
    ) -> None:
        t = event["event_time"]
        keep = []
        for p in state["ps"]:
            if p[2] == check[0] or check[4] == p[0]:
                if not check[1]:
                    alerts.append(self._bad_check(key, p, check))
                continue
            if p[2] is None and abs(t - p[1]) <= self._width:
                if check[1]:
                    continue
                p[7].append(check[0])
            keep.append(p)
        state["ps"] = keep

    def _due(self, state: State) -> State | None:
        pending, checks = state["ps"], state["fc"]["t"]
        if pending:
            state[DUE] = min(p[1] for p in pending) + self._width
        elif checks:
            state[DUE] = checks[-1] + self._width + 1
        else:
            return None
        return state

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        alerts: list[Alert] = []
        keep = []
        for p in state["ps"]:
            if p[1] + self._width > watermark_ms:
                keep.append(p)
            elif p[6]:  # a FACE settlement nobody passed a check for
                bad = p[7]
                reason = (
                    f"刷脸结算但{self.params.window_minutes:g}分钟内{len(bad)}次刷脸核验均未通过"
                    if bad
                    else f"刷脸结算但{self.params.window_minutes:g}分钟内无对应的刷脸核验记录"
                )
                alerts.append(self._alert(key, p, bad, 2.0, 2, reason))
        state["ps"] = keep
        evict_before(state["fc"], watermark_ms - self._width)
        return alerts, self._due(state)

    def _bad_check(self, key: str, p: list[Any], c: list[Any]) -> Alert:
        """Triggered by the settlement whichever arrived last: ids ignore arrival order."""
        _, _, score, live, _, result = c
        reasons = []
        if result != "PASS":
            reasons.append(f"核验结果{result}")
        if not live:
            reasons.append("活体检测未通过")
        if score < self._min:
            reasons.append(f"比对分{score:.2f}(阈值{self._min:.2f})")
        ratio = self._min / max(score, 0.01)
        severity = 3 if not live else max(2 if result != "PASS" else 1, self.severity(ratio))
        text = "结算所用刷脸核验未通过:" + ",".join(reasons)
        return self._alert(key, p, [c[0]], ratio, severity, text)

    def _alert(
        self, key: str, p: list[Any], evidence: list[str], ratio: float, severity: int, text: str
    ) -> Alert:
        return make_alert(
            self,
            "person",
            key,
            trigger(p[0], p[1]),
            evidence,
            score=min(ratio, 100.0),
            severity=severity,
            amount_at_risk_fen=p[5],
            explanation_zh=text,
            institution_id=p[3],
            region_code=p[4],
        )


@dataclass(kw_only=True)
class ImpossibleTravelParams(Params):
    min_distance_km: float = 50.0
    max_speed_kmh: float = 200.0
    memory_hours: float = 24.0
    """Checks further apart than this are never compared."""
    max_checks: int = 16


class ImpossibleTravel(BaseDetector):
    """就医时空极限 — one person at two places too far apart for the time between.

    Keyed by person; compares each patient face check with its neighbours in event time (so an
    out-of-order check is compared both ways) using the device coordinates. Fires when two
    consecutive checks are **over 50 km** apart with an implied speed **over 200 km/h**. Each
    pair fires once. No money at risk is attributed (the settlements carry it).

    >>> det = ImpossibleTravel()
    >>> base = {"subject_id": "P1", "region_code": "440300", "institution_id": "H440300000001"}
    >>> _, state = det.process({**base, "event_id": "F1", "event_time": 0,
    ...     "device_lat": 22.54, "device_lon": 114.06}, None, 0, "P1")
    >>> alerts, state = det.process({**base, "event_id": "F2", "event_time": 1_800_000,
    ...     "device_lat": 23.13, "device_lon": 113.26}, state, 0, "P1")
    >>> alerts[0].explanation
    '[impossible_travel] 30分钟内两次刷脸相距105公里,推算时速210公里/小时(阈值200公里/小时)'
    """

    id = "impossible_travel"
    topics = frozenset({FACE_VERIFY})
    params_class = ImpossibleTravelParams
    params: ImpossibleTravelParams

    def __init__(self, params: ImpossibleTravelParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._memory = int(self.params.memory_hours * HOUR_MS)
        self._min_m = self.params.min_distance_km * 1000.0
        self._max_v = self.params.max_speed_kmh

    def keys(self, event: Event) -> list[str]:
        return [event["subject_id"]] if event["subject_type"] == "PATIENT" else []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        if state is None:
            state = {"w": new()}
        win = state["w"]
        evict_before(win, watermark_ms - self._memory)
        t = event["event_time"]
        entry = [
            event["event_id"],
            event["device_lat"],
            event["device_lon"],
            0,
            event["institution_id"],
            event["region_code"],
        ]
        if not add(win, t, entry):
            return NO_ALERTS, state
        trim(win, self.params.max_checks)
        times, vals = win["t"], win["v"]
        i = bisect_right(times, t) - 1
        while i >= 0 and vals[i] is not entry:
            i -= 1
        alerts = NO_ALERTS
        # each impossible pair fires once, triggered by its later check (arrival order is moot)
        if i > 0:
            alert = self._pair(key, times[i - 1], vals[i - 1], t, entry)
            if alert is not None:
                alerts = [alert]
        if 0 <= i < len(vals) - 1 and not vals[i + 1][3]:
            alert = self._pair(key, t, entry, times[i + 1], vals[i + 1])
            if alert is not None:
                alerts = [*alerts, alert]
        state[DUE] = times[-1] + self._memory + 1
        return alerts, state

    def _pair(self, key: str, t1: int, a: list[Any], t2: int, b: list[Any]) -> Alert | None:
        """Alert on the consecutive checks a→b if impossible (marks b as fired)."""
        found = self._speed(t1, a, t2, b)
        if found is None:
            return None
        b[3] = 1
        speed, km = found
        pace = "同一时刻" if math.isinf(speed) else f"推算时速{speed:.0f}公里/小时"
        return make_alert(
            self,
            "person",
            key,
            trigger(b[0], t2),
            [a[0]],
            score=min(speed / self._max_v, 100.0),
            severity=self.severity(speed / self._max_v),
            amount_at_risk_fen=0,
            explanation_zh=(
                f"{(t2 - t1) / MINUTE_MS:.0f}分钟内两次刷脸相距{km:.0f}公里,"
                f"{pace}(阈值{self._max_v:g}公里/小时)"
            ),
            institution_id=b[4],
            region_code=b[5],
        )

    def _speed(self, t1: int, a: list[Any], t2: int, b: list[Any]) -> tuple[float, float] | None:
        """(km/h, km) when the pair a→b is impossible, else None."""
        d = distance_m(a[1], a[2], b[1], b[2])
        if d <= self._min_m:
            return None
        km = d / 1000.0
        hours = (t2 - t1) / HOUR_MS
        speed = km / hours if hours > 0 else math.inf
        return (speed, km) if speed > self._max_v else None


@dataclass(kw_only=True)
class FenceBreachParams(Params):
    tolerance_m: float = 100.0


class FenceBreach(BaseDetector):
    """电子围栏越界 — a face check from a device outside the institution's fence.

    Stateless. Fires when the device is farther than the institution's registered fence radius
    **+ 100 m** from its registered location (institutions missing from the registry are
    skipped). Each check is its own act (another subject, another moment), so every breaching
    check fires. Severity by distance / (radius + tolerance).

    >>> from models.reference import Institution
    >>> inst = Institution("H440300000001", "医院", "HOSPITAL", 2, "440300", 22.54, 114.06, 300.0)
    >>> det = FenceBreach(registry=Registry({inst.institution_id: inst}))
    >>> ev = {"event_id": "F1", "event_time": 0, "institution_id": "H440300000001",
    ...       "region_code": "440300", "device_id": "DEV1",
    ...       "device_lat": 22.57, "device_lon": 114.06}
    >>> alerts, _ = det.process(ev, None, 0, "H440300000001")
    >>> alerts[0].explanation
    '[fence_breach] 设备DEV1距机构登记位置3336米,超出电子围栏半径300米(容差100米)'
    """

    id = "fence_breach"
    topics = frozenset({FACE_VERIFY})
    stateful = False
    params_class = FenceBreachParams
    params: FenceBreachParams

    def __init__(
        self,
        params: FenceBreachParams | dict[str, Any] | None = None,
        registry: Registry | None = None,
    ) -> None:
        super().__init__(params)
        self.registry = registry if registry is not None else Registry()

    @classmethod
    def create(
        cls, registry: Registry, params: FenceBreachParams | dict[str, Any] | None = None
    ) -> Self:
        return cls(params, registry)

    def keys(self, event: Event) -> list[str]:
        inst = event["institution_id"]
        return [inst] if inst in self.registry.institutions else []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        inst = self.registry.institutions.get(event["institution_id"])
        if inst is None:
            return NO_ALERTS, None
        d = distance_m(inst.lat, inst.lon, event["device_lat"], event["device_lon"])
        limit = inst.fence_radius_m + self.params.tolerance_m
        if d <= limit:
            return NO_ALERTS, None
        alert = make_alert(
            self,
            "institution",
            inst.institution_id,
            event,
            [],
            score=d / limit,
            severity=self.severity(d / limit),
            amount_at_risk_fen=0,
            explanation_zh=(
                f"设备{event['device_id']}距机构登记位置{d:.0f}米,超出电子围栏半径"
                f"{inst.fence_radius_m:.0f}米(容差{self.params.tolerance_m:g}米)"
            ),
            institution_id=inst.institution_id,
            region_code=event["region_code"],
        )
        return [alert], None
