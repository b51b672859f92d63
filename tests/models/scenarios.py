"""One minimal firing scenario per detector (what the simulator injects, smallest form).

Each builder returns the events in event-time order; run alone through its detector it gives
exactly one alert. Used by the generic contract tests and the runner's determinism tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.models import factories as f

Events = list[dict[str, Any]]

SIX_PLACES = [f.HOSP, f.HOSP2, f.CLINIC, f.PHARM, f.PHARM2, f.PHARM3]
LIVER = ["250305002", "250305003", "250305004"]
BASKET = [f.drug(f.DRUG_A, quantity=2), f.drug(f.DRUG_B), f.drug(f.DRUG_C, group="ibuprofen_oral")]


def cross_institution_frequency() -> Events:
    return [
        f.settlement(f.at(0, 8 + 2 * n), person="RY-CIF", institution=inst)
        for n, inst in enumerate(SIX_PLACES)
    ]


def drug_over_supply() -> Events:
    return [
        f.settlement(f.at(day, 10), person="RY-DOS", institution=inst, items=[f.drug(days=30)])
        for day, inst in ((0, f.HOSP), (7, f.HOSP2), (14, f.CLINIC))
    ]


def duplicate_billing() -> Events:
    first = f.settlement(f.at(0, 9), person="RY-DUP", items=[f.exam(), f.service()])
    return [first, f.copy_of(first, f.at(0, 9, 3))]


def split_charging() -> Events:
    items = [f.item(code, item_type="EXAM", unit_price_fen=2500) for code in LIVER]
    return [f.settlement(f.at(0, 9), person="RY-SPL", items=items)]


def drug_swap() -> Events:
    s = f.settlement(f.at(0, 15), person="RY-SWP", institution=f.PHARM, items=[f.drug(f.DRUG_A)])
    return [
        s,
        f.scan(
            f.at(0, 15, 1),
            f.trace_code("8234567", 1),
            drug_code=f.DRUG_B,
            settlement_id=s["event_id"],
        ),
    ]


def trace_code_resale() -> Events:
    code = f.trace_code("8123456", 77)
    return [
        f.scan(f.at(0, 10), code, settlement_id="ST-R1"),
        f.scan(f.at(3, 11), code, institution=f.PHARM2, settlement_id="ST-R2"),
    ]


def impersonation() -> Events:
    check = f.face(f.at(0, 9), "RY-IMP", purpose="SETTLEMENT", score=0.45)
    s = f.settlement(
        f.at(0, 9, 1), person="RY-IMP", channel="FACE", face_verify_id=check["event_id"]
    )
    return [check, s]


def impossible_travel() -> Events:
    return [
        f.face(f.at(0, 9), "RY-TRV"),
        f.face(
            f.at(0, 9, 20), "RY-TRV", institution=f.HOSP2, lat=f.GUANGZHOU[0], lon=f.GUANGZHOU[1]
        ),
    ]


def hanging_bed() -> Events:
    return [
        f.settlement(
            f.at(6, 10),
            person="RY-HB",
            visit_type="INPATIENT",
            admission=f.at(0, 10),
            discharge=f.at(6, 10),
            items=[f.service()],
            diagnosis=["I63.900"],
        ),
    ]


def split_hospitalization() -> Events:
    def stay(a: float, d: float) -> dict[str, Any]:
        return f.settlement(
            f.at(d, 10),
            person="RY-SH",
            visit_type="INPATIENT",
            admission=f.at(a, 10),
            discharge=f.at(d, 10),
            diagnosis=["I63.900"],
        )

    return [stay(0, 5), stay(8, 12)]


def licence_lending() -> Events:
    return [f.settlement(f.at(0, 10), person="RY-LL", doctor="D440305009999")]


def fence_breach() -> Events:
    return [f.face(f.at(0, 9), "RY-FB", purpose="BEDSIDE", lat=f.SHENZHEN[0] + 0.05)]


def pharmacy_basket_ring() -> Events:
    return [
        f.settlement(f.at(0, 9, 20 * n), person=f"RY-RING{n}", institution=f.PHARM3, items=BASKET)
        for n in range(6)
    ]


def pharmacy_hopping() -> Events:
    return [
        f.settlement(
            f.at(day, 18),
            person="RY-HOP",
            institution=inst,
            items=[f.drug(f.DRUG_B, group=f.GROUP_B, days=7)],
        )
        for day, inst in ((0, f.PHARM), (1, f.PHARM2), (3, f.PHARM3))
    ]


def odd_hour_sales() -> Events:
    return [
        f.settlement(
            f.at(1, 1 + n), person=f"RY-ODD{n}", institution=f.PHARM2, items=[f.drug(days=5)]
        )
        for n in range(3)
    ]


def maintenance_window() -> Events:
    return [f.settlement(f.at(-1, 2), person="RY-MW")]  # Sunday 02:00


def card_burst() -> Events:
    return [
        f.settlement(
            f.at(0, 14, 2 * n), person="RY-CB", institution=f.PHARM, items=[f.drug(days=3)]
        )
        for n in range(4)
    ]


def repeated_exam() -> Events:
    return [f.settlement(f.at(day, 10), person="RY-EX", items=[f.exam()]) for day in (0, 2, 4)]


def group_visit() -> Events:
    return [
        f.settlement(
            f.at(0, 10, 5 * n),
            person=f"RY-GRP{n}",
            institution=f.CLINIC,
            diagnosis=["A09.900"],
            items=[f.service(), f.exam("250101015")],
        )
        for n in range(8)
    ]


FIRING: dict[str, Callable[[], Events]] = {
    fn.__name__: fn
    for fn in (
        cross_institution_frequency,
        drug_over_supply,
        duplicate_billing,
        split_charging,
        drug_swap,
        trace_code_resale,
        impersonation,
        impossible_travel,
        hanging_bed,
        split_hospitalization,
        licence_lending,
        fence_breach,
        pharmacy_basket_ring,
        pharmacy_hopping,
        odd_hour_sales,
        maintenance_window,
        card_burst,
        repeated_exam,
        group_visit,
    )
}

ORDER_INDEPENDENT_IDS = {
    "drug_swap",
    "trace_code_resale",
    "impersonation",
    "impossible_travel",
    "hanging_bed",
    "split_hospitalization",
    "licence_lending",
    "fence_breach",
    "split_charging",
    "maintenance_window",
}
"""Detectors whose alert is triggered by the event completing the finding in event time."""
