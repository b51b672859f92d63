"""Inpatient stays: a patient who is not in the bed, and one stay split into several."""

from __future__ import annotations

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
from models.window import DAY_MS, add, between, evict_before, new, trim


@dataclass(kw_only=True)
class HangingBedParams(Params):
    max_gap_days: float = 2.0
    """Fires when the stay has a longer stretch without a bedside check."""
    max_stay_days: int = 60
    """How long bedside checks are kept waiting for their discharge settlement."""
    max_checks: int = 256
    max_elsewhere: int = 32


class HangingBed(BaseDetector):
    """挂床住院 — an inpatient stay with the patient not actually there.

    Keyed by person. Keeps the person's BEDSIDE/ADMISSION face checks and, while such checks
    exist (the person is or was just in hospital), their outpatient and pharmacy settlements.
    The discharge settlement (INPATIENT, settled at discharge) arms a timer at the discharge
    time; when the watermark passes it the whole stay is judged, so checks that arrive a little
    late still count. Fires when the stay has a stretch of **more than 2 days** without a check at
    that institution (admission and discharge bound the stretches), or when an outpatient or
    pharmacy settlement at **another institution** falls inside the stay. One alert per stay.
    Money at risk: the stay's fund-paid amount.

    >>> det = HangingBed()
    >>> day = 86_400_000
    >>> stay = {"_topic": "settlement", "event_id": "S1", "event_time": 6 * day,
    ...         "person_id": "P1", "institution_id": "H440300000001",
    ...         "region_code": "440300", "visit_type": "INPATIENT", "admission_time": 0,
    ...         "discharge_time": 6 * day, "fund_paid_fen": 800000, "reversal_of": None}
    >>> _, state = det.process(stay, None, 0, "P1")
    >>> alerts, state = det.expire(state, 6 * day, "P1")
    >>> alerts[0].explanation
    '[hanging_bed] 住院6.0天期间最长6.0天无床旁刷脸核验(阈值2天)'
    """

    id = "hanging_bed"
    topics = frozenset({SETTLEMENT, FACE_VERIFY})
    params_class = HangingBedParams
    params: HangingBedParams

    def __init__(self, params: HangingBedParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._gap = int(self.params.max_gap_days * DAY_MS)
        self._retention = self.params.max_stay_days * DAY_MS

    def keys(self, event: Event) -> list[str]:
        if event["_topic"] == FACE_VERIFY:
            if event["subject_type"] == "PATIENT" and event["purpose"] in ("BEDSIDE", "ADMISSION"):
                return [event["subject_id"]]
            return []
        if event["reversal_of"] is not None:
            return []
        if event["visit_type"] == "INPATIENT" and (
            event["admission_time"] is None or event["discharge_time"] is None
        ):
            return []
        return [event["person_id"]]

    # state: "b" checks [id, inst]; "o" settlements elsewhere-candidates [id, inst];
    # "st" stays awaiting judgement [id, t, admission, discharge, inst, region, fund]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        t = event["event_time"]
        if event["_topic"] == FACE_VERIFY:
            if state is None:
                state = {"b": new(), "o": new(), "st": []}
            if add(state["b"], t, [event["event_id"], event["institution_id"]]):
                trim(state["b"], self.params.max_checks)
        elif event["visit_type"] == "INPATIENT":
            if state is None:
                state = {"b": new(), "o": new(), "st": []}
            eid = event["event_id"]
            if all(s[0] != eid for s in state["st"]):
                state["st"].append(
                    [
                        eid,
                        t,
                        event["admission_time"],
                        event["discharge_time"],
                        event["institution_id"],
                        event["region_code"],
                        event["fund_paid_fen"],
                    ]
                )
        else:
            if state is None or not state["b"]["t"]:
                return NO_ALERTS, state  # not in hospital: nothing to compare with
            if add(state["o"], t, [event["event_id"], event["institution_id"]]):
                trim(state["o"], self.params.max_elsewhere)
        cutoff = watermark_ms - self._retention
        evict_before(state["b"], cutoff)
        evict_before(state["o"], cutoff)
        return NO_ALERTS, self._due(state)

    def _due(self, state: State) -> State | None:
        if state["st"]:
            state[DUE] = min(s[3] for s in state["st"])
            return state
        last = max(state["b"]["t"][-1:] + state["o"]["t"][-1:], default=None)
        if last is None:
            return None
        state[DUE] = last + self._retention + 1
        return state

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        alerts: list[Alert] = []
        keep = []
        judged = None
        for stay in state["st"]:
            if stay[3] > watermark_ms:
                keep.append(stay)
                continue
            alert = self._judge(state, stay, key)
            if alert is not None:
                alerts.append(alert)
            judged = stay[3] if judged is None else max(judged, stay[3])
        state["st"] = keep
        if judged is not None:  # the stay is over: its checks and settlements are spent
            evict_before(state["b"], judged + 1)
            evict_before(state["o"], judged + 1)
        cutoff = watermark_ms - self._retention
        evict_before(state["b"], cutoff)
        evict_before(state["o"], cutoff)
        return alerts, self._due(state)

    def _judge(self, state: State, stay: list[Any], key: str) -> Alert | None:
        eid, _, adm, dis, inst, region, fund = stay
        if dis < adm:
            return None
        points: list[tuple[int, str | None]] = [(adm, None)]
        points += [(t, v[0]) for t, v in between(state["b"], adm, dis) if v[1] == inst]
        points.append((dis, None))
        gap, a, b = max(
            (
                (points[k + 1][0] - points[k][0], points[k][1], points[k + 1][1])
                for k in range(len(points) - 1)
            ),
            key=lambda g: g[0],
        )
        elsewhere = [v[0] for t, v in between(state["o"], adm + 1, dis - 1) if v[1] != inst]
        phrases, evidence = [], []
        ratio, severity = 0.0, 1
        p = self.params
        if gap > self._gap:
            phrases.append(
                f"住院{(dis - adm) / DAY_MS:.1f}天期间最长{gap / DAY_MS:.1f}天无床旁刷脸核验"
                f"(阈值{p.max_gap_days:g}天)"
            )
            evidence += [x for x in (a, b) if x is not None]
            ratio = gap / self._gap
            severity = self.severity(ratio)
        if elsewhere:
            phrases.append(f"住院期间在其他机构有{len(elsewhere)}笔门诊/购药结算")
            evidence += elsewhere
            ratio = max(ratio, 1.0 + len(elsewhere))
            severity = max(severity, 2)
        if not phrases:
            return None
        return make_alert(
            self,
            "person",
            key,
            trigger(eid, stay[1]),
            evidence,
            score=ratio,
            severity=severity,
            amount_at_risk_fen=fund,
            explanation_zh="；".join(phrases),
            institution_id=inst,
            region_code=region,
        )


@dataclass(kw_only=True)
class SplitHospitalizationParams(Params):
    readmit_days: float = 15.0
    max_stay_days: int = 30
    """Stays are remembered readmit_days + this long (a readmission settles at its discharge)."""
    max_stays: int = 16


class SplitHospitalization(BaseDetector):
    """分解住院 — one stay split into several admissions.

    Keyed by person; remembers inpatient stays (admission, discharge, institution, main
    diagnosis). Fires on an admission **at most 15 days** after a discharge from the same
    institution with the same main diagnosis (first ICD-10 code). The alert is triggered by the
    readmission's settlement whichever of the two arrived first, once per readmission. Money at
    risk: the readmission's fund-paid amount.

    >>> det = SplitHospitalization()
    >>> day = 86_400_000
    >>> base = {"person_id": "P1", "institution_id": "H440300000001", "region_code": "440300",
    ...         "diagnosis_codes": ["I63.900"], "fund_paid_fen": 500000, "reversal_of": None}
    >>> _, state = det.process({**base, "event_id": "S1", "event_time": 5 * day,
    ...     "admission_time": 0, "discharge_time": 5 * day}, None, 0, "P1")
    >>> alerts, state = det.process({**base, "event_id": "S2", "event_time": 14 * day,
    ...     "admission_time": 8 * day, "discharge_time": 14 * day}, state, 0, "P1")
    >>> alerts[0].explanation
    '[split_hospitalization] 出院后3.0天再次入住同一机构,主诊断相同(I63.900)(阈值15天)'
    """

    id = "split_hospitalization"
    topics = frozenset({SETTLEMENT})
    params_class = SplitHospitalizationParams
    params: SplitHospitalizationParams

    def __init__(self, params: SplitHospitalizationParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._readmit = int(self.params.readmit_days * DAY_MS)
        self._retention = self._readmit + self.params.max_stay_days * DAY_MS

    def keys(self, event: Event) -> list[str]:
        if (
            event["visit_type"] == "INPATIENT"
            and event["reversal_of"] is None
            and event["admission_time"] is not None
            and event["discharge_time"] is not None
            and event["diagnosis_codes"]
        ):
            return [event["person_id"]]
        return []

    # state: "w" window by discharge time of [id, admission, inst, dx, fired, t, region, fund]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        if state is None:
            state = {"w": new()}
        win = state["w"]
        evict_before(win, watermark_ms - self._retention)
        adm, dis = event["admission_time"], event["discharge_time"]
        inst, dx = event["institution_id"], event["diagnosis_codes"][0]
        entry = [
            event["event_id"],
            adm,
            inst,
            dx,
            0,
            event["event_time"],
            event["region_code"],
            event["fund_paid_fen"],
        ]
        if not add(win, dis, entry):
            return NO_ALERTS, state
        trim(win, self.params.max_stays)
        alerts: list[Alert] = []
        before = None  # the closest earlier discharge this admission follows
        for t, v in zip(win["t"], win["v"], strict=True):
            if v is entry or v[2] != inst or v[3] != dx:
                continue
            if t <= adm and adm - t <= self._readmit and (before is None or t > before[0]):
                before = (t, v)
            elif v[1] >= dis and v[1] - dis <= self._readmit and not v[4]:
                alerts.append(self._alert(key, entry, dis, v, v[1] - dis))
        if before is not None:
            alerts.append(self._alert(key, before[1], before[0], entry, adm - before[0]))
        state[DUE] = win["t"][-1] + self._retention + 1
        return alerts, state

    def _alert(
        self, key: str, first: list[Any], first_dis: int, again: list[Any], gap: int
    ) -> Alert:
        again[4] = 1
        ratio = self._readmit / max(gap, DAY_MS / 2)
        return make_alert(
            self,
            "person",
            key,
            trigger(again[0], again[5]),
            [first[0]],
            score=ratio,
            severity=self.severity(ratio),
            amount_at_risk_fen=again[7],
            explanation_zh=(
                f"出院后{gap / DAY_MS:.1f}天再次入住同一机构,主诊断相同({again[3]})"
                f"(阈值{self.params.readmit_days:g}天)"
            ),
            institution_id=again[2],
            region_code=again[6],
        )
