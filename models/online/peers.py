"""同行偏离 — members of a peer group against the group's mean, with the +20/50/100 % warning lines.

`PeerGroupDetector` keeps one state per peer group (the state key is the group id): per local
day and member, additive counters. When the watermark passes local midnight it compares every
member with enough activity over the window to the pooled figures of the other members, and
grades the largest excess with `peer_level`. `PeerDeviation` (institutions) and
`models.online.doctor_profile.DoctorProfile` (doctors) are its two uses.

Where the peers are: `peer_deviation` runs on the worker's **group stage**, fed by a
repartition topic keyed by `institution_peer_group` (streams/worker/routing.py): every
settlement of a peer group reaches one partition, so each group is judged once, on exact
figures, whatever the partition count. The alert's trigger is the finding
`<detector>:<member>:<day>` rather than an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from models.alerts import Alert, make_alert
from models.detector import DUE, NO_ALERTS, SETTLEMENT, Event, Params, Result, State
from models.online.common import (
    LEVEL_ZH,
    ModelDetector,
    add_event_id,
    city_of,
    day_end,
    institution_group,
    local_day_of,
    peer_level,
)
from models.window import DAY_MS, fmt_local


@dataclass(frozen=True, slots=True)
class Metric:
    """A member figure: counter `num` per counter `den` (None: per member, e.g. daily volume)."""

    name_zh: str
    num: int
    den: int | None
    unit: str = ""
    scale: float = 1.0  # display only (fen -> yuan)


@dataclass(kw_only=True)
class PeerParams(Params):
    window_days: int = 7
    """Rolling window of the index, in local days (the day just closed included)."""
    min_visits: int = 5
    """A member is judged only with at least this many settlements in the window."""
    min_peers: int = 2
    """Other members with activity needed for a peer mean."""
    min_peer_visits: int = 10
    """Settlements of the other members needed for a peer mean."""
    min_level: int = 2
    """Lowest warning level (1..3: +20 / +50 / +100 % over the peer mean) that raises an alert."""
    cooldown_days: int = 7
    """A member alerted is quiet for this many days unless its level rises."""
    max_evidence: int = 10
    """Settlement ids kept per member and judged day as evidence (an open day keeps all of
    them: a settlement re-delivered through a repartition topic is counted once)."""


def institution_peer_group(event: Event) -> str:
    """The institution's peer group: `<province+city>|<type>|<level>` (同城同类同级)."""
    inst_type, level = institution_group(event)
    return f"{city_of(event.get('region_code'), event['institution_id'])}|{inst_type}|{level}"


class PeerGroupDetector(ModelDetector):
    """Members of a peer group against the pooled figures of the other members (see module)."""

    metrics: ClassVar[tuple[Metric, ...]]
    counters: ClassVar[int]
    member_entity: ClassVar[str]
    member_zh: ClassVar[str]
    params: PeerParams

    def group(self, event: Event) -> str | None:  # pragma: no cover - subclasses
        raise NotImplementedError

    def member(self, event: Event) -> str | None:  # pragma: no cover - subclasses
        raise NotImplementedError

    def counts(self, event: Event) -> Sequence[float]:  # pragma: no cover - subclasses
        raise NotImplementedError

    def keys(self, event: Event) -> list[str]:
        if event.get("reversal_of") is not None or self.member(event) is None:
            return []
        g = self.group(event)
        return [g] if g is not None else []

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        t = event["event_time"]
        day = local_day_of(t)
        member = self.member(event)
        if member is None or (state is not None and day <= state.get("c", -1)):
            return NO_ALERTS, state  # its day is already judged: too late to count
        if state is None:
            state = {"d": {}, "f": {}, "c": day - 1}
        days = state["d"]
        members = days.get(str(day))
        if members is None:
            members = days[str(day)] = {}
        row = members.get(member)
        k = self.counters
        eid = event["event_id"]
        if row is None:
            row = members[member] = [0.0] * k + [[eid], "", 0]
        elif not add_event_id(row[k], eid):
            return NO_ALERTS, state  # re-delivered (at-least-once repartition): counted once
        for i, c in enumerate(self.counts(event)):
            row[i] += c
        row[k + 1], row[k + 2] = event.get("institution_id"), event.get("region_code")
        # the first open day ends first (day_end grows with the day)
        judged = state["c"]
        state[DUE] = day_end(min(d for d in map(int, days) if d > judged))
        return NO_ALERTS, state

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        """Judge every day the watermark has closed; drop days that left the window."""
        p = self.params
        days: dict[str, dict[str, list[Any]]] = state["d"]
        closing = sorted(
            int(d) for d in days if int(d) > state["c"] and day_end(int(d)) <= watermark_ms
        )
        if not closing:
            if all(int(d) <= state["c"] for d in days) and state[DUE] <= watermark_ms:
                return NO_ALERTS, None  # every day judged and out of the window: idle group
            return NO_ALERTS, state
        state = dict(state)
        fired = dict(state["f"])
        alerts: list[Alert] = []
        for day in closing:
            alerts.extend(self._judge(key, day, days, fired))
            state["c"] = day
        last = state["c"]
        k, keep = self.counters, p.max_evidence
        # a judged day keeps only its evidence ids (the smallest ids: the earliest, for ids
        # issued in time order like the simulator's)
        state["d"] = {
            d: m if int(d) > last else {x: [*r[:k], r[k][:keep], *r[k + 1 :]] for x, r in m.items()}
            for d, m in days.items()
            if int(d) > last - p.window_days
        }
        state["f"] = {m: f for m, f in fired.items() if last - f[0] < p.cooldown_days}
        pending = [day_end(int(d)) for d in state["d"] if int(d) > last]
        state[DUE] = min(pending) if pending else day_end(last) + p.window_days * DAY_MS
        return alerts, (None if state[DUE] <= watermark_ms else state)

    def _judge(
        self, key: str, day: int, days: dict[str, dict[str, list[Any]]], fired: dict[str, Any]
    ) -> list[Alert]:
        p = self.params
        k = self.counters
        window = [days[str(d)] for d in range(day - p.window_days + 1, day + 1) if str(d) in days]
        totals: dict[str, list[float]] = {}
        ids: dict[str, list[str]] = {}
        where: dict[str, tuple[Any, Any]] = {}
        for members in window:
            for m, row in members.items():
                tot = totals.setdefault(m, [0.0] * k)
                for i in range(k):
                    tot[i] += row[i]
                ids.setdefault(m, []).extend(row[k])
                where[m] = (row[k + 1], row[k + 2])
        active = {m: tot for m, tot in totals.items() if tot[0] > 0}
        if len(active) < p.min_peers + 1:
            return []
        grand = [sum(tot[i] for tot in active.values()) for i in range(k)]
        out: list[Alert] = []
        for m in sorted(active):
            tot = active[m]
            if tot[0] < p.min_visits:
                continue
            peer = [grand[i] - tot[i] for i in range(k)]
            if peer[0] < p.min_peer_visits:
                continue
            n_peers = len(active) - 1
            found: list[tuple[int, float, Metric, float, float]] = []
            for metric in self.metrics:
                mine = (
                    tot[metric.num] / tot[metric.den] if metric.den is not None else tot[metric.num]
                )
                if metric.den is not None:
                    base = peer[metric.num] / peer[metric.den] if peer[metric.den] > 0 else 0.0
                else:
                    base = peer[metric.num] / n_peers
                if base <= 0:
                    continue
                ratio = mine / base
                level = peer_level(ratio)
                if level:
                    found.append((level, ratio, metric, mine, base))
            if not found:
                continue
            level = max(f[0] for f in found)
            prev = fired.get(m)
            if prev is not None and day - prev[0] >= p.cooldown_days:
                prev = None  # per judged day, so one call closing many days decides the same
            if level < p.min_level or (prev is not None and level <= prev[1]):
                continue
            fired[m] = [day, level]
            found.sort(key=lambda f: -f[1])
            ratio = found[0][1]
            figures = "、".join(
                f"{metric.name_zh}{mine * metric.scale:.2f}{metric.unit}"
                f"(同行均值{base * metric.scale:.2f}{metric.unit},偏离+{(r - 1) * 100:.0f}%)"
                for _, r, metric, mine, base in found
            )
            inst, region = where[m]
            date = fmt_local(day_end(day) - DAY_MS)[:10]
            out.append(
                make_alert(
                    self,
                    self.member_entity,
                    m,
                    {"event_id": f"{self.id}:{m}:{date}", "event_time": day_end(day) - 1},
                    ids[m][:45],
                    score=ratio,
                    severity=level,
                    amount_at_risk_fen=self._at_risk(tot, peer),
                    explanation_zh=(
                        f"截至{date}近{p.window_days}日{self.member_zh}{figures};"
                        f"同行组{key}共{n_peers}家(人)可比,{LEVEL_ZH[level]}"
                        f"(+20%/+50%/+100%为一/二/三级)"
                    ),
                    institution_id=inst,
                    region_code=region,
                )
            )
        return out

    def _at_risk(self, tot: list[float], peer: list[float]) -> int:
        return 0


_N, _AMT, _FUND, _ITEMS = range(4)


class PeerDeviation(PeerGroupDetector):
    """同行偏离 — an institution's cost per visit far over its peers' (same city, type, level).

    State keyed by peer group `<province+city>|<type>|<level>` (group stage: see the module).
    Per institution and local day: settlements, amount, fund-paid amount and billed lines
    (reversals excluded). At each local midnight, over the last **7** days, every institution
    with **>= 5** settlements is compared with the pooled figures of the other institutions of
    its group (**>= 2** of them, **>= 10** settlements): cost per visit (次均费用), fund payout
    per visit (次均统筹) and lines per visit (次均项目数). The largest ratio gives the warning
    level: **>= +20 %** level 1, **>= +50 %** level 2, **>= +100 %** level 3 (a boundary belongs
    to the higher level; just under it is the lower one). Fires when the level reaches
    `min_level` (**2**: level 1 is a sensitive line, set 1 to see it), then again only if the
    level rises within **7** days. Money at risk: the
    fund payout over what the peers' fund per visit would have paid.

    >>> det = PeerDeviation()
    >>> state = None
    >>> for inst, price in (("P440300000001", 10000), ("P440300000002", 5000),
    ...                     ("P440300000003", 5000)):
    ...     for i in range(6):
    ...         ev = {"event_id": f"{inst}-{i}", "event_time": 1763341200000 + i * 60_000,
    ...               "institution_id": inst, "institution_type": "PHARMACY",
    ...               "institution_level": 0, "region_code": "440300", "reversal_of": None,
    ...               "total_fen": price, "fund_paid_fen": price // 2, "items": [{}]}
    ...         _, state = det.process(ev, state, 0, "4403|PHARMACY|0")
    >>> alerts, state = det.expire(state, 1763395200000, "4403|PHARMACY|0")
    >>> for part in alerts[0].explanation.replace("、", ";").split(";"):
    ...     print(part)
    [peer_deviation] 截至2025-11-17近7日机构次均费用100.00元(同行均值50.00元,偏离+100%)
    次均统筹50.00元(同行均值25.00元,偏离+100%)
    同行组4403|PHARMACY|0共2家(人)可比,三级预警(+20%/+50%/+100%为一/二/三级)
    >>> alerts[0].severity, alerts[0].entity_id
    (3, 'P440300000001')
    """

    id = "peer_deviation"
    params_class = PeerParams
    topics = frozenset({SETTLEMENT})
    metrics = (
        Metric("次均费用", _AMT, _N, "元", 0.01),
        Metric("次均统筹", _FUND, _N, "元", 0.01),
        Metric("次均项目数", _ITEMS, _N, "项"),
    )
    counters = 4
    member_entity = "institution"
    member_zh = "机构"

    def group(self, event: Event) -> str | None:
        return institution_peer_group(event)

    def member(self, event: Event) -> str | None:
        return event["institution_id"]

    def counts(self, event: Event) -> Sequence[float]:
        return (1, event["total_fen"], event["fund_paid_fen"], len(event["items"]))

    def _at_risk(self, tot: list[float], peer: list[float]) -> int:
        if peer[_N] <= 0:
            return 0
        return max(0, round(tot[_FUND] - tot[_N] * peer[_FUND] / peer[_N]))
