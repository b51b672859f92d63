"""费用异常增长 — an institution's daily volume, amount and fund payout against its own history."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from models.alerts import Alert, make_alert
from models.detector import DUE, NO_ALERTS, SETTLEMENT, Event, Params, Result, State, yuan
from models.online.common import ModelDetector, add_event_id, day_end, local_day_of
from models.window import DAY_MS, fmt_local

_N, _AMT, _FUND, _SSQ, _IDS, _LAST, _LAST_T = range(7)
_FEATURES = (("n", "结算笔数", "笔"), ("amt", "结算金额", "元"), ("fund", "统筹支付", "元"))


@dataclass(kw_only=True)
class CostGrowthParams(Params):
    min_history_days: int = 5
    """Warm-up: days of the institution's own history (idle days count) before it is judged."""
    history_days: int = 28
    """Closed days kept as the baseline (4 weeks: the weekday factor needs 2 of each day)."""
    spike_z: float = 4.0
    """A single day whose largest feature score reaches this is a spike."""
    cusum_k: float = 1.0
    """CUSUM allowance: the part of each day's score that is taken as noise."""
    cusum_h: float = 4.0
    """A level shift is declared when the CUSUM of the daily score reaches this."""
    cooldown_days: int = 7
    """No second alert for an institution within this many days of the last one."""
    max_evidence: int = 20
    """Settlement ids of a day given as evidence (an open day keeps all its ids: a settlement
    re-delivered through the repartition topic is counted once)."""


class CostGrowth(ModelDetector):
    """费用异常增长 — daily volume, amount and fund payout against the institution's own history.

    Keyed by institution (institution stage). Each settlement (reversals excluded) is added to
    its local day; the day is scored when the watermark passes local midnight. Per feature
    (settlements, amount, fund-paid amount) the score is a z-value against the baseline of the
    previous **28** days (idle days count as zero; the highest day trimmed once there are 5):
    the mean daily count times a weekday factor (same-weekday mean / overall mean, once the
    history holds 2 of that weekday), with a Poisson-style spread `sqrt(mean + 1)`, widened for
    money by the variability of the cost per visit. Why this model: per-institution volumes are
    small (a clinic settles a few times a day), so hour-of-week slots would be mostly empty and
    a learned model (river's SNARIMAX, HalfSpaceTrees) would have too few points per key; a
    count model with an explicit spread is stable from a few days on and explains itself.

    Fires, after a warm-up of **5** days of history, on a **spike** — a day whose largest score
    is **>= 4.0** (at most one per **7** days) — or a **level shift** — the CUSUM
    `S = max(0, S + min(score, 4.0) - 1.0)` reaching **4.0** (a few days of moderately raised
    activity; then nothing for 7 days). A spike restarts the CUSUM, so a shift right after a
    spike (the first day of a shift often is one) is still reported, as "持续偏高" since its
    first day.
    The explanation names the features that drove the score (z >= 2), with the figures.
    Evidence: the settlements of the day (and of the day the shift started). Money at risk: the
    fund payout over its baseline. Limit: hours are not scored (too sparse per institution).

    >>> det = CostGrowth()
    >>> day0 = 20409  # 2025-11-17 local
    >>> state, alerts = None, []
    >>> for d in range(8):
    ...     for i in range(2 if d < 7 else 12):
    ...         ev = {"event_id": f"S{d}_{i}", "event_time": (day0 + d) * 86_400_000 + i * 60_000,
    ...               "institution_id": "P440300000001", "region_code": "440300",
    ...               "total_fen": 5000, "fund_paid_fen": 3500, "reversal_of": None}
    ...         _, state = det.process(ev, state, 0, "P440300000001")
    ...     out, state = det.expire(state, day_end(day0 + d), "P440300000001")
    ...     alerts += out
    >>> for part in alerts[0].explanation.split("、"):
    ...     print(part)
    [cost_growth] 2025-11-24日结算笔数12笔(基线2.0笔,z=5.8)
    结算金额600.00元(基线100.00元,z=5.8)
    统筹支付420.00元(基线70.00元,z=5.8),统筹占比70%;单日突增(阈值z=4)
    """

    id = "cost_growth"
    topics = frozenset({SETTLEMENT})
    params_class = CostGrowthParams
    params: CostGrowthParams

    def keys(self, event: Event) -> list[str]:
        return [event["institution_id"]] if event.get("reversal_of") is None else []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        t = event["event_time"]
        day = local_day_of(t)
        closed = state.get("c") if state is not None else None
        if closed is not None and day <= closed:
            return NO_ALERTS, state  # its day is already scored: too late to count
        if state is None:
            state = {"h": [], "c": None, "s": [0.0, None, []]}
        opened = state.get("o")
        if opened is None:
            opened = state["o"] = {}
        row = opened.get(str(day))
        eid = event["event_id"]
        if row is None:
            row = opened[str(day)] = [0, 0, 0, 0.0, [eid], "", 0]
        elif not add_event_id(row[_IDS], eid):
            return NO_ALERTS, state  # re-delivered (at-least-once repartition): counted once
        amount, fund = int(event["total_fen"]), int(event["fund_paid_fen"])
        row[_N] += 1
        row[_AMT] += amount
        row[_FUND] += fund
        row[_SSQ] += float(amount) * amount
        if t >= row[_LAST_T]:
            row[_LAST], row[_LAST_T] = eid, t
        state["r"] = event.get("region_code")
        state[DUE] = self._due(state)
        return NO_ALERTS, state

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        """Score every day the watermark has closed, oldest first; drop an idle institution."""
        opened: dict[str, list[Any]] = state.get("o", {})
        closing = sorted(int(d) for d in opened if day_end(int(d)) <= watermark_ms)
        if not closing:
            if not opened and state[DUE] <= watermark_ms:
                return NO_ALERTS, None  # idle for the whole history: forget it
            return NO_ALERTS, state
        state = dict(state)
        opened = dict(opened)
        hist: list[list[Any]] = list(state["h"])
        alerts: list[Alert] = []
        for day in closing:
            row = opened.pop(str(day))
            last = hist[-1][0] if hist else None
            if last is not None:
                hist.extend([d, 0, 0, 0, 0.0] for d in range(last + 1, day))
            alert = self._score(state, key, day, row, hist)
            if alert is not None:
                alerts.append(alert)
            hist.append([day, row[_N], row[_AMT], row[_FUND], row[_SSQ]])
            del hist[: max(0, len(hist) - self.params.history_days)]
            state["c"] = day
        state["h"] = hist
        state["o"] = opened
        state[DUE] = self._due(state)
        return alerts, (None if state[DUE] <= watermark_ms else state)

    def _due(self, state: State) -> int:
        opened = state.get("o")
        if opened:
            return min(day_end(int(d)) for d in opened)
        return day_end(state["c"]) + self.params.history_days * DAY_MS

    def _score(
        self, state: State, key: str, day: int, row: list[Any], hist: list[list[Any]]
    ) -> Alert | None:
        p = self.params
        if len(hist) < p.min_history_days:
            return None
        days = hist[-p.history_days :]
        counts = sorted(h[1] for h in days)
        trimmed = counts[:-1] if len(counts) >= 5 else counts
        mean_n = sum(trimmed) / len(trimmed)
        weekday = (day + 3) % 7
        same = [h[1] for h in days if (h[0] + 3) % 7 == weekday]
        factor = 1.0
        if len(same) >= 2:
            factor = min(
                2.0, max(0.5, (sum(same) / len(same) + 1) / (sum(counts) / len(counts) + 1))
            )
        m_n = mean_n * factor
        tot_n = sum(h[1] for h in days)
        tot_amt = sum(h[2] for h in days)
        tot_fund = sum(h[3] for h in days)
        if tot_n > 0:
            cost = tot_amt / tot_n
            var = max(0.0, sum(h[4] for h in days) / tot_n - cost * cost)
            fund_ratio = tot_fund / tot_amt if tot_amt > 0 else 0.0
        else:
            cost = row[_AMT] / row[_N]
            var, fund_ratio = 0.0, row[_FUND] / row[_AMT] if row[_AMT] > 0 else 0.0
        cv2 = var / (cost * cost) if cost > 0 else 0.0
        spread_n = math.sqrt(m_n + 1.0)
        money = math.sqrt((m_n + 1.0) * (1.0 + cv2))
        base = {"n": m_n, "amt": m_n * cost, "fund": m_n * cost * fund_ratio}
        spread = {"n": spread_n, "amt": cost * money, "fund": cost * fund_ratio * money}
        value = {"n": row[_N], "amt": row[_AMT], "fund": row[_FUND]}
        z = {
            f: (value[f] - base[f]) / spread[f] if spread[f] > 0 else 0.0
            for f in ("n", "amt", "fund")
        }
        score = max(z.values())
        last_spike, last_shift = state.get("f") or [None, None]
        if last_shift is not None and day - last_shift < p.cooldown_days:
            state["s"] = [0.0, None, []]  # a shift alerted: start counting after the cooldown
            return None
        s, since, since_ids = state["s"]
        shift, cusum = False, 0.0
        if score >= p.spike_z and (last_spike is None or day - last_spike >= p.cooldown_days):
            # a spike is reported alone and restarts the shift detector, so a spike (true or
            # not) never hides a shift that follows it
            state["f"] = [day, last_shift]
            state["s"] = [0.0, None, []]
        else:
            s_new = max(0.0, s + min(score, p.spike_z) - p.cusum_k)
            if s_new > 0 and s == 0:
                since, since_ids = day, row[_IDS][: p.max_evidence]
            elif s_new == 0:
                since, since_ids = None, []
            state["s"] = [s_new, since, since_ids]
            if s_new < p.cusum_h:
                return None
            shift, cusum = True, s_new
            state["f"] = [last_spike, day]
            state["s"] = [0.0, None, []]
        parts = []
        for f, name, unit in _FEATURES:
            if f == "n" or z[f] >= 2.0:
                shown = (lambda v: f"{v:.1f}") if f == "n" else (lambda v: yuan(round(v)))
                parts.append(
                    f"{name}{value[f] if f == 'n' else yuan(value[f])}{unit}"
                    f"(基线{shown(base[f])}{unit},z={z[f]:.1f})"
                )
        share = row[_FUND] / row[_AMT] if row[_AMT] > 0 else 0.0
        if not shift:
            why = f"单日突增(阈值z={p.spike_z:g})"
            evidence = row[_IDS][: p.max_evidence]
        else:
            why = (
                f"自{fmt_local(day_end(since) - DAY_MS)[:10]}起持续偏高"
                f"(CUSUM={cusum:.1f},阈值{p.cusum_h:g})"
            )
            evidence = [*since_ids, *row[_IDS][: p.max_evidence]]
        return make_alert(
            self,
            "institution",
            key,
            {"event_id": row[_LAST], "event_time": row[_LAST_T]},
            evidence[:45],
            score=score,
            severity=self.severity(score / p.spike_z),
            amount_at_risk_fen=max(0, round(value["fund"] - base["fund"])),
            explanation_zh=(
                f"{fmt_local(day_end(day) - DAY_MS)[:10]}日{'、'.join(parts)},"
                f"统筹占比{share:.0%};{why}"
            ),
            institution_id=key,
            region_code=state.get("r"),
        )
