"""How a settlement is billed: duplicates, split packages, and when it was settled.

The package rule library (`models/rules/packages.toml`) is data: the detector loads it once and
stamps its version on alerts as `config_version`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.alerts import make_alert
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
    fund_share,
    yuan,
)
from models.window import (
    HOUR_MS,
    MINUTE_MS,
    add,
    fmt_local,
    local_day,
    local_day_start,
    new,
    open_window,
    span,
    trim,
)

PACKAGES_PATH = Path(__file__).resolve().parent.parent / "rules" / "packages.toml"
WEEKDAYS_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


@dataclass(kw_only=True)
class DuplicateBillingParams(Params):
    window_minutes: float = 10.0
    severity_level: int = 3
    max_events: int = 50


class DuplicateBilling(BaseDetector):
    """重复收费/重复结算 — the same settlement charged twice.

    Keyed by person × institution. Fires on a settlement (not a reversal) with the same item codes
    and quantities and the same total as another one within **10 min** before or after it; a
    reversal removes its original, so settle → reverse → settle again is clean. Every copy gets
    its own alert (each is money paid twice); a re-delivered event (same id) is ignored. Money at
    risk: the copy's fund-paid amount.

    >>> det = DuplicateBilling()
    >>> base = {"person_id": "P1", "institution_id": "H440300000001", "region_code": "440300",
    ...         "total_fen": 5000, "fund_paid_fen": 3500, "reversal_of": None,
    ...         "items": [{"item_code": "XA01", "quantity": 2}]}
    >>> _, state = det.process({**base, "event_id": "S1", "event_time": 0}, None, 0, "k")
    >>> copy = {**base, "event_id": "S2", "event_time": 180_000}
    >>> alerts, state = det.process(copy, state, 0, "k")
    >>> alerts[0].explanation
    '[duplicate_billing] 3分钟内重复结算相同项目、数量与金额50.00元(时限10分钟)'
    >>> alerts[0].evidence_event_ids
    ['S1', 'S2']
    """

    id = "duplicate_billing"
    topics = frozenset({SETTLEMENT})
    params_class = DuplicateBillingParams
    params: DuplicateBillingParams

    def __init__(self, params: DuplicateBillingParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._width = int(self.params.window_minutes * MINUTE_MS)

    def keys(self, event: Event) -> list[str]:
        if event["reversal_of"] is None and not event["items"]:
            return []
        return [f"{event['person_id']}|{event['institution_id']}"]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        width = self._width
        state, win = open_window(event, state, watermark_ms, width)
        if win is None:
            return NO_ALERTS, state
        t = event["event_time"]
        eid = event["event_id"]
        lines = sorted(f"{it['item_code']}*{it['quantity']}" for it in event["items"])
        sig = digest([*lines, str(event["total_fen"])])
        if not add(win, t, [eid, sig]):
            return NO_ALERTS, state
        trim(win, self.params.max_events)
        alerts = NO_ALERTS
        i, j = span(win, t - width, t + width)
        times, vals = win["t"], win["v"]
        match = None
        for k in range(i, j):
            v = vals[k]
            if v[1] == sig and v[0] != eid and (match is None or abs(times[k] - t) < match[0]):
                match = (abs(times[k] - t), v[0])
        if match is not None:
            p = self.params
            alerts = [
                make_alert(
                    self,
                    "institution",
                    event["institution_id"],
                    event,
                    [match[1]],
                    score=1.0,
                    severity=p.severity_level,
                    amount_at_risk_fen=event["fund_paid_fen"],
                    explanation_zh=(
                        f"{match[0] // MINUTE_MS}分钟内重复结算相同项目、数量与金额"
                        f"{yuan(event['total_fen'])}元(时限{p.window_minutes:g}分钟)"
                    ),
                    institution_id=event["institution_id"],
                    region_code=event["region_code"],
                )
            ]
        state[DUE] = times[-1] + width + 1
        return alerts, state


@dataclass(frozen=True, slots=True)
class Package:
    """A packaged item (套餐) and the sub-items that must not be billed in its place."""

    code: str
    name: str
    price_fen: int
    min_sub_items: int
    sub_items: tuple[tuple[str, str, int], ...]  # (code, name, price_fen)


def load_packages(path: Path | str | None = None) -> tuple[str, tuple[Package, ...]]:
    """(library version, packages) from the rule library TOML."""
    with Path(path or PACKAGES_PATH).open("rb") as fh:
        data = tomllib.load(fh)
    packages = tuple(
        Package(
            code=p["code"],
            name=p["name"],
            price_fen=int(p["price_fen"]),
            min_sub_items=int(p.get("min_sub_items", 3)),
            sub_items=tuple((s["code"], s["name"], int(s["price_fen"])) for s in p["sub_items"]),
        )
        for p in data.get("package", ())
    )
    return str(data.get("version", "")), packages


@dataclass(kw_only=True)
class SplitChargingParams(Params):
    packages_path: str | None = None
    """Rule library; None = models/rules/packages.toml."""
    severity_level: int = 2


class SplitCharging(BaseDetector):
    """分解收费 — a packaged item billed as its sub-items.

    Stateless. Fires on a settlement billing **at least 3** (the package's `min_sub_items`)
    distinct sub-items of one package from the rule library. One alert per settlement, naming
    each split package. Money at risk: the fund share of what the sub-items cost over the package
    price. `config_version` carries the library version.

    >>> det = SplitCharging()
    >>> ev = {"event_id": "S1", "event_time": 0, "institution_id": "H440300000001",
    ...       "region_code": "440300", "total_fen": 7000, "fund_paid_fen": 7000,
    ...       "reversal_of": None, "items": [
    ...           {"item_code": "250305002", "amount_fen": 2500},
    ...           {"item_code": "250305003", "amount_fen": 2500},
    ...           {"item_code": "250305004", "amount_fen": 2000}]}
    >>> alerts, _ = det.process(ev, None, 0, "H440300000001")
    >>> for part in alerts[0].explanation.split(","):
    ...     print(part)
    [split_charging] 肝功能检查(组合)(250305001)拆分为3项子项目计费(阈值3)
    子项合计70.00元
    套餐价60.00元
    >>> alerts[0].amount_at_risk_fen, alerts[0].config_version
    (1000, '2026.11.1')
    """

    id = "split_charging"
    topics = frozenset({SETTLEMENT})
    stateful = False
    params_class = SplitChargingParams
    params: SplitChargingParams

    def __init__(
        self,
        params: SplitChargingParams | dict[str, Any] | None = None,
        packages: tuple[Package, ...] | None = None,
        library_version: str | None = None,
    ) -> None:
        super().__init__(params)
        if packages is None:
            library_version, packages = load_packages(self.params.packages_path)
        self.packages = packages
        self.config_version = library_version
        self._sub: dict[str, int] = {}
        for n, pkg in enumerate(packages):
            for code, _, _ in pkg.sub_items:
                self._sub[code] = n

    def keys(self, event: Event) -> list[str]:
        if event["reversal_of"] is None:
            sub = self._sub
            for it in event["items"]:
                if it["item_code"] in sub:
                    return [event["institution_id"]]
        return []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        per: dict[int, dict[str, int]] = {}
        for it in event["items"]:
            n = self._sub.get(it["item_code"])
            if n is not None:
                codes = per.setdefault(n, {})
                codes[it["item_code"]] = codes.get(it["item_code"], 0) + it["amount_fen"]
        phrases: list[str] = []
        ratio, amount = 0.0, 0
        for n, codes in sorted(per.items()):
            pkg = self.packages[n]
            if len(codes) >= pkg.min_sub_items:
                billed = sum(codes.values())
                phrases.append(
                    f"{pkg.name}({pkg.code})拆分为{len(codes)}项子项目计费(阈值{pkg.min_sub_items}),"
                    f"子项合计{yuan(billed)}元,套餐价{yuan(pkg.price_fen)}元"
                )
                ratio = max(ratio, len(codes) / pkg.min_sub_items)
                amount += fund_share(event, max(0, billed - pkg.price_fen))
        if not phrases:
            return NO_ALERTS, None
        alert = make_alert(
            self,
            "institution",
            event["institution_id"],
            event,
            [],
            score=ratio,
            severity=self.params.severity_level,
            amount_at_risk_fen=amount,
            explanation_zh="；".join(phrases),
            institution_id=event["institution_id"],
            region_code=event["region_code"],
        )
        return [alert], None


@dataclass(kw_only=True)
class MaintenanceWindowParams(Params):
    windows: tuple[tuple[int, str, str], ...] = ((6, "01:00", "04:00"),)
    """(local weekday Monday=0…Sunday=6, start HH:MM, end HH:MM exclusive), same day."""
    severity_level: int = 2


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class MaintenanceWindow(BaseDetector):
    """系统维护时段交易 — settlements inside a configured maintenance window.

    Fires on any settlement whose local time falls in a maintenance window (default Sundays
    **01:00–04:00** Asia/Shanghai). One alert per institution per window occurrence (the first
    settlement seen; later ones in the same occurrence are the same episode). Money at risk: the
    triggering settlement's fund-paid amount.

    >>> det = MaintenanceWindow()
    >>> sunday_0230 = 1763231400000  # 2025-11-16 02:30 local, a Sunday
    >>> ev = {"event_id": "S1", "event_time": sunday_0230, "institution_id": "H440300000001",
    ...       "region_code": "440300", "fund_paid_fen": 800}
    >>> det.keys(ev)
    ['H440300000001']
    >>> alerts, state = det.process(ev, None, 0, "H440300000001")
    >>> alerts[0].explanation
    '[maintenance_window] 系统维护时段(周日01:00-04:00)内发生结算,结算时间2025-11-16 02:30'
    """

    id = "maintenance_window"
    topics = frozenset({SETTLEMENT})
    params_class = MaintenanceWindowParams
    params: MaintenanceWindowParams

    def __init__(self, params: MaintenanceWindowParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._by_day: dict[int, list[tuple[int, int, str]]] = {}
        for weekday, start, end in self.params.windows:
            s, e = _minutes(start), _minutes(end)
            if not 0 <= s < e <= 1440:
                raise ValueError(f"maintenance window {start}-{end} must lie within one day")
            label = f"{WEEKDAYS_ZH[weekday]}{start}-{end}"
            self._by_day.setdefault(int(weekday), []).append((s, e, label))

    def _window(self, t: int) -> tuple[int, int, str] | None:
        day = local_day(t)
        spans = self._by_day.get((day + 3) % 7)
        if spans:
            start = local_day_start(day)
            minute = (t - start) // MINUTE_MS
            for s, e, label in spans:
                if s <= minute < e:
                    return start + s * MINUTE_MS, start + e * MINUTE_MS, label
        return None

    def keys(self, event: Event) -> list[str]:
        return [event["institution_id"]] if self._window(event["event_time"]) else []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        window = self._window(event["event_time"])
        if window is None:
            return NO_ALERTS, state
        start, end, label = window
        if state is not None and state.get("f") == start:
            return NO_ALERTS, state
        alert = make_alert(
            self,
            "institution",
            key,
            event,
            [],
            score=1.0,
            severity=self.params.severity_level,
            amount_at_risk_fen=event["fund_paid_fen"],
            explanation_zh=f"系统维护时段({label})内发生结算,结算时间{fmt_local(event['event_time'])}",
            institution_id=key,
            region_code=event["region_code"],
        )
        return [alert], {"f": start, DUE: end}


@dataclass(kw_only=True)
class OddHourSalesParams(Params):
    start_hour: int = 0
    end_hour: int = 5
    """Local hours [start, end) of the night."""
    min_sales: int = 3
    max_events: int = 100


class OddHourSales(BaseDetector):
    """药店刷卡套现(异常时段) — pharmacy sales in the small hours.

    Per pharmacy and local night, counts pharmacy settlements between **00:00 and 05:00**; fires
    once per night when the count reaches **3**, with the night's sales so far as evidence.
    Money at risk: their fund-paid total.

    >>> det = OddHourSales()
    >>> night = 1763310600000  # 2025-11-17 00:30 local
    >>> state = None
    >>> for i in range(3):
    ...     ev = {"event_id": f"S{i}", "event_time": night + i * 3_600_000,
    ...           "institution_id": "P440300000001", "region_code": "440300",
    ...           "visit_type": "PHARMACY", "fund_paid_fen": 2000, "reversal_of": None}
    ...     alerts, state = det.process(ev, state, 0, "P440300000001")
    >>> alerts[0].explanation
    '[odd_hour_sales] 2025-11-17夜间00:00-05:00药店结算3笔(阈值3)'
    """

    id = "odd_hour_sales"
    topics = frozenset({SETTLEMENT})
    params_class = OddHourSalesParams
    params: OddHourSalesParams

    def __init__(self, params: OddHourSalesParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._start = self.params.start_hour * HOUR_MS
        self._end = self.params.end_hour * HOUR_MS

    def keys(self, event: Event) -> list[str]:
        if event["visit_type"] != "PHARMACY" or event["reversal_of"] is not None:
            return []
        offset = event["event_time"] - local_day_start(local_day(event["event_time"]))
        return [event["institution_id"]] if self._start <= offset < self._end else []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        t = event["event_time"]
        day = local_day(t)
        day_start = local_day_start(day)
        if not self._start <= t - day_start < self._end:
            return NO_ALERTS, state
        if state is None:
            state = {"n": {}}
        nights: dict[str, Any] = state["n"]
        for d in [d for d in nights if local_day_start(int(d)) + self._end < watermark_ms]:
            del nights[d]
        night = nights.get(str(day))
        if night is None:
            night = nights[str(day)] = new()
        alerts = NO_ALERTS
        if add(night, t, [event["event_id"], event["fund_paid_fen"]]):
            trim(night, self.params.max_events)
            n = len(night["t"])
            p = self.params
            if n >= p.min_sales and not night.get("f"):
                night["f"] = 1
                alerts = [
                    make_alert(
                        self,
                        "institution",
                        key,
                        event,
                        [v[0] for v in night["v"]],
                        score=n / p.min_sales,
                        severity=self.severity(n / p.min_sales),
                        amount_at_risk_fen=sum(v[1] for v in night["v"]),
                        explanation_zh=(
                            f"{fmt_local(day_start)[:10]}夜间{p.start_hour:02d}:00-"
                            f"{p.end_hour:02d}:00药店结算{n}笔(阈值{p.min_sales})"
                        ),
                        institution_id=key,
                        region_code=event["region_code"],
                    )
                ]
        state[DUE] = max(local_day_start(int(d)) for d in nights) + self._end + 1
        return alerts, state
