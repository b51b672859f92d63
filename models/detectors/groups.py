"""Many people doing the same thing at one place: basket rings and organised group visits.

Both keep one window per institution of `[event_id, signature, person, fund]` and a count per
signature, updated on add and evict, so the common case (a signature seen a few times) costs
O(1); only a signature with enough entries is scanned for distinct persons. Each signature fires
once per window length.
"""

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
    digest,
)
from models.window import HOUR_MS, MINUTE_MS, add, best_slice, evict_before, fmt_local, new, trim


class _SameBasket(BaseDetector):
    topics = frozenset({SETTLEMENT})
    _width: int
    _min: int
    _max_events: int

    def _signature(self, event: Event) -> str | None:
        raise NotImplementedError  # pragma: no cover

    def _alert(self, event: Event, n: int, hits: list[tuple[int, list[Any]]]) -> Alert:
        """`hits`: (time, entry) of the matching purchases/visits in the window, oldest first."""
        raise NotImplementedError  # pragma: no cover

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        sig = self._signature(event)
        if sig is None:
            return NO_ALERTS, state
        if state is None:
            state = {"w": new(), "n": {}, "f": {}}
        win, counts, fired = state["w"], state["n"], state["f"]
        width = self._width
        cutoff = watermark_ms - width
        for v in evict_before(win, cutoff):
            _decrement(counts, v[1])
        t = event["event_time"]
        if not add(win, t, [event["event_id"], sig, event["person_id"], event["fund_paid_fen"]]):
            return NO_ALERTS, state
        counts[sig] = counts.get(sig, 0) + 1
        for v in trim(win, self._max_events):
            _decrement(counts, v[1])
        for s in [s for s, f in fired.items() if f < cutoff]:
            del fired[s]
        alerts = NO_ALERTS
        if counts.get(sig, 0) >= self._min:
            last = fired.get(sig)
            if last is None or abs(t - last) >= width:

                def persons(vals: list[Any], i: int, j: int) -> float:
                    return len({vals[k][2] for k in range(i, j) if vals[k][1] == sig})

                n, i, j = best_slice(win, t, width, persons)
                if n >= self._min:
                    fired[sig] = t
                    times, vals = win["t"], win["v"]
                    hits = [(times[k], vals[k]) for k in range(i, j) if vals[k][1] == sig]
                    alerts = [self._alert(event, int(n), hits)]
        newest = win["t"][-1]
        state[DUE] = max(newest, *fired.values()) + width + 1 if fired else newest + width + 1
        return alerts, state


def _decrement(counts: dict[str, int], sig: str) -> None:
    n = counts.get(sig, 0) - 1
    if n > 0:
        counts[sig] = n
    else:
        counts.pop(sig, None)


@dataclass(kw_only=True)
class PharmacyBasketRingParams(Params):
    window_hours: float = 24.0
    min_persons: int = 6
    min_items: int = 3
    """Only baskets of at least this many distinct item codes are compared."""
    max_events: int = 5000


class PharmacyBasketRing(_SameBasket):
    """药店刷卡套现(同质购药) — many people buying the same basket at one pharmacy.

    Keyed by pharmacy. A basket is the settlement's item codes with quantities (at least 3
    distinct codes). Fires when **6 or more distinct persons** bought the same basket at the
    pharmacy within a sliding 24 h window; the basket is then quiet for 24 h. Money at risk:
    the fund-paid total of those purchases.

    >>> det = PharmacyBasketRing()
    >>> items = [{"item_code": c, "quantity": 2} for c in ("A", "B", "C")]
    >>> state = None
    >>> for i in range(6):
    ...     ev = {"event_id": f"S{i}", "event_time": i * 600_000, "person_id": f"P{i}",
    ...           "institution_id": "P440300000001", "region_code": "440300",
    ...           "fund_paid_fen": 10000, "items": items}
    ...     alerts, state = det.process(ev, state, 0, "P440300000001")
    >>> alerts[0].explanation
    '[pharmacy_basket_ring] 24小时内6名不同参保人在同一药店购买相同的3项药品组合(阈值6)'
    """

    id = "pharmacy_basket_ring"
    params_class = PharmacyBasketRingParams
    params: PharmacyBasketRingParams

    def __init__(self, params: PharmacyBasketRingParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = int(self.params.window_hours * HOUR_MS)
        self._min = self.params.min_persons
        self._max_events = self.params.max_events

    def keys(self, event: Event) -> list[str]:
        if (
            event["visit_type"] == "PHARMACY"
            and event["reversal_of"] is None
            and len(event["items"]) >= self.params.min_items
        ):
            return [event["institution_id"]]
        return []

    def _signature(self, event: Event) -> str | None:
        lines = {f"{it['item_code']}*{it['quantity']}" for it in event["items"]}
        if len({it["item_code"] for it in event["items"]}) < self.params.min_items:
            return None
        return digest(sorted(lines))

    def _alert(self, event: Event, n: int, hits: list[tuple[int, list[Any]]]) -> Alert:
        k = len({it["item_code"] for it in event["items"]})
        return make_alert(
            self,
            "institution",
            event["institution_id"],
            event,
            [v[0] for _, v in hits],
            score=n / self._min,
            severity=self.severity(n / self._min),
            amount_at_risk_fen=sum(v[3] for _, v in hits),
            explanation_zh=(
                f"{self.params.window_hours:g}小时内{n}名不同参保人在同一药店购买相同的"
                f"{k}项药品组合(阈值{self._min})"
            ),
            institution_id=event["institution_id"],
            region_code=event["region_code"],
        )


@dataclass(kw_only=True)
class GroupVisitParams(Params):
    window_minutes: float = 60.0
    min_persons: int = 8
    visit_types: tuple[str, ...] = ("OUTPATIENT",)
    max_events: int = 5000


class GroupVisit(_SameBasket):
    """异常聚集就医 — an organised group visiting together.

    Keyed by institution; the group is institution × main diagnosis × item set (codes, without
    quantities). Fires when **8 or more distinct persons** with the same main diagnosis and item
    set settle outpatient visits at one institution within a sliding **60 min**; that group is
    then quiet for 60 min. Entity: the group `institution|diagnosis|YYYYMMDDTHH` (local hour of
    its first visit, as the simulator names groups). Money at risk: the fund-paid total of the
    group's visits.

    >>> det = GroupVisit()
    >>> items = [{"item_code": c} for c in ("X1", "X2")]
    >>> state = None
    >>> for i in range(8):
    ...     ev = {"event_id": f"S{i}", "event_time": i * 300_000, "person_id": f"P{i}",
    ...           "institution_id": "H440300000001", "region_code": "440300",
    ...           "diagnosis_codes": ["J06.900"], "fund_paid_fen": 3000, "items": items}
    ...     alerts, state = det.process(ev, state, 0, "H440300000001")
    >>> alerts[0].explanation
    '[group_visit] 60分钟内8名不同参保人以相同主诊断J06.900和相同的2项诊疗项目在同一机构就诊(阈值8)'
    """

    id = "group_visit"
    params_class = GroupVisitParams
    params: GroupVisitParams

    def __init__(self, params: GroupVisitParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = int(self.params.window_minutes * MINUTE_MS)
        self._min = self.params.min_persons
        self._max_events = self.params.max_events
        self._visit_types = frozenset(self.params.visit_types)

    def keys(self, event: Event) -> list[str]:
        if (
            event["visit_type"] in self._visit_types
            and event["reversal_of"] is None
            and event["diagnosis_codes"]
            and event["items"]
        ):
            return [event["institution_id"]]
        return []

    def _signature(self, event: Event) -> str | None:
        codes = sorted({it["item_code"] for it in event["items"]})
        return digest([event["diagnosis_codes"][0], *codes])

    def _alert(self, event: Event, n: int, hits: list[tuple[int, list[Any]]]) -> Alert:
        dx = event["diagnosis_codes"][0]
        k = len({it["item_code"] for it in event["items"]})
        hour = fmt_local(hits[0][0])[:13].replace("-", "").replace(" ", "T")
        return make_alert(
            self,
            "group",
            f"{event['institution_id']}|{dx}|{hour}",
            event,
            [v[0] for _, v in hits],
            score=n / self._min,
            severity=self.severity(n / self._min),
            amount_at_risk_fen=sum(v[3] for _, v in hits),
            explanation_zh=(
                f"{self.params.window_minutes:g}分钟内{n}名不同参保人以相同主诊断{dx}和相同的"
                f"{k}项诊疗项目在同一机构就诊(阈值{self._min})"
            ),
            institution_id=event["institution_id"],
            region_code=event["region_code"],
        )
