"""Normal behaviour (no fraud) stays under every default threshold of docs/detection.md."""

from __future__ import annotations

from collections import Counter

import pytest

from . import invariants as inv
from .conftest import Run


@pytest.fixture(scope="module")
def streams(tiny_normal: Run) -> dict:
    t = inv.by_topic(tiny_normal.records)
    return {"S": t["settlement"], "C": t["trace_scan"], "F": t["face_verify"], "run": tiny_normal}


def test_no_labels_without_fraud(streams):
    assert not streams["run"].topic("sim_labels")


def test_all_kinds_of_activity_happen(streams):
    visits = Counter(s["visit_type"] for s in streams["S"])
    assert min(visits.values()) >= 3 and set(visits) == {"OUTPATIENT", "INPATIENT", "PHARMACY"}
    purposes = Counter(f["purpose"] for f in streams["F"])
    assert {"VISIT", "ADMISSION", "BEDSIDE", "SETTLEMENT", "CLOCK_IN", "CLOCK_OUT"} <= set(purposes)
    scans = Counter(c["scan_type"] for c in streams["C"])
    assert {"STOCK_IN", "SALE", "RETURN"} <= set(scans)
    assert any(s["reversal_of"] for s in streams["S"])  # legitimate refunds
    assert any(s["fund_paid_fen"] == 0 and s["total_fen"] > 0 for s in streams["S"])  # cash only
    chronic = [s for s in streams["S"] if s["diagnosis_codes"][:1] in (["E11.900"], ["I10.x00"])]
    assert chronic and all(
        line["days_supply"] in (None, 30) for s in chronic for line in s["items"]
    )


@pytest.mark.parametrize(
    "check",
    [
        lambda s: inv.cross_institution(s["S"]),
        lambda s: inv.pharmacy_night_sales(s["S"]),
        lambda s: inv.maintenance_window(s["S"]),
        lambda s: inv.trace_codes(s["C"], s["S"]),
        lambda s: inv.billed_boxes_scanned(s["C"], s["S"]),
        lambda s: inv.face_settlements(s["F"], s["S"]),
        lambda s: inv.clocked_in(s["F"], s["S"]),
        lambda s: inv.bedside_daily(s["F"], s["S"]),
        lambda s: inv.fences(s["F"], s["run"].sim.world.registry()),
        lambda s: inv.supply(s["S"]),
        lambda s: inv.pharmacy_hopping(s["S"]),
        lambda s: inv.bursts_and_duplicates(s["S"]),
        lambda s: inv.repeated_exams(s["S"]),
        lambda s: inv.split_charging(s["S"], s["run"].sim.world.formulary.packages),
        lambda s: inv.readmissions(s["S"]),
        lambda s: inv.baskets(s["S"]),
        lambda s: inv.travel(s["F"]),
        lambda s: inv.weak_checks(s["F"]),
    ],
    ids=[
        "cross_institution",
        "pharmacy_night",
        "maintenance",
        "trace_codes",
        "boxes_scanned",
        "face_settlements",
        "clocked_in",
        "bedside_daily",
        "fences",
        "supply",
        "pharmacy_hopping",
        "bursts_duplicates",
        "repeated_exams",
        "split_charging",
        "readmissions",
        "baskets",
        "travel",
        "weak_checks",
    ],
)
def test_invariant(streams, check):
    violations = check(streams)
    assert not violations, violations[:5]
