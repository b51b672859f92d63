"""Every scenario of the catalogue is injected, labelled, and crosses its detector's threshold
(the defaults of docs/detection.md), judged from the labelled events themselves."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from models.catalogue import BY_ID, SCENARIOS
from models.reference import distance_m
from streams.simulator.config import DAY_MS, HOUR_MS, MINUTE_MS, local_hour, local_weekday
from streams.simulator.scenarios import INJECTORS

from .conftest import Run

Rec = dict[str, Any]


def test_one_injector_per_catalogue_scenario():
    assert list(INJECTORS) == [s.id for s in SCENARIOS]


def test_every_scenario_at_least_three_times_in_tiny(tiny: Run):
    counts = Counter(lab["scenario"] for lab in tiny.topic("sim_labels"))
    assert {s.id for s in SCENARIOS} == set(counts)
    assert min(counts.values()) >= 3, counts
    assert not any(tiny.sim.skipped.values()), tiny.sim.skipped


def test_labels_cite_existing_earlier_events(tiny: Run):
    seen: dict[str, Rec] = {}
    for r in tiny.records:
        if r.topic != "sim_labels":
            seen[r.record["event_id"]] = r.record
            continue
        lab = r.record
        scenario = BY_ID[lab["scenario"]]
        assert lab["expected_detector"] == scenario.detector_id
        assert lab["entity_type"] == scenario.entity_type
        assert lab["event_ids"] and all(i in seen for i in lab["event_ids"]), lab["scenario"]
        assert lab["event_time"] == max(seen[i]["event_time"] for i in lab["event_ids"])
        assert any("\u4e00" <= ch <= "\u9fff" for ch in lab["description"])
        assert any(ch.isdigit() for ch in lab["description"])
    ids = [lab["label_id"] for lab in tiny.topic("sim_labels")]
    assert len(set(ids)) == len(ids)


class Stream:
    """Index of a run's records for the threshold checks."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.by_id = {
            r.record["event_id"]: r.record for r in run.records if r.topic != "sim_labels"
        }
        self.settlements = run.topic("settlement")
        self.scans = run.topic("trace_scan")
        self.faces = run.topic("face_verify")
        self.registry = run.sim.world.registry()
        self.packages = run.sim.world.formulary.packages

    def cited_by_other(self, inst: str) -> set[str]:
        """Event ids cited by other scenarios' labels (not the volume/cost ones of `inst`)."""
        shifts = ("cost_growth", "peer_deviation")
        return {
            i
            for lab in self.run.topic("sim_labels")
            if not (lab["entity_id"] == inst and lab["scenario"] in shifts)
            for i in lab["event_ids"]
        }

    def events(self, label: Rec, topic_prefix: str | None = None) -> list[Rec]:
        out = [self.by_id[i] for i in label["event_ids"]]
        return [e for e in out if topic_prefix is None or e["event_id"].startswith(topic_prefix)]


def _max_in_window(points: list[tuple[int, Any]], window_ms: int) -> int:
    points = sorted(points)
    best = 0
    for i, (t, _) in enumerate(points):
        best = max(best, len({v for t2, v in points[i:] if t2 - t < window_ms}))
    return best


def cross_institution_frequency(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    return _max_in_window([(e["event_time"], e["institution_id"]) for e in ev], DAY_MS) > 5


def drug_over_supply(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    per: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for e in ev:
        for line in e["items"]:
            if line["days_supply"]:
                per[line["generic_group"]].append((e["event_time"], line["days_supply"]))
    for buys in per.values():
        buys.sort()
        for i, (t, _) in enumerate(buys):
            if sum(n for t2, n in buys[i:] if t2 - t < 30 * DAY_MS) > 60:
                return 2 <= len({e["institution_id"] for e in ev}) <= 3
    return False


def _basket(e: Rec) -> list[tuple[str, int]]:
    return [(x["item_code"], x["quantity"]) for x in e["items"]]


def duplicate_billing(s: Stream, lab: Rec) -> bool:
    a, b = s.events(lab)
    return (
        a["person_id"] == b["person_id"]
        and a["institution_id"] == b["institution_id"]
        and _basket(a) == _basket(b)
        and a["total_fen"] == b["total_fen"]
        and b["reversal_of"] is None
        and 0 < b["event_time"] - a["event_time"] <= 10 * MINUTE_MS
    )


def split_charging(s: Stream, lab: Rec) -> bool:
    (e,) = s.events(lab)
    codes = {x["item_code"] for x in e["items"]}
    return any(
        len(codes & {c for c, _, _ in p.sub_items}) >= p.min_sub_items and p.code not in codes
        for p in s.packages
    )


def drug_swap(s: Stream, lab: Rec) -> bool:
    (e,) = s.events(lab, "ST")
    billed = {x["item_code"] for x in e["items"] if x["item_type"] == "DRUG"}
    scans = [x for x in s.scans if x["settlement_id"] == e["event_id"] and x["scan_type"] == "SALE"]
    if scans:
        return any(x["drug_code"] not in billed for x in scans)
    return any(x["item_type"] == "DRUG" and not x["trace_codes"] for x in e["items"])


def trace_code_resale(s: Stream, lab: Rec) -> bool:
    """The labelled sale scans: a SALE of the code whose previous SALE had no RETURN after it
    (a box legitimately returned and sold again before the fraud is not the fraud)."""
    history = [x for x in s.scans if x["trace_code"] == lab["entity_id"]]
    labelled = {i for i in lab["event_ids"] if i.startswith("TS")}
    sales = [n for n, x in enumerate(history) if x["scan_type"] == "SALE"]
    for a, b in itertools.pairwise(sales):
        if history[b]["event_id"] in labelled and history[a]["event_id"] in labelled:
            return all(x["scan_type"] != "RETURN" for x in history[a:b])
    return False


def impersonation(s: Stream, lab: Rec) -> bool:
    face, settlement = s.events(lab)
    weak = face["result"] == "FAIL" or face["match_score"] < 0.7 or not face["liveness_passed"]
    return (
        weak
        and settlement["face_verify_id"] == face["event_id"]
        and settlement["channel"] == "FACE"
    )


def impossible_travel(s: Stream, lab: Rec) -> bool:
    """The two labelled checks are consecutive checks of the person, too far apart too soon."""
    checks = [f for f in s.faces if f["subject_id"] == lab["entity_id"]]
    labelled = set(lab["event_ids"])
    for a, b in itertools.pairwise(checks):
        if a["event_id"] in labelled and b["event_id"] in labelled:
            km = (
                distance_m(a["device_lat"], a["device_lon"], b["device_lat"], b["device_lon"])
                / 1000
            )
            return km > 50 and km / ((b["event_time"] - a["event_time"]) / HOUR_MS) > 200
    return False


def hanging_bed(s: Stream, lab: Rec) -> bool:
    stay = next(e for e in s.events(lab, "ST") if e["visit_type"] == "INPATIENT")
    a, z = stay["admission_time"], stay["discharge_time"]
    checks = sorted(
        f["event_time"]
        for f in s.faces
        if f["subject_id"] == stay["person_id"]
        and f["purpose"] == "BEDSIDE"
        and a <= f["event_time"] <= z
    )
    points = [a, *checks]
    gap = (
        any(y - x > 2 * DAY_MS for x, y in itertools.pairwise(points))
        or z - points[-1] > 2 * DAY_MS
    )
    elsewhere = any(
        e["person_id"] == stay["person_id"]
        and e["institution_id"] != stay["institution_id"]
        and a < e["event_time"] < z
        for e in s.settlements
    )
    return gap or elsewhere


def split_hospitalization(s: Stream, lab: Rec) -> bool:
    first, _, second = s.events(lab)
    return (
        first["institution_id"] == second["institution_id"]
        and first["diagnosis_codes"][0] == second["diagnosis_codes"][0]
        and 0 < second["admission_time"] - first["discharge_time"] <= 15 * DAY_MS
    )


def licence_lending(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    if ev[0]["event_id"].startswith("FV"):
        a, b = ev
        return (
            a["purpose"] == b["purpose"] == "CLOCK_IN"
            and a["institution_id"] != b["institution_id"]
            and abs(b["event_time"] - a["event_time"]) <= 60 * MINUTE_MS
        )
    day = (ev[0]["event_time"] + 8 * HOUR_MS) // DAY_MS
    clocked = any(
        f["subject_id"] == lab["entity_id"]
        and f["purpose"] == "CLOCK_IN"
        and (f["event_time"] + 8 * HOUR_MS) // DAY_MS == day
        for f in s.faces
    )
    return not clocked and all(e["doctor_id"] == lab["entity_id"] for e in ev)


def fence_breach(s: Stream, lab: Rec) -> bool:
    inst = s.registry.institutions[lab["entity_id"]]
    return all(
        distance_m(f["device_lat"], f["device_lon"], inst.lat, inst.lon) > inst.fence_radius_m + 100
        for f in s.events(lab)
    )


def pharmacy_basket_ring(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    baskets = {tuple(sorted(_basket(e))) for e in ev}
    return (
        len(baskets) == 1
        and len(next(iter(baskets))) >= 3
        and _max_in_window([(e["event_time"], e["person_id"]) for e in ev], DAY_MS) >= 6
        and {e["institution_id"] for e in ev} == {lab["entity_id"]}
    )


def pharmacy_hopping(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    groups = set.intersection(*({x["generic_group"] for x in e["items"]} for e in ev))
    return (
        bool(groups)
        and _max_in_window([(e["event_time"], e["institution_id"]) for e in ev], 7 * DAY_MS) >= 3
    )


def odd_hour_sales(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    nights = {(e["event_time"] + 8 * HOUR_MS) // DAY_MS for e in ev}
    return (
        len(ev) >= 3
        and len(nights) == 1
        and all(local_hour(e["event_time"]) < 5 for e in ev)
        and all(e["institution_type"] == "PHARMACY" for e in ev)
        and local_weekday(ev[0]["event_time"]) < 5
    )


def maintenance_window(s: Stream, lab: Rec) -> bool:
    return all(
        local_weekday(e["event_time"]) == 6 and 1 <= local_hour(e["event_time"]) < 4
        for e in s.events(lab)
    )


def card_burst(s: Stream, lab: Rec) -> bool:
    times = sorted(e["event_time"] for e in s.events(lab))
    return any(times[i + 3] - times[i] <= 10 * MINUTE_MS for i in range(len(times) - 3))


def repeated_exam(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    exams = set.intersection(
        *({x["item_code"] for x in e["items"] if x["item_type"] == "EXAM"} for e in ev)
    )
    times = sorted(e["event_time"] for e in ev)
    return (
        bool(exams)
        and all(e["visit_type"] == "OUTPATIENT" for e in ev)
        and any(times[i + 2] - times[i] < 7 * DAY_MS for i in range(len(times) - 2))
    )


def group_visit(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    keys = {(e["institution_id"], e["diagnosis_codes"][0], tuple(sorted(_basket(e)))) for e in ev}
    return (
        len(keys) == 1
        and _max_in_window([(e["event_time"], e["person_id"]) for e in ev], HOUR_MS) >= 8
    )


def _daily(s: Stream, inst: str) -> dict[int, list[int]]:
    """Amounts per day of an institution's own activity (not other scenarios' instances)."""
    out: dict[int, list[int]] = defaultdict(list)
    others = s.cited_by_other(inst)
    for e in s.settlements:
        if (
            e["institution_id"] == inst
            and e["reversal_of"] is None
            and e["visit_type"] != "INPATIENT"
            and e["event_id"] not in others
        ):
            out[(e["event_time"] - s.run.sim.start_ms) // DAY_MS].append(e["total_fen"])
    return out


def cost_growth(s: Stream, lab: Rec) -> bool:
    ev = s.events(lab)
    shift = (min(e["event_time"] for e in ev) - s.run.sim.start_ms) // DAY_MS
    daily = _daily(s, lab["entity_id"])
    before = sum(sum(v) for d, v in daily.items() if d < shift) / max(1, shift)
    after = sum(sum(v) for d, v in daily.items() if d >= shift) / max(1, s.run.sim.days - shift)
    return (
        all(e["institution_id"] == lab["entity_id"] for e in ev)
        and 1 <= len(ev) <= 50
        and after > 2 * before
    )


def peer_deviation(s: Stream, lab: Rec) -> bool:
    inst = s.registry.institutions[lab["entity_id"]]
    world = s.run.sim.world
    city = world.by_id[inst.institution_id].city
    peers = {
        x.id
        for x in world.sites
        if x.city == city
        and x.kind == inst.institution_type
        and x.info.level == inst.level
        and x.id != inst.institution_id
    }
    modified = {
        lab2["entity_id"]
        for lab2 in s.run.topic("sim_labels")
        if lab2["scenario"] in ("cost_growth", "peer_deviation")
    }
    costs = [
        e["total_fen"]
        for e in s.settlements
        if e["institution_id"] in peers - modified and e["reversal_of"] is None
    ]
    mine = [e["total_fen"] for e in s.events(lab)]
    return bool(costs) and sum(mine) / len(mine) > 1.5 * sum(costs) / len(costs)


CHECKS: dict[str, Callable[[Stream, Rec], bool]] = {
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
        cost_growth,
        peer_deviation,
    )
}


@pytest.fixture(scope="module")
def stream(tiny: Run) -> Stream:
    return Stream(tiny)


@pytest.mark.parametrize("scenario", [s.id for s in SCENARIOS])
def test_each_instance_crosses_its_threshold(stream: Stream, scenario: str):
    labels = [lab for lab in stream.run.topic("sim_labels") if lab["scenario"] == scenario]
    assert labels
    failing = [lab["description"] for lab in labels if not CHECKS[scenario](stream, lab)]
    assert not failing, failing
