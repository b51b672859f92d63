"""Checks of the normal-behaviour invariants of docs/detection.md over a list of records.

Each function returns a list of human-readable violations (empty when the invariant holds), so
tests can assert on it and print the first offenders. Times are event-time ms; local = UTC+8.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from models.reference import Registry, distance_m
from streams.simulator.config import DAY_MS, HOUR_MS, MINUTE_MS, local_hour, local_weekday
from streams.simulator.events import SimRecord

Rec = dict[str, Any]


def by_topic(records: Iterable[SimRecord]) -> dict[str, list[Rec]]:
    out: dict[str, list[Rec]] = defaultdict(list)
    for r in records:
        out[r.topic].append(r.record)
    return out


def _sales(settlements: list[Rec]) -> list[Rec]:
    return [s for s in settlements if s["reversal_of"] is None]


def cross_institution(settlements: list[Rec], limit: int = 5) -> list[str]:
    """No person at more than `limit` distinct institutions within 24 h."""
    bad = []
    per: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for s in _sales(settlements):
        per[s["person_id"]].append((s["event_time"], s["institution_id"]))
    for person, visits in per.items():
        visits.sort()
        for i, (t, _) in enumerate(visits):
            window = {inst for t2, inst in visits[i:] if t2 - t < DAY_MS}
            if len(window) > limit:
                bad.append(f"{len(window)} institutions in 24h ({person[:6]}...)")
                break
    return bad


def pharmacy_night_sales(settlements: list[Rec]) -> list[str]:
    return [
        s["event_id"]
        for s in settlements
        if s["institution_type"] == "PHARMACY" and local_hour(s["event_time"]) < 5
    ]


def maintenance_window(settlements: list[Rec]) -> list[str]:
    return [
        s["event_id"]
        for s in settlements
        if local_weekday(s["event_time"]) == 6 and 1 <= local_hour(s["event_time"]) < 4
    ]


def trace_codes(scans: list[Rec], settlements: list[Rec]) -> list[str]:
    """Every SALE after a STOCK_IN of the box, never sold twice without a RETURN in between,
    with the settlement id of a settlement billing that drug and listing that code."""
    bad = []
    by_id = {s["event_id"]: s for s in settlements}
    state: dict[str, str] = {}
    for scan in scans:
        code, kind = scan["trace_code"], scan["scan_type"]
        prev = state.get(code)
        if kind == "STOCK_IN" and prev is not None and prev != "RETURN":
            bad.append(f"{code} stocked in again after {prev}")
        if kind == "SALE":
            if prev is None:
                bad.append(f"{code} sold without stock-in")
            elif prev == "SALE":
                bad.append(f"{code} sold twice")
            sale = by_id.get(scan["settlement_id"] or "")
            if sale is None:
                bad.append(f"{code} sale scan without settlement")
            elif not any(
                line["item_code"] == scan["drug_code"] and code in line["trace_codes"]
                for line in sale["items"]
            ):
                bad.append(f"{code} scanned drug not billed on {sale['event_id']}")
        state[code] = kind
    return bad


def billed_boxes_scanned(scans: list[Rec], settlements: list[Rec]) -> list[str]:
    """Every billed drug line has exactly its quantity of codes, each with one SALE scan of it."""
    sold: dict[tuple[str, str], int] = defaultdict(int)
    for scan in scans:
        if scan["scan_type"] == "SALE":
            sold[(scan["settlement_id"], scan["trace_code"])] += 1
    bad = []
    for s in _sales(settlements):
        for line in s["items"]:
            if line["item_type"] != "DRUG":
                continue
            if len(line["trace_codes"]) != line["quantity"]:
                bad.append(f"{s['event_id']} line {line['line_no']}: codes != quantity")
            for code in line["trace_codes"]:
                if sold.get((s["event_id"], code)) != 1:
                    bad.append(
                        f"{s['event_id']} {code}: {sold.get((s['event_id'], code), 0)} sale scans"
                    )
    return bad


def face_settlements(faces: list[Rec], settlements: list[Rec]) -> list[str]:
    """Channel FACE settlements link a passing SETTLEMENT check (>= 0.85, liveness) of the
    person, made within 30 minutes before, that names the settlement."""
    by_id = {f["event_id"]: f for f in faces}
    bad = []
    for s in _sales(settlements):
        if s["channel"] != "FACE":
            continue
        f = by_id.get(s["face_verify_id"] or "")
        if f is None:
            bad.append(f"{s['event_id']}: no check")
        elif not (
            f["result"] == "PASS"
            and f["match_score"] >= 0.85
            and f["liveness_passed"]
            and f["subject_id"] == s["person_id"]
            and f["settlement_id"] == s["event_id"]
            and 0 <= s["event_time"] - f["event_time"] <= 30 * MINUTE_MS
        ):
            bad.append(f"{s['event_id']}: check {f['event_id']} does not identify it")
    return bad


def clocked_in(faces: list[Rec], settlements: list[Rec]) -> list[str]:
    """Every prescribing doctor clocked in that local day before the settlement, at one place."""
    first: dict[tuple[str, int], tuple[int, str]] = {}
    bad = []
    for f in faces:
        if f["purpose"] == "CLOCK_IN":
            key = (f["subject_id"], (f["event_time"] + 8 * HOUR_MS) // DAY_MS)
            if key in first and first[key][1] != f["institution_id"]:
                bad.append(f"{f['subject_id']} clocked in at two institutions")
            first.setdefault(key, (f["event_time"], f["institution_id"]))
    for s in settlements:
        if s["doctor_id"] is None:
            continue
        key = (s["doctor_id"], (s["event_time"] + 8 * HOUR_MS) // DAY_MS)
        clock = first.get(key)
        if clock is None or clock[0] > s["event_time"] or clock[1] != s["institution_id"]:
            bad.append(f"{s['event_id']}: doctor {s['doctor_id']} not clocked in")
    return bad


def bedside_daily(faces: list[Rec], settlements: list[Rec]) -> list[str]:
    """Inpatients have a bedside check on every day of the stay after admission."""
    bedside: dict[str, list[int]] = defaultdict(list)
    for f in faces:
        if f["purpose"] == "BEDSIDE":
            bedside[f["subject_id"]].append(f["event_time"])
    bad = []
    for s in settlements:
        if s["visit_type"] != "INPATIENT" or s["reversal_of"]:
            continue
        checks = sorted(
            t for t in bedside[s["person_id"]] if s["admission_time"] <= t <= s["discharge_time"]
        )
        points = [s["admission_time"], *checks]
        gaps = [b - a for a, b in itertools.pairwise(points)]
        if any(g > 2 * DAY_MS for g in gaps) or not checks:
            bad.append(f"{s['event_id']}: bedside gap")
        for other in settlements:
            if (
                other["person_id"] == s["person_id"]
                and other["institution_id"] != s["institution_id"]
                and s["admission_time"] < other["event_time"] < s["discharge_time"]
            ):
                bad.append(f"{s['event_id']}: settlement elsewhere during the stay")
    return bad


def fences(faces: list[Rec], registry: Registry, share: float = 0.5) -> list[str]:
    bad = []
    for f in faces:
        inst = registry.institutions[f["institution_id"]]
        dist = distance_m(f["device_lat"], f["device_lon"], inst.lat, inst.lon)
        if dist > share * inst.fence_radius_m:
            bad.append(f"{f['event_id']}: {dist:.0f} m from {inst.institution_id}")
    return bad


def supply(settlements: list[Rec], limit: int = 60) -> list[str]:
    """No person's days of supply of a generic group exceed `limit` within 30 days."""
    per: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for s in _sales(settlements):
        for line in s["items"]:
            if line["days_supply"]:
                per[(s["person_id"], line["generic_group"])].append(
                    (s["event_time"], line["days_supply"])
                )
    bad = []
    for (_, group), buys in per.items():
        buys.sort()
        for i, (t, _) in enumerate(buys):
            total = sum(n for t2, n in buys[i:] if t2 - t < 30 * DAY_MS)
            if total > limit:
                bad.append(f"{group}: {total} days in 30 days")
                break
    return bad


def pharmacy_hopping(settlements: list[Rec]) -> list[str]:
    per: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for s in _sales(settlements):
        if s["institution_type"] == "PHARMACY":
            for line in s["items"]:
                if line["generic_group"]:
                    per[(s["person_id"], line["generic_group"])].append(
                        (s["event_time"], s["institution_id"])
                    )
    bad = []
    for key, buys in per.items():
        buys.sort()
        for i, (t, _) in enumerate(buys):
            if len({inst for t2, inst in buys[i:] if t2 - t < 7 * DAY_MS}) >= 3:
                bad.append(f"{key[1]} at 3 pharmacies in 7 days")
                break
    return bad


def bursts_and_duplicates(settlements: list[Rec]) -> list[str]:
    """No 4 settlements of a card in 10 minutes; no identical settlement within 10 minutes."""
    per: dict[str, list[Rec]] = defaultdict(list)
    for s in _sales(settlements):
        per[s["person_id"]].append(s)
    bad = []
    for sales in per.values():
        sales.sort(key=lambda s: s["event_time"])
        times = [s["event_time"] for s in sales]
        for i in range(len(times) - 3):
            if times[i + 3] - times[i] <= 10 * MINUTE_MS:
                bad.append("4 settlements in 10 minutes")
        for a, b in itertools.pairwise(sales):
            same = [(x["item_code"], x["quantity"]) for x in a["items"]] == [
                (x["item_code"], x["quantity"]) for x in b["items"]
            ]
            if (
                same
                and a["institution_id"] == b["institution_id"]
                and a["total_fen"] == b["total_fen"]
                and b["event_time"] - a["event_time"] <= 10 * MINUTE_MS
            ):
                bad.append(f"{b['event_id']} duplicates {a['event_id']}")
    return bad


def repeated_exams(settlements: list[Rec]) -> list[str]:
    per: dict[tuple[str, str], list[int]] = defaultdict(list)
    for s in _sales(settlements):
        if s["visit_type"] == "OUTPATIENT":
            for line in s["items"]:
                if line["item_type"] == "EXAM":
                    per[(s["person_id"], line["item_code"])].append(s["event_time"])
    bad = []
    for (_, code), times in per.items():
        times.sort()
        for i in range(len(times) - 2):
            if times[i + 2] - times[i] < 7 * DAY_MS:
                bad.append(f"exam {code} 3 times in 7 days")
    return bad


def split_charging(settlements: list[Rec], packages: Iterable[Any]) -> list[str]:
    bad = []
    for s in settlements:
        codes = {line["item_code"] for line in s["items"]}
        for pkg in packages:
            if len(codes & {c for c, _, _ in pkg.sub_items}) >= pkg.min_sub_items:
                bad.append(f"{s['event_id']} splits {pkg.code}")
    return bad


def readmissions(settlements: list[Rec]) -> list[str]:
    stays: dict[str, list[Rec]] = defaultdict(list)
    for s in _sales(settlements):
        if s["visit_type"] == "INPATIENT":
            stays[s["person_id"]].append(s)
    bad = []
    for items in stays.values():
        items.sort(key=lambda s: s["admission_time"])
        for a, b in itertools.pairwise(items):
            if (
                a["institution_id"] == b["institution_id"]
                and a["diagnosis_codes"][:1] == b["diagnosis_codes"][:1]
                and b["admission_time"] - a["discharge_time"] <= 15 * DAY_MS
            ):
                bad.append(f"{b['event_id']} readmitted")
    return bad


def baskets(settlements: list[Rec]) -> list[str]:
    """No 6 persons with the same >= 3 item basket at one pharmacy within 24 h, and no 8 with
    the same diagnosis and items at one institution within an hour."""
    bad = []
    ring: dict[tuple, list[tuple[int, str]]] = defaultdict(list)
    group: dict[tuple, list[tuple[int, str]]] = defaultdict(list)
    for s in _sales(settlements):
        items = tuple(sorted((x["item_code"], x["quantity"]) for x in s["items"]))
        if s["institution_type"] == "PHARMACY" and len(items) >= 3:
            ring[(s["institution_id"], items)].append((s["event_time"], s["person_id"]))
        codes = tuple(sorted({x["item_code"] for x in s["items"]}))
        group[(s["institution_id"], tuple(s["diagnosis_codes"][:1]), codes)].append(
            (s["event_time"], s["person_id"])
        )
    for key, hits in ring.items():
        hits.sort()
        for i, (t, _) in enumerate(hits):
            if len({p for t2, p in hits[i:] if t2 - t < DAY_MS}) >= 6:
                bad.append(f"basket ring at {key[0]}")
                break
    for key, hits in group.items():
        hits.sort()
        for i, (t, _) in enumerate(hits):
            if len({p for t2, p in hits[i:] if t2 - t < HOUR_MS}) >= 8:
                bad.append(f"group visit at {key[0]} {key[1]}")
                break
    return bad


def travel(faces: list[Rec], km: float = 50, kmh: float = 200) -> list[str]:
    per: dict[str, list[Rec]] = defaultdict(list)
    for f in faces:
        if f["subject_type"] == "PATIENT":
            per[f["subject_id"]].append(f)
    bad = []
    for checks in per.values():
        for a, b in itertools.pairwise(checks):
            dist = (
                distance_m(a["device_lat"], a["device_lon"], b["device_lat"], b["device_lon"])
                / 1000
            )
            hours = max(b["event_time"] - a["event_time"], 1) / HOUR_MS
            if dist > km and dist / hours > kmh:
                bad.append(f"{b['event_id']}: {dist:.0f} km at {dist / hours:.0f} km/h")
    return bad


def weak_checks(faces: list[Rec]) -> list[str]:
    return [
        f["event_id"]
        for f in faces
        if f["result"] != "PASS" or f["match_score"] < 0.85 or not f["liveness_passed"]
    ]
