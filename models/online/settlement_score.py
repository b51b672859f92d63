"""结算异常评分 — a multivariate online anomaly score for every settlement, calibrated per type.

Features (each scaled to [0, 1]) of the settlement and of its person's recent history:

| # | feature | scale |
|---|---|---|
| 0 | amount | log1p(yuan) / 10 |
| 1 | fund share | fund-paid / total |
| 2 | billed lines | lines / 20 |
| 3 | drug share | drug amount / total |
| 4 | exam share | exam amount / total |
| 5 | local hour | hour / 24 |
| 6 | visit type | outpatient 0, inpatient 0.5, pharmacy 1 |
| 7 | person's settlements in the previous 24 h | n / 8 |
| 8 | person's distinct institutions in the previous 7 days | n / 8 |
| 9 | person's spend in the previous 30 days | log1p(yuan) / 12 |
| 10 | time since the person's previous settlement | log1p(hours) / log1p(720), none = 1 |

The model is half-space trees (`models.online.hst`, river's `HalfSpaceTrees` over plain data):
`streams/bench/anomaly_models.py` compares it with river's OneClassSVM, LocalOutlierFactor and
a GaussianScorer on the amount, on the simulator's labelled world (docs/detection.md has the
figures and why). A raw tree score does not mean the same at a pharmacy and at a hospital, so
it is **calibrated**: per institution type a decaying histogram of past raw scores turns the
score into its running quantile, and the threshold is a quantile (**0.995**: about 5 alerts
per 1,000 settlements of each type).

State, on the person stage (keyed by person): each person's last 30 days of settlements
(`[time, total, institution, event id]`, at most 64; a re-delivered settlement is skipped),
and one shared model per partition under the key `__model__`: the trees' masses, the
calibration histograms, running feature means/variances for the explanation, the model version
`v` (a state of another version is discarded and the model warms up again). `keys()` names the
person first, then the model: the person call computes the person's features and hands them to
the model call for the same event (the runner calls a detector's keys one after the other for
one event), so both states stay plain JSON.
"""

from __future__ import annotations

import math
from bisect import insort_right
from dataclasses import dataclass
from typing import Any, ClassVar

from models.alerts import make_alert
from models.detector import DUE, NO_ALERTS, SETTLEMENT, Event, Params, Result, State, yuan
from models.online.common import ModelDetector
from models.online.hst import Forest
from models.window import DAY_MS, HOUR_MS, LOCAL_OFFSET_MS

MODEL_KEY = "__model__"
MODEL_VERSION = "hst-1"
"""Bump when features, scaling or tree structure change: stored models are then discarded."""

FEATURES_ZH = (
    ("结算金额", "元"),
    ("统筹占比", ""),
    ("项目数", "项"),
    ("药品占比", ""),
    ("检查占比", ""),
    ("结算时刻", "时"),
    ("就诊类型", ""),
    ("近24小时结算次数", "次"),
    ("近7日就诊机构数", "家"),
    ("近30日费用", "元"),
    ("距上次结算", "小时"),
)
N_FEATURES = len(FEATURES_ZH)
_BINS = 100
_VISIT = {"OUTPATIENT": 0.0, "INPATIENT": 0.5, "PHARMACY": 1.0}
_LOG_MONTH = math.log1p(720.0)


@dataclass(kw_only=True)
class SettlementAnomalyParams(Params):
    alert_quantile: float = 0.995
    """Fires when the score's running quantile within the institution type reaches this."""
    warmup_events: int = 256
    """Settlements the model learns (per partition) before any alert."""
    min_calibration: int = 100
    """Scores in an institution type's histogram before its quantiles are trusted."""
    calibration_window: int = 5000
    """The histogram halves its counts when they reach twice this (old scores fade)."""
    n_trees: int = 10
    height: int = 6
    window_size: int = 128
    """Half-space trees: trees, height, and the reference window (settlements)."""
    seed: int = 42
    person_days: int = 30
    """Days of a person's settlements kept for the context features."""
    max_events: int = 64


_NO_PERSON = [0.0, 0.0, 0.0, 1.0]
"""Features 7..10 when the person call did not run first (the model key alone)."""


def _time_of(w: list[Any]) -> int:
    return w[0]


def _clip(v: float) -> float:
    return 0.0 if v < 0.0 else 1.0 if v > 1.0 else v


def settlement_features(event: Event) -> list[float]:
    """Features 0..6 (the settlement itself)."""
    total = max(0, int(event["total_fen"]))
    drug = exam = 0
    for it in event["items"]:
        kind = it.get("item_type")
        if kind == "DRUG":
            drug += max(0, int(it.get("amount_fen", 0)))
        elif kind == "EXAM":
            exam += max(0, int(it.get("amount_fen", 0)))
    hour = ((event["event_time"] + LOCAL_OFFSET_MS) % DAY_MS) / HOUR_MS
    return [
        _clip(math.log1p(total / 100) / 10),
        _clip(event["fund_paid_fen"] / total) if total > 0 else 0.0,
        _clip(len(event["items"]) / 20),
        _clip(drug / total) if total > 0 else 0.0,
        _clip(exam / total) if total > 0 else 0.0,
        hour / 24,
        _VISIT.get(event.get("visit_type") or "", 0.0),
    ]


def person_features(window: list[list[Any]], t: int) -> list[float]:
    """Features 7..10 from the person's earlier settlements `[time, total, institution, id]`."""
    day_start, week_start = t - DAY_MS, t - 7 * DAY_MS
    day = spend = 0
    week = set()
    last = None
    for w in window:
        wt = w[0]
        if wt < t:
            if wt >= day_start:
                day += 1
            if wt >= week_start:
                week.add(w[2])
            if w[1] > 0:
                spend += w[1]
            if last is None or wt > last:
                last = wt
    gap = 1.0 if last is None else _clip(math.log1p((t - last) / HOUR_MS) / _LOG_MONTH)
    return [_clip(day / 8), _clip(len(week) / 8), _clip(math.log1p(spend / 100) / 12), gap]


def _raw(i: int, x: float) -> str:
    """A feature's value in its own unit, for the explanation."""
    if i == 0:
        return yuan(round(math.expm1(x * 10) * 100))
    if i in (1, 3, 4):
        return f"{x:.0%}"
    if i == 2:
        return f"{round(x * 20)}"
    if i == 5:
        return f"{x * 24:.1f}"
    if i == 6:
        return {0.0: "门诊", 0.5: "住院"}.get(x, "药店")
    if i in (7, 8):
        return f"{round(x * 8)}"
    if i == 9:
        return yuan(round(math.expm1(x * 12) * 100))
    return "无" if x >= 1.0 else f"{math.expm1(x * _LOG_MONTH):.1f}"


class SettlementAnomaly(ModelDetector):
    """结算异常评分 — a settlement unlike what the model has learned, for its institution type.

    Scores every settlement (reversals excluded) with half-space trees over 11 features of the
    settlement and the person's last 30 days (module docstring), learns it, and turns the raw
    score into its running quantile among the scores of the same institution type. Fires when
    the quantile reaches **0.995**, once the model has learned **256** settlements and the type
    has **100** scores. The explanation gives the raw score, the quantile and the three features
    furthest from their running means (z-values), with their figures. Money at risk: the
    settlement's fund-paid amount.

    >>> det = SettlementAnomaly({"warmup_events": 64, "window_size": 32, "min_calibration": 30})
    >>> states = {}
    >>> def settle(i, amount, hour):
    ...     ev = {"event_id": f"S{i}", "event_time": 1763337600000 + i * 3_600_000 // 10
    ...           + hour * 3_600_000, "person_id": f"R{i % 40}",
    ...           "institution_id": "P440300000001", "institution_type": "PHARMACY",
    ...           "region_code": "440300", "visit_type": "PHARMACY", "reversal_of": None,
    ...           "total_fen": amount, "fund_paid_fen": amount // 2,
    ...           "items": [{"item_type": "DRUG", "amount_fen": amount}]}
    ...     out = []
    ...     for key in det.keys(ev):
    ...         alerts, states[key] = det.process(ev, states.get(key), 0, key)
    ...         out += alerts
    ...     return out
    >>> quiet = [settle(i, 3000 + 10 * (i % 7), 0) for i in range(200)]
    >>> sum(map(len, quiet))
    0
    >>> alert = settle(200, 900000, 12)[0]
    >>> print(alert.explanation.split(";")[1].split("、")[0])
    主要因素:结算金额9000.00元(z=8.4)
    >>> alert.explanation.startswith("[settlement_anomaly] 结算异常分"), alert.severity
    (True, 3)
    """

    id = "settlement_anomaly"
    entity: ClassVar[str] = "person"
    topics = frozenset({SETTLEMENT})
    params_class = SettlementAnomalyParams
    params: SettlementAnomalyParams

    def __init__(self, params: SettlementAnomalyParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        p = self.params
        self.forest = Forest(N_FEATURES, p.n_trees, p.height, p.window_size, seed=p.seed)
        self.model_version = f"{MODEL_VERSION}/{p.n_trees}x{p.height}/{p.window_size}/{p.seed}"
        self._context: tuple[str, list[float]] | None = None

    def keys(self, event: Event) -> list[str]:
        if event.get("reversal_of") is not None:
            return []
        return [event["person_id"], MODEL_KEY]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        if key == MODEL_KEY:
            return self._score(event, state)
        t = event["event_time"]
        p = self.params
        eid = event["event_id"]
        if state is None:
            window: list[list[Any]] = []
            state = {"w": window}
        else:
            window = state["w"]
            for w in window:
                if w[3] == eid:  # re-delivered: neither counted nor learnt again
                    self._context = (eid, None)
                    return NO_ALERTS, state
        self._context = (eid, person_features(window, t))
        # the window is in time order: what left the last `person_days` is a prefix
        cutoff = max(t, watermark_ms) - p.person_days * DAY_MS
        old = 0
        while old < len(window) and window[old][0] < cutoff:
            old += 1
        if old:
            del window[:old]
        entry = [t, int(event["total_fen"]), event["institution_id"], eid]
        if not window or window[-1][0] <= t:
            window.append(entry)
        else:  # after every entry of the same time, as a stable sort would put it
            insort_right(window, entry, key=_time_of)
        del window[: max(0, len(window) - p.max_events)]
        state[DUE] = window[-1][0] + p.person_days * DAY_MS + 1
        return NO_ALERTS, state

    def _score(self, event: Event, state: State | None) -> Result:
        p = self.params
        ctx = self._context
        self._context = None
        person = _NO_PERSON
        if ctx is not None and ctx[0] == event["event_id"]:
            if ctx[1] is None:
                return NO_ALERTS, state  # the person call saw this settlement before
            person = ctx[1]
        x = settlement_features(event) + person
        if state is None or state.get("v") != self.model_version:
            state = {"v": self.model_version, "m": self.forest.new_state(), "k": 0, "c": {}}
            state["s"] = [[0.5, 0.01] for _ in range(N_FEATURES)]
        model = state["m"]
        scored = model["w"] != 0  # before learning: a reference window to score against
        raw = self.forest.score_learn(model, x)
        k = state["k"]
        state["k"] = k + 1
        # calibration: the raw score's quantile among this institution type's past scores
        kind = str(event.get("institution_type") or "?")
        calibration = state["c"]
        hist = calibration.get(kind)
        if hist is None:
            hist = calibration[kind] = [[0.0] * _BINS, 0.0]
        counts, total = hist
        b = min(_BINS - 1, int(raw * _BINS))
        q = (sum(counts[:b]) + 0.5 * counts[b]) / total if total > 0 else 0.0
        counts[b] += 1.0
        total += 1.0
        if total >= 2 * p.calibration_window:
            counts[:] = [c / 2 for c in counts]
            total /= 2
        hist[1] = total
        state[DUE] = event["event_time"] + p.person_days * DAY_MS
        stats = state["s"]
        fires = k >= p.warmup_events and total > p.min_calibration and scored
        if fires and q >= p.alert_quantile:
            # the features' z-values against the running means before this settlement
            z = [(x[i] - stats[i][0]) / math.sqrt(stats[i][1] + 1e-4) for i in range(N_FEATURES)]
        else:
            z = None
        # running means and variances of the features (EWMA), for the explanation
        for xi, st in zip(x, stats, strict=True):
            m, v = st
            st[0] = m + 0.01 * (xi - m)
            st[1] = (1 - 0.01) * (v + 0.01 * (xi - m) ** 2)
        if z is None:
            return NO_ALERTS, state
        top = sorted(range(N_FEATURES), key=lambda i: -abs(z[i]))[:3]
        drivers = "、".join(
            f"{FEATURES_ZH[i][0]}{_raw(i, x[i])}{FEATURES_ZH[i][1]}(z={z[i]:.1f})" for i in top
        )
        alert = make_alert(
            self,
            "person",
            event["person_id"],
            event,
            [],
            score=q,
            severity=3 if q >= 0.999 else 2 if q >= 0.998 else 1,
            amount_at_risk_fen=max(0, int(event["fund_paid_fen"])),
            explanation_zh=(
                f"结算异常分{raw:.2f},在{kind}类机构中位于{q:.1%}分位(阈值{p.alert_quantile:.1%},"
                f"半空间树模型{self.model_version});主要因素:{drivers}"
            ),
            institution_id=event["institution_id"],
            region_code=event.get("region_code"),
        )
        return [alert], state

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        """A person (or the partition's model) idle for `person_days`: dropped."""
        return NO_ALERTS, None
