"""医师画像 — a doctor's (or pharmacist's) daily profile against peers of the same institution kind.

There is no department to compare doctors within (the settlement's `department` is free text
and missing at pharmacies), so the peer group is the institution type and level: doctors of
level-3 hospitals with each other, clinic doctors with each other, pharmacists with each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.detector import SETTLEMENT, Event
from models.online.common import institution_group
from models.online.peers import Metric, PeerGroupDetector, PeerParams

_N, _AMT, _EXAM, _DRUG = range(4)


@dataclass(kw_only=True)
class DoctorProfileParams(PeerParams):
    window_days: int = 1
    """The profile's window, in local days: 1 = each day on its own."""
    min_visits: int = 8
    """A doctor is judged only with at least this many settlements in the window."""
    min_peers: int = 3
    min_peer_visits: int = 30
    min_level: int = 2
    """Lowest warning level that raises an alert: 2 (+50 %); daily figures of one doctor are
    noisy, +20 % over peers is an ordinary day."""


class DoctorProfile(PeerGroupDetector):
    """医师画像 — a doctor whose day is far over the peers': volume, cost, exams, drugs.

    State keyed by peer group `<institution type>|<level>` on the **institution stage**: a
    doctor works at one institution, so all of their settlements are on its partition, and the
    peers are the doctors of the institutions of that partition (a random share of all of them;
    with one partition, all). The doctor stage cannot hold it: its records are routed to one
    key each (the doctor), and a peer group needs one state for many doctors. Per doctor (the
    settlement's doctor, else its pharmacist) and local day: settlements, amount, settlements
    with an examination, drug amount. At local midnight every doctor with **>= 8** settlements
    that day is compared with the other doctors of the group (**>= 3** of them, **>= 30**
    settlements): settlements per doctor (接诊量), cost per visit (次均费用), examination rate
    (检查率) and drug share (药占比). Levels as `peer_deviation` (+20/50/100 %); alerts from
    level **2** (`min_level`), again within 7 days only if the level rises.

    >>> det = DoctorProfile()
    >>> state = None
    >>> for d, (n, price) in enumerate(((20, 30000), (10, 10000), (10, 10000), (10, 10000))):
    ...     for i in range(n):
    ...         ev = {"event_id": f"D{d}-{i}", "event_time": 1763341200000 + i * 60_000,
    ...               "institution_id": "H440300000001", "institution_type": "HOSPITAL",
    ...               "institution_level": 2, "region_code": "440300", "reversal_of": None,
    ...               "doctor_id": f"D44030000000{d}", "pharmacist_id": None,
    ...               "total_fen": price, "fund_paid_fen": price // 2,
    ...               "items": [{"item_type": "SERVICE", "amount_fen": price}]}
    ...         _, state = det.process(ev, state, 0, "HOSPITAL|2")
    >>> alerts, state = det.expire(state, 1763395200000, "HOSPITAL|2")
    >>> for part in alerts[0].explanation.replace("、", ";").split(";"):
    ...     print(part)
    [doctor_profile] 截至2025-11-17近1日医师次均费用300.00元(同行均值100.00元,偏离+200%)
    接诊量20.00人次(同行均值10.00人次,偏离+100%)
    同行组HOSPITAL|2共3家(人)可比,三级预警(+20%/+50%/+100%为一/二/三级)
    >>> alerts[0].entity_type, alerts[0].entity_id
    ('doctor', 'D440300000000')
    """

    id = "doctor_profile"
    entity = "doctor"
    params_class = DoctorProfileParams
    params: DoctorProfileParams
    topics = frozenset({SETTLEMENT})
    metrics = (
        Metric("接诊量", _N, None, "人次"),
        Metric("次均费用", _AMT, _N, "元", 0.01),
        Metric("检查率", _EXAM, _N, "%", 100.0),
        Metric("药占比", _DRUG, _AMT, "%", 100.0),
    )
    counters = 4
    member_entity = "doctor"
    member_zh = "医师"

    def group(self, event: Event) -> str | None:
        inst_type, level = institution_group(event)
        return f"{inst_type}|{level}"

    def member(self, event: Event) -> str | None:
        return event.get("doctor_id") or event.get("pharmacist_id")

    def counts(self, event: Event) -> Sequence[float]:
        exam = drug = 0
        for it in event["items"]:
            kind = it.get("item_type")
            if kind == "EXAM":
                exam = 1
            elif kind == "DRUG":
                drug += max(0, int(it.get("amount_fen", 0)))
        return (1, max(0, int(event["total_fen"])), exam, drug)
