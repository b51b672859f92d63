"""What one person accumulates: drug supply, pharmacies per drug, repeated examinations.

All three keep, per person, one sliding window per sub-key (generic group or exam code) and raise
at most one alert per settlement, naming every sub-key that crossed its threshold. A sub-key that
fired is quiet for one window length, so one episode gives one alert.
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
    fund_share,
)
from models.window import (
    DAY_MS,
    add,
    best_slice,
    keyed_due,
    new,
    prune_keyed,
    remove_id,
    trim,
)

Found = tuple[str, float, list[Any]]


class _PerPersonWindows(BaseDetector):
    """Person-keyed state `{"g": {sub_key: window}}`; entries `[event_id, value, fund, inst]`."""

    topics = frozenset({SETTLEMENT})
    _width: int
    _max_events: int = 100

    def _lines(self, event: Event) -> dict[str, list[Any]]:
        raise NotImplementedError  # pragma: no cover

    def _measure(self, vals: list[Any], i: int, j: int) -> float:
        raise NotImplementedError  # pragma: no cover

    def _over(self, m: float) -> bool:
        raise NotImplementedError  # pragma: no cover

    def _describe(
        self, sub: str, m: float, vals: list[Any], event: Event
    ) -> tuple[str, float, int]:
        """(phrase, ratio to threshold, money at risk) of one sub-key that fired."""
        raise NotImplementedError  # pragma: no cover

    _memo: tuple[Event, dict[str, list[Any]]] | None = None

    def keys(self, event: Event) -> list[str]:
        if event["reversal_of"] is not None:
            return [event["person_id"]]
        lines = self._lines(event)
        self._memo = (event, lines)  # process() of the same event reuses them
        return [event["person_id"]] if lines else []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        rev = event["reversal_of"]
        if rev is not None:
            if state is not None:
                for win in state["g"].values():
                    remove_id(win, rev)
            return NO_ALERTS, state
        memo = self._memo
        lines = memo[1] if memo is not None and memo[0] is event else self._lines(event)
        if not lines:
            return NO_ALERTS, state
        if state is None:
            state = {"g": {}}
        groups: dict[str, Any] = state["g"]
        width = self._width
        prune_keyed(groups, watermark_ms - width)
        t = event["event_time"]
        eid = event["event_id"]
        found: list[Found] | None = None
        for sub, payload in lines.items():
            win = groups.get(sub)
            if win is None:
                win = groups[sub] = new()
            if not add(win, t, [eid, *payload]):
                continue
            trim(win, self._max_events)
            last = win.get("f")
            if last is not None and abs(t - last) < width:
                continue
            m, i, j = best_slice(win, t, width, self._measure)
            if self._over(m):
                win["f"] = t
                if found is None:
                    found = []
                found.append((sub, m, win["v"][i:j]))
        state[DUE] = keyed_due(groups, width)
        return ([self._alert(event, key, found)] if found else NO_ALERTS), state

    def _alert(self, event: Event, key: str, found: list[Found]) -> Alert:
        phrases, evidence = [], []
        ratio, amount = 0.0, 0
        for sub, m, vals in found:
            phrase, r, money = self._describe(sub, m, vals, event)
            phrases.append(phrase)
            evidence.extend(v[0] for v in vals)
            ratio = max(ratio, r)
            amount += money
        return make_alert(
            self,
            "person",
            key,
            event,
            evidence,
            score=ratio,
            severity=self.severity(ratio),
            amount_at_risk_fen=amount,
            explanation_zh="；".join(phrases),
            institution_id=event["institution_id"],
            region_code=event["region_code"],
        )


def _drug_lines(event: Event) -> dict[str, list[Any]]:
    """Per generic group: [days of supply, fund-paid fen, institution] of a settlement."""
    out: dict[str, list[Any]] = {}
    for it in event["items"]:
        if it["item_type"] == "DRUG":
            group = it["generic_group"]
            days = it["days_supply"]
            if group and days and days > 0:
                fund = fund_share(event, it["amount_fen"])
                e = out.get(group)
                if e is None:
                    out[group] = [days, fund, event["institution_id"]]
                else:
                    e[0] += days
                    e[1] += fund
    return out


@dataclass(kw_only=True)
class DrugOverSupplyParams(Params):
    window_days: int = 30
    max_supply_ratio: float = 2.0
    """Fires when days of supply in the window exceed window_days × this (60 by default)."""


class DrugOverSupply(_PerPersonWindows):
    """超量开药 — cumulative drug supply beyond need, often spread over institutions.

    Per person and generic group, sums `days_supply` of drug lines in a sliding 30-day window;
    fires when the sum is **over 60 days** (2 × the window). Chronic refills of 30 days every
    26–34 days stay at ≤ 60. Reversals remove their original. Money at risk: the fund-paid amount
    of the window's lines times the excess share (excess days / total days).

    >>> det = DrugOverSupply()
    >>> state = None
    >>> for i in range(3):
    ...     ev = {"event_id": f"S{i}", "event_time": i * 5 * 86_400_000, "person_id": "P1",
    ...           "institution_id": "H440300000001", "region_code": "440300",
    ...           "total_fen": 9000, "fund_paid_fen": 9000, "reversal_of": None,
    ...           "items": [{"item_type": "DRUG", "generic_group": "metformin_oral",
    ...                      "days_supply": 30, "amount_fen": 9000}]}
    ...     alerts, state = det.process(ev, state, 0, "P1")
    >>> alerts[0].explanation
    '[drug_over_supply] 30天内metformin_oral累计开药90天(阈值60天)'
    >>> alerts[0].amount_at_risk_fen  # a third of 27000 fen is excess
    9000
    """

    id = "drug_over_supply"
    params_class = DrugOverSupplyParams
    params: DrugOverSupplyParams

    def __init__(self, params: DrugOverSupplyParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = self.params.window_days * DAY_MS
        self._limit = self.params.window_days * self.params.max_supply_ratio

    def _lines(self, event: Event) -> dict[str, list[Any]]:
        return _drug_lines(event)

    def _measure(self, vals: list[Any], i: int, j: int) -> float:
        return sum(vals[k][1] for k in range(i, j))

    def _over(self, m: float) -> bool:
        return m > self._limit

    def _describe(
        self, sub: str, m: float, vals: list[Any], event: Event
    ) -> tuple[str, float, int]:
        fund = sum(v[2] for v in vals)
        excess = int(fund * (m - self._limit) / m) if m > 0 else 0
        phrase = f"{self.params.window_days}天内{sub}累计开药{m:g}天(阈值{self._limit:g}天)"
        return phrase, m / self._limit, excess


@dataclass(kw_only=True)
class PharmacyHoppingParams(Params):
    window_days: int = 7
    min_pharmacies: int = 3
    """Fires when distinct pharmacies selling one generic group reach this."""


class PharmacyHopping(_PerPersonWindows):
    """药店刷卡套现(轮换药店) — one person buying the same drug at several pharmacies.

    Per person and generic group, counts distinct pharmacies (pharmacy purchases only) in a
    sliding 7-day window; fires at **3 or more**. Money at risk: the fund-paid amount of the
    window's lines of that group.

    >>> det = PharmacyHopping()
    >>> state = None
    >>> for i in range(3):
    ...     ev = {"event_id": f"S{i}", "event_time": i * 86_400_000, "person_id": "P1",
    ...           "institution_id": f"P44030000000{i}", "region_code": "440300",
    ...           "visit_type": "PHARMACY", "total_fen": 3000, "fund_paid_fen": 3000,
    ...           "reversal_of": None,
    ...           "items": [{"item_type": "DRUG", "generic_group": "amlodipine_oral",
    ...                      "days_supply": 10, "amount_fen": 3000}]}
    ...     alerts, state = det.process(ev, state, 0, "P1")
    >>> alerts[0].explanation
    '[pharmacy_hopping] 7天内在3家不同药店购买amlodipine_oral(阈值3)'
    """

    id = "pharmacy_hopping"
    params_class = PharmacyHoppingParams
    params: PharmacyHoppingParams

    def __init__(self, params: PharmacyHoppingParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = self.params.window_days * DAY_MS
        self._min = self.params.min_pharmacies

    def keys(self, event: Event) -> list[str]:
        if event["visit_type"] != "PHARMACY":
            return []
        return super().keys(event)

    def _lines(self, event: Event) -> dict[str, list[Any]]:
        inst = event["institution_id"]
        out: dict[str, list[Any]] = {}
        for it in event["items"]:
            if it["item_type"] == "DRUG" and it["generic_group"]:
                group = it["generic_group"]
                fund = fund_share(event, it["amount_fen"])
                e = out.get(group)
                if e is None:
                    out[group] = [inst, fund]
                else:
                    e[1] += fund
        return out

    def _measure(self, vals: list[Any], i: int, j: int) -> float:
        return len({vals[k][1] for k in range(i, j)})

    def _over(self, m: float) -> bool:
        return m >= self._min

    def _describe(
        self, sub: str, m: float, vals: list[Any], event: Event
    ) -> tuple[str, float, int]:
        phrase = f"{self.params.window_days}天内在{int(m)}家不同药店购买{sub}(阈值{self._min})"
        return phrase, m / self._min, sum(v[2] for v in vals)


@dataclass(kw_only=True)
class RepeatedExamParams(Params):
    window_days: int = 7
    min_repeats: int = 3
    """Fires when outpatient settlements billing one exam code reach this."""


class RepeatedExam(_PerPersonWindows):
    """过度检查 — the same examination repeated at short intervals.

    Per person and exam item code, counts **outpatient** settlements billing it in a sliding
    7-day window; fires at **3 or more**. Inpatient daily labs are not counted. Money at risk:
    the fund-paid amount of the repeated exam lines.

    >>> det = RepeatedExam()
    >>> state = None
    >>> for i in range(3):
    ...     ev = {"event_id": f"S{i}", "event_time": i * 86_400_000, "person_id": "P1",
    ...           "institution_id": "H440300000001", "region_code": "440300",
    ...           "visit_type": "OUTPATIENT", "total_fen": 20000, "fund_paid_fen": 10000,
    ...           "reversal_of": None,
    ...           "items": [{"item_type": "EXAM", "item_code": "250403001",
    ...                      "item_name": "CT", "amount_fen": 20000}]}
    ...     alerts, state = det.process(ev, state, 0, "P1")
    >>> alerts[0].explanation
    '[repeated_exam] 7天内门诊重复检查250403001(CT)3次(阈值3)'
    """

    id = "repeated_exam"
    params_class = RepeatedExamParams
    params: RepeatedExamParams

    def __init__(self, params: RepeatedExamParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = self.params.window_days * DAY_MS
        self._min = self.params.min_repeats

    def keys(self, event: Event) -> list[str]:
        if event["visit_type"] != "OUTPATIENT":
            return []
        return super().keys(event)

    def _lines(self, event: Event) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for it in event["items"]:
            if it["item_type"] == "EXAM":
                code = it["item_code"]
                fund = fund_share(event, it["amount_fen"])
                e = out.get(code)
                if e is None:
                    out[code] = [event["institution_id"], fund]
                else:
                    e[1] += fund
        return out

    def _measure(self, vals: list[Any], i: int, j: int) -> float:
        return j - i

    def _over(self, m: float) -> bool:
        return m >= self._min

    def _describe(
        self, sub: str, m: float, vals: list[Any], event: Event
    ) -> tuple[str, float, int]:
        name = next((it["item_name"] for it in event["items"] if it["item_code"] == sub), "")
        phrase = (
            f"{self.params.window_days}天内门诊重复检查{sub}({name}){int(m)}次(阈值{self._min})"
        )
        return phrase, m / self._min, sum(v[2] for v in vals)
