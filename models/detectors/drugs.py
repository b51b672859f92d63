"""Whether the boxes sold match what was billed: drug swaps and resold trace codes."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Self

from models.alerts import Alert, make_alert
from models.detector import (
    DUE,
    NO_ALERTS,
    SETTLEMENT,
    TRACE_SCAN,
    BaseDetector,
    Event,
    Params,
    Result,
    State,
    fund_share,
    trigger,
)
from models.reference import Registry
from models.window import DAY_MS, MINUTE_MS, add, evict_before, fmt_local, new, trim


@dataclass(kw_only=True)
class DrugSwapParams(Params):
    scan_grace_minutes: float = 60.0
    """A billed drug line needs a sale scan within this long after the settlement."""
    visit_types: tuple[str, ...] = ("OUTPATIENT", "INPATIENT", "PHARMACY")
    """Settlements whose drug lines must be scanned (应扫尽扫 applies everywhere)."""
    severity_level: int = 3
    max_scans: int = 200


class DrugSwap(BaseDetector):
    """串换药品 — billing one drug while dispensing another, or nothing.

    Keyed by settlement id; joins the settlement with the SALE scans that carry its id, in
    either arrival order. Fires (a) as soon as a sale scan's `drug_code` is not among the billed
    drug item codes, or (b) by timer when the watermark passes settlement time + **60 min** and
    some billed drug code has no sale scan by then. At most one alert per settlement ((a) wins).
    Money at risk: the fund share of billed drug lines without a matching scan.

    >>> det = DrugSwap()
    >>> settle = {"_topic": "settlement", "event_id": "S1", "event_time": 0,
    ...           "institution_id": "P440300000001", "region_code": "440300",
    ...           "visit_type": "PHARMACY", "total_fen": 3000, "fund_paid_fen": 3000,
    ...           "reversal_of": None,
    ...           "items": [{"item_type": "DRUG", "item_code": "A", "amount_fen": 3000}]}
    >>> _, state = det.process(settle, None, 0, "S1")
    >>> scan = {"_topic": "trace_scan", "event_id": "T1", "event_time": 60_000,
    ...         "scan_type": "SALE", "settlement_id": "S1", "drug_code": "B",
    ...         "institution_id": "P440300000001", "region_code": "440300"}
    >>> alerts, state = det.process(scan, state, 0, "S1")
    >>> alerts[0].explanation
    '[drug_swap] 销售扫码药品B不在结算药品A中'
    >>> alerts[0].evidence_event_ids, alerts[0].amount_at_risk_fen
    (['T1', 'S1'], 3000)
    """

    id = "drug_swap"
    topics = frozenset({SETTLEMENT, TRACE_SCAN})
    params_class = DrugSwapParams
    params: DrugSwapParams

    def __init__(self, params: DrugSwapParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._grace = int(self.params.scan_grace_minutes * MINUTE_MS)
        self._visit_types = frozenset(self.params.visit_types)

    def keys(self, event: Event) -> list[str]:
        if event["_topic"] == TRACE_SCAN:
            sid = event["settlement_id"]
            return [sid] if sid is not None and event["scan_type"] == "SALE" else []
        if event["reversal_of"] is None and event["visit_type"] in self._visit_types:
            for it in event["items"]:
                if it["item_type"] == "DRUG":
                    return [event["event_id"]]
        return []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        t = event["event_time"]
        if event["_topic"] == TRACE_SCAN:
            if state is None:
                state = {"sc": [], DUE: t + self._grace}
            scans = state["sc"]
            eid = event["event_id"]
            if any(sc[0] == eid for sc in scans) or len(scans) >= self.params.max_scans:
                return NO_ALERTS, state
            scans.append([eid, t, event["drug_code"]])
            if "s" in state and not state.get("m") and event["drug_code"] not in state["d"]:
                return [self._mismatch(state)], state
            return NO_ALERTS, state
        if state is not None and "s" in state:
            return NO_ALERTS, state  # re-delivered settlement
        billed: dict[str, int] = {}
        for it in event["items"]:
            if it["item_type"] == "DRUG":
                code = it["item_code"]
                billed[code] = billed.get(code, 0) + fund_share(event, it["amount_fen"])
        if state is None:
            state = {"sc": []}
        state["s"] = [event["event_id"], t, event["institution_id"], event["region_code"]]
        state["d"] = billed
        state[DUE] = t + self._grace
        if any(sc[2] not in billed for sc in state["sc"]):
            return [self._mismatch(state)], state
        return NO_ALERTS, state

    def _mismatch(self, state: State) -> Alert:
        """Triggered by the settlement whichever arrived last, so ids ignore arrival order."""
        state["m"] = 1
        s, billed, scans = state["s"], state["d"], state["sc"]
        scanned = {sc[2] for sc in scans}
        bad = [sc for sc in scans if sc[2] not in billed]
        return make_alert(
            self,
            "institution",
            s[2],
            trigger(s[0], s[1]),
            [sc[0] for sc in bad],
            score=1.0,
            severity=self.params.severity_level,
            amount_at_risk_fen=sum(v for c, v in billed.items() if c not in scanned),
            explanation_zh=(
                f"销售扫码药品{','.join(sorted({sc[2] for sc in bad}))}"
                f"不在结算药品{','.join(sorted(billed))}中"
            ),
            institution_id=s[2],
            region_code=s[3],
        )

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        s = state.get("s")
        if s is None or state.get("m"):
            return NO_ALERTS, None
        if s[1] + self._grace > watermark_ms:
            return NO_ALERTS, state
        limit = s[1] + self._grace
        scanned = {sc[2] for sc in state["sc"] if sc[1] <= limit}
        billed = state["d"]
        missing = sorted(c for c in billed if c not in scanned)
        if not missing:
            return NO_ALERTS, None
        alert = make_alert(
            self,
            "institution",
            s[2],
            trigger(s[0], s[1]),
            [],
            score=len(missing) / max(1, len(billed)),
            severity=self.params.severity_level,
            amount_at_risk_fen=sum(billed[c] for c in missing),
            explanation_zh=(
                f"结算药品{','.join(missing)}在结算后"
                f"{self.params.scan_grace_minutes:g}分钟内无销售扫码"
            ),
            institution_id=s[2],
            region_code=s[3],
        )
        return [alert], None


@dataclass(kw_only=True)
class TraceCodeResaleParams(Params):
    retention_days: int = 30
    """How long a sold box is remembered (bounded state)."""
    max_history: int = 16
    severity_level: int = 3


class TraceCodeResale(BaseDetector):
    """追溯码重复 — the same box sold twice.

    Keyed by trace code; keeps the code's SALE and RETURN scans (30 days). Fires on a SALE whose
    preceding scan of the code (in event time) is a SALE, i.e. the previous sale was not followed
    by a RETURN, at any institution. Two sale scans of one settlement are one sale scanned twice,
    not a resale. An out-of-order sale that lands before a recorded one flags that later sale.
    Each resale fires once. Money at risk: the box price from the drug catalogue, when known.

    >>> det = TraceCodeResale()
    >>> code = "81234560000000000001"
    >>> base = {"trace_code": code, "drug_code": "XA01", "scan_type": "SALE",
    ...         "region_code": "440300"}
    >>> _, state = det.process({**base, "event_id": "T1", "event_time": 0,
    ...     "institution_id": "P440300000001", "settlement_id": "S1"}, None, 0, code)
    >>> alerts, state = det.process({**base, "event_id": "T2", "event_time": 86_400_000,
    ...     "institution_id": "P440300000002", "settlement_id": "S2"}, state, 0, code)
    >>> for part in alerts[0].explanation.split(","):
    ...     print(part)
    [trace_code_resale] 追溯码81234560000000000001于1970-01-01 08:00在P440300000001销售且未退货
    1970-01-02 08:00在P440300000002再次销售
    """

    id = "trace_code_resale"
    topics = frozenset({TRACE_SCAN})
    params_class = TraceCodeResaleParams
    params: TraceCodeResaleParams

    def __init__(
        self,
        params: TraceCodeResaleParams | dict[str, Any] | None = None,
        registry: Registry | None = None,
    ) -> None:
        super().__init__(params)
        self.registry = registry if registry is not None else Registry()
        self._retention = self.params.retention_days * DAY_MS

    @classmethod
    def create(
        cls, registry: Registry, params: TraceCodeResaleParams | dict[str, Any] | None = None
    ) -> Self:
        return cls(params, registry)

    def keys(self, event: Event) -> list[str]:
        return [event["trace_code"]] if event["scan_type"] != "STOCK_IN" else []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        if state is None:
            state = {"h": new()}
        hist = state["h"]
        evict_before(hist, watermark_ms - self._retention)
        t = event["event_time"]
        sale = event["scan_type"] == "SALE"
        entry = [
            event["event_id"],
            "S" if sale else "R",
            event["institution_id"],
            event["settlement_id"],
            0,
            t,
            event["region_code"],
        ]
        if not add(hist, t, entry):
            return NO_ALERTS, state
        trim(hist, self.params.max_history)
        alerts = NO_ALERTS
        if sale:
            vals = hist["v"]
            i = bisect_right(hist["t"], t) - 1
            while i >= 0 and vals[i] is not entry:
                i -= 1
            # each resale fires once, triggered by the later sale (arrival order is moot)
            found = []
            if i > 0 and _resold(vals[i - 1], entry):
                found.append(self._alert(event, key, vals[i - 1], entry))
            if 0 <= i < len(vals) - 1 and not vals[i + 1][4] and _resold(entry, vals[i + 1]):
                found.append(self._alert(event, key, entry, vals[i + 1]))
            if found:
                alerts = found
        state[DUE] = hist["t"][-1] + self._retention + 1
        return alerts, state

    def _alert(self, event: Event, key: str, first: list[Any], again: list[Any]) -> Alert:
        again[4] = 1
        drug = self.registry.drugs.get(event["drug_code"])
        return make_alert(
            self,
            "trace_code",
            key,
            trigger(again[0], again[5]),
            [first[0]],
            score=1.0,
            severity=self.params.severity_level,
            amount_at_risk_fen=drug.unit_price_fen if drug is not None else 0,
            explanation_zh=(
                f"追溯码{key}于{fmt_local(first[5])}在{first[2]}销售且未退货,"
                f"{fmt_local(again[5])}在{again[2]}再次销售"
            ),
            institution_id=again[2],
            region_code=again[6],
        )


def _resold(before: list[Any], after: list[Any]) -> bool:
    """`after` is a sale following the sale `before` with no return between."""
    if before[1] != "S" or after[1] != "S":
        return False
    return before[3] is None or before[3] != after[3]
