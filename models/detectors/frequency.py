"""How often one person settles: across institutions in a day, and on one card within minutes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.alerts import Alert, make_alert
from models.detector import (
    DUE,
    NO_ALERTS,
    SETTLEMENT,
    BaseDetector,
    Event,
    Params,
    Result,
    State,
)
from models.window import HOUR_MS, MINUTE_MS, add, best_slice, open_window, trim


@dataclass(kw_only=True)
class CrossInstitutionParams(Params):
    window_hours: float = 24.0
    max_institutions: int = 5
    """Fires when the distinct institutions in the window exceed this."""
    max_events: int = 200
    """Hard bound on the settlements kept per person."""


class CrossInstitutionFrequency(BaseDetector):
    """跨机构超频 — one person settling at many institutions in a short time.

    Fires when a person's settlements (any institution type, reversals excluded and cancelling
    their original) in a sliding 24 h window of event time cover **more than 5** distinct
    institutions. One alert per crossing: after firing, the person is quiet for one window length
    (an injected run of 6–8 visits gives one alert, its evidence every settlement of the window).
    Severity by distinct/threshold; money at risk is the fund-paid total of the window.

    >>> det = CrossInstitutionFrequency()
    >>> state = None
    >>> for i in range(6):
    ...     ev = {"event_id": f"S{i}", "event_time": i * 3_600_000, "person_id": "P1",
    ...           "institution_id": f"H44030000000{i}", "region_code": "440300",
    ...           "fund_paid_fen": 1000, "reversal_of": None}
    ...     alerts, state = det.process(ev, state, 0, "P1")
    >>> alerts[0].explanation
    '[cross_institution_frequency] 24小时内在6家不同机构就诊(阈值5)'
    >>> alerts[0].evidence_event_ids[-1], alerts[0].amount_at_risk_fen
    ('S5', 6000)
    """

    id = "cross_institution_frequency"
    topics = frozenset({SETTLEMENT})
    params_class = CrossInstitutionParams
    params: CrossInstitutionParams

    def __init__(self, params: CrossInstitutionParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = int(self.params.window_hours * HOUR_MS)
        self._max = self.params.max_institutions

    def keys(self, event: Event) -> list[str]:
        return [event["person_id"]]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        width = self._width
        state, win = open_window(event, state, watermark_ms, width)
        if win is None:
            return NO_ALERTS, state
        t = event["event_time"]
        if not add(win, t, [event["event_id"], event["institution_id"], event["fund_paid_fen"]]):
            return NO_ALERTS, state
        trim(win, self.params.max_events)
        alerts = NO_ALERTS
        last = state.get("f")
        if len(win["t"]) > self._max and (last is None or abs(t - last) >= width):
            n, i, j = best_slice(win, t, width, _distinct_institutions)
            if n > self._max:
                alerts = [self._alert(event, key, win["v"][i:j], int(n))]
                state["f"] = last = t
        state[DUE] = max(win["t"][-1], last if last is not None else 0) + width + 1
        return alerts, state

    def _alert(self, event: Event, key: str, vals: list[Any], n: int) -> Alert:
        p = self.params
        return make_alert(
            self,
            "person",
            key,
            event,
            [v[0] for v in vals],
            score=n / self._max,
            severity=self.severity(n / self._max),
            amount_at_risk_fen=sum(v[2] for v in vals),
            explanation_zh=f"{p.window_hours:g}小时内在{n}家不同机构就诊(阈值{self._max})",
            institution_id=event["institution_id"],
            region_code=event["region_code"],
        )


def _distinct_institutions(vals: list[Any], i: int, j: int) -> float:
    return len({vals[k][1] for k in range(i, j)})


@dataclass(kw_only=True)
class CardBurstParams(Params):
    window_minutes: float = 10.0
    min_settlements: int = 4
    """Fires when the settlements in the window reach this."""
    max_events: int = 50


class CardBurst(BaseDetector):
    """同卡高频刷卡 — a burst of settlements on one person's card within minutes.

    Fires when a person has **at least 4** settlements (reversals excluded and cancelling their
    original) within a sliding 10 min window. One alert per burst: quiet for one window length
    after firing. Money at risk: the fund-paid total of the burst.

    >>> det = CardBurst()
    >>> state = None
    >>> for i in range(4):
    ...     ev = {"event_id": f"S{i}", "event_time": i * 60_000, "person_id": "P1",
    ...           "institution_id": "P440300000001", "region_code": "440300",
    ...           "fund_paid_fen": 500, "reversal_of": None}
    ...     alerts, state = det.process(ev, state, 0, "P1")
    >>> alerts[0].explanation
    '[card_burst] 10分钟内同一参保人结算4次(阈值4)'
    """

    id = "card_burst"
    topics = frozenset({SETTLEMENT})
    params_class = CardBurstParams
    params: CardBurstParams

    def __init__(self, params: CardBurstParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = int(self.params.window_minutes * MINUTE_MS)
        self._min = self.params.min_settlements

    def keys(self, event: Event) -> list[str]:
        return [event["person_id"]]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        width = self._width
        state, win = open_window(event, state, watermark_ms, width)
        if win is None:
            return NO_ALERTS, state
        t = event["event_time"]
        if not add(win, t, [event["event_id"], event["institution_id"], event["fund_paid_fen"]]):
            return NO_ALERTS, state
        trim(win, self.params.max_events)
        alerts = NO_ALERTS
        last = state.get("f")
        if len(win["t"]) >= self._min and (last is None or abs(t - last) >= width):
            n, i, j = best_slice(win, t, width, _count)
            if n >= self._min:
                vals = win["v"][i:j]
                p = self.params
                alerts = [
                    make_alert(
                        self,
                        "person",
                        key,
                        event,
                        [v[0] for v in vals],
                        score=n / self._min,
                        severity=self.severity(n / self._min),
                        amount_at_risk_fen=sum(v[2] for v in vals),
                        explanation_zh=(
                            f"{p.window_minutes:g}分钟内同一参保人结算{int(n)}次(阈值{self._min})"
                        ),
                        institution_id=event["institution_id"],
                        region_code=event["region_code"],
                    )
                ]
                state["f"] = last = t
        state[DUE] = max(win["t"][-1], last if last is not None else 0) + width + 1
        return alerts, state


def _count(vals: list[Any], i: int, j: int) -> float:
    return j - i
