"""The analyst views answer the first questions on a small, known data set (embedded chDB).

Rows go in through the sink's row functions (so person ids are pseudonymised as in production)
and `Store.insert_rows`; no Kafka. Times are placed relative to the current local day because
the views ask about "today" and "the last 30 days".
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from models.window import DAY_MS, HOUR_MS, MINUTE_MS, local_day, local_day_start
from streams.privacy import Pseudonymizer
from streams.sink.rows import HANDLERS, Lineage
from streams.store.client import Store
from streams.store.tables import VIEWS
from tests import records as rec

pytestmark = pytest.mark.integration

PSEUDO = Pseudonymizer(b"views-test-key")
NOW = time.time_ns() // 1_000_000
TODAY = local_day_start(local_day(NOW))  # local midnight, epoch ms
YESTERDAY = TODAY - DAY_MS

A, B, C, D = "H360102000001", "P360102000002", "H360103000001", "H360402000001"
P1, P2, P3 = "360102199001010011", "360102199202020022", "360103198503030033"
DOC1, DOC2, DOC3 = "D360102000001", "D360102000002", "D360103000001"


def at(day_start: int, hour: int, minute: int = 0) -> int:
    return day_start + hour * HOUR_MS + minute * MINUTE_MS


def local_date(t: int) -> date:
    return (datetime.fromtimestamp(t / 1000, UTC) + timedelta(hours=8)).date()


def settlement(eid: str, t: int, inst: str, person: str, doctor: str | None, total: int,
               reversal_of: str | None = None) -> dict[str, Any]:  # fmt: skip
    fund = total * 7 // 10
    pharmacy = inst.startswith("P")
    return rec.settlement(
        event_id=eid, event_time=t, institution_id=inst, region_code=inst[1:7],
        institution_type="PHARMACY" if pharmacy else "HOSPITAL",
        institution_level=0 if pharmacy else 2, person_id=person, doctor_id=doctor,
        total_fen=total, fund_paid_fen=fund, self_paid_fen=total - fund, reversal_of=reversal_of,
        visit_type="PHARMACY" if pharmacy else "OUTPATIENT",
    )  # fmt: skip


def hour(inst: str, start: int, n: int, amount: int, persons: int, revision: int = 0,
         reversals: int = 0) -> dict[str, Any]:  # fmt: skip
    fund = amount * 7 // 10
    return rec.institution_hour(
        institution_id=inst, region_code=inst[1:7], hour_start=start, settlements=n,
        reversals=reversals, amount_fen=amount, fund_paid_fen=fund, self_paid_fen=amount - fund,
        distinct_persons=persons, doctors=1, revision=revision,
        institution_type="PHARMACY" if inst.startswith("P") else "HOSPITAL",
    )  # fmt: skip


def alert(aid: str, t: int, detector: str, kind: str, entity_type: str, entity: str,
          inst: str | None, at_risk: int, severity: int = 2,
          evidence: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    return rec.alert(
        alert_id=aid, event_time=t, detected_at=t + 1000, detector_id=detector, kind=kind,
        entity_type=entity_type, entity_id=entity, institution_id=inst,
        region_code=inst[1:7] if inst else None, amount_at_risk_fen=at_risk, severity=severity,
        evidence_event_ids=list(evidence),
    )  # fmt: skip


SETTLEMENTS = [
    settlement("S1", at(TODAY, 9, 10), A, P1, DOC1, 10000),
    settlement("S2", at(TODAY, 9, 40), A, P2, DOC1, 20000),
    settlement("S3", at(TODAY, 10, 15), A, P1, DOC2, 5000),
    settlement("S4", at(TODAY, 9, 30), B, P1, None, 3000),
    settlement("S5", at(TODAY, 11, 0), C, P3, DOC3, 8000),
    settlement("S6", at(TODAY, 10, 50), A, P1, DOC2, -5000, reversal_of="S3"),
    settlement("S7", at(YESTERDAY, 15, 0), A, P3, DOC1, 4000),
]
HOURS = [
    # the worker's rows for the settlements above; A 09:00 was corrected by a late event, and the
    # stale revision arrives last: the store must keep revision 1 all the same
    hour(A, at(TODAY, 9), 2, 30000, 2, revision=1),
    hour(A, at(TODAY, 9), 1, 10000, 1, revision=0),
    hour(A, at(TODAY, 10), 1, 0, 1, reversals=1),
    hour(B, at(TODAY, 9), 1, 3000, 1),
    hour(C, at(TODAY, 11), 1, 8000, 1),
    hour(A, at(YESTERDAY, 15), 1, 4000, 1),
]
ALERTS = [
    alert("a1", at(TODAY, 9, 40), "cross_institution_frequency", "suspicious", "person", P2, A,
          14000, evidence=("S2",)),
    alert("a1", at(TODAY, 9, 40), "cross_institution_frequency", "suspicious", "person", P2, A,
          14000, evidence=("S2",)),  # re-emitted: one alert
    alert("a2", at(TODAY, 10, 15), "duplicate_billing", "violation", "institution", A, A, 3500,
          severity=3, evidence=("S1", "S3")),
    alert("a3", at(TODAY, 10, 16), "duplicate_billing", "violation", "institution", A, A, 1000),
    alert("a4", at(TODAY, 11, 0), "drug_over_supply", "suspicious", "person", P3, C, 5600),
    alert("a5", at(YESTERDAY, 20, 0), "drug_swap", "violation", "institution", D, D, 50000),
    alert("a6", TODAY - 40 * DAY_MS, "duplicate_billing", "violation", "institution", A, A,
          999999),
    alert("a7", at(TODAY, 8, 0), "group_pooling", "suspicious", "group", "G1", None, 700),
]  # fmt: skip
FACES = [
    rec.face_verify(event_id="F1", event_time=at(TODAY, 9, 9), subject_id=P1, institution_id=A,
                    region_code=A[1:7], settlement_id="S1"),
    rec.face_verify(event_id="F2", event_time=at(TODAY, 9, 9), subject_type="DOCTOR",
                    subject_id=DOC1, institution_id=A, region_code=A[1:7], settlement_id=None),
]  # fmt: skip


def put(store: Store, role: str, records: list[dict[str, Any]]) -> None:
    """Store records as the sink would (row functions, pseudonyms), one insert per table."""
    to_rows = HANDLERS[role][1]
    tables: dict[str, list[Any]] = defaultdict(list)
    for offset, record in enumerate(records):
        for table, row in to_rows(record, Lineage(0, offset, 1, NOW), PSEUDO):
            tables[table].append(row)
    for table, rows in tables.items():
        for row in rows:  # one part per row: FINAL must collapse across parts
            store.insert_rows(table, [row])


@pytest.fixture
def loaded(store: Store) -> Store:
    put(store, "settlement", SETTLEMENTS)
    put(store, "aggregates", HOURS)
    put(store, "alerts", ALERTS)
    put(store, "face_verify", FACES)
    return store


def query(store: Store, sql: str) -> list[dict[str, Any]]:
    result = store.client.query(sql.replace("{db}", f"`{store.database}`"))
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


@pytest.mark.parametrize("view", [v.name for v in VIEWS])
def test_every_view_runs_on_an_empty_store(store: Store, view: str) -> None:
    assert query(store, f"SELECT * FROM {{db}}.{view}") == []


def test_region_daily_rolls_hours_up_and_counts_persons_from_settlements(loaded: Store) -> None:
    rows = {
        (r["day"], r["region_code"]): r for r in query(loaded, "SELECT * FROM {db}.region_daily")
    }
    today, yesterday = local_date(TODAY), local_date(YESTERDAY)
    r = rows[today, "360102"]
    assert (r["province_code"], r["city_code"]) == ("36", "3601")
    # A: 2 (revision 1, not the stale 0) + 1 at 10:00 with its reversal; B: 1
    assert (r["settlements"], r["reversals"], r["institutions"]) == (4, 1, 2)
    assert (r["amount_fen"], r["fund_paid_fen"]) == (33000, 23100)
    assert r["amount_yuan"] == Decimal("330.00")
    assert r["distinct_persons"] == 2  # P1 at A twice and at B, P2 once: not 1 + 1 + 1
    assert (r["alerts"], r["violations"], r["suspicious"], r["amount_at_risk_fen"]) == (
        3, 2, 1, 18500,
    )  # fmt: skip
    c = rows[today, "360103"]
    assert (c["settlements"], c["distinct_persons"], c["alerts"], c["suspicious"]) == (1, 1, 1, 1)
    assert rows[yesterday, "360102"]["settlements"] == 1
    d = rows[yesterday, "360402"]  # alerts without settlements still show
    assert (d["settlements"], d["alerts"], d["amount_at_risk_fen"]) == (0, 1, 50000)
    city = query(
        loaded,
        f"SELECT city_code, sum(settlements) AS n, sum(fund_paid_fen) AS fund "
        f"FROM {{db}}.region_daily WHERE day = '{today}' GROUP BY city_code ORDER BY city_code",
    )
    assert city == [{"city_code": "3601", "n": 5, "fund": 23100 + 5600}]


def test_todays_alerts_by_detector_and_region(loaded: Store) -> None:
    rows = query(loaded, "SELECT * FROM {db}.alerts_by_detector_region_today")
    got = [
        (r["detector_id"], r["kind"], r["region_code"], r["alerts"], r["amount_at_risk_fen"])
        for r in rows
    ]
    assert got == [
        ("duplicate_billing", "violation", "360102", 2, 4500),  # most alerts first
        ("cross_institution_frequency", "suspicious", "360102", 1, 14000),  # re-emission: once
        ("drug_over_supply", "suspicious", "360103", 1, 5600),
        ("group_pooling", "suspicious", "", 1, 700),  # no region: still counted
    ]  # yesterday's a5 and the 40-day-old a6 are not today's
    assert rows[0]["high_severity"] == 1
    assert (rows[0]["province_code"], rows[0]["city_code"]) == ("36", "3601")


def test_top_institutions_rank_by_alerts_then_money(loaded: Store) -> None:
    rows = query(loaded, "SELECT * FROM {db}.top_institutions")
    got = [(r["institution_id"], r["rank_by_alerts"], r["rank_by_amount"]) for r in rows]
    assert got == [(A, 1, 2), (D, 2, 1), (C, 3, 3)]  # D and C tie on alerts: more money first
    a = rows[0]
    assert (a["alerts"], a["violations"], a["suspicious"], a["detectors"]) == (3, 2, 1, 2)
    assert (a["violation_amount_fen"], a["suspicious_amount_fen"]) == (4500, 14000)  # not a6
    assert (a["settlements"], a["fund_paid_fen"]) == (4, 21000 + 2800)
    assert a["institution_type"] == "HOSPITAL"
    assert a["at_risk_share_of_fund_paid"] == pytest.approx(18500 / 23800, abs=1e-4)
    assert rows[1]["at_risk_share_of_fund_paid"] is None  # D has no settlements in the window


def test_institution_timeline_interleaves_settlements_and_alerts(loaded: Store) -> None:
    rows = query(loaded, f"SELECT * FROM {{db}}.institution_timeline WHERE institution_id = '{A}'")
    assert [(r["kind"], r["id"]) for r in rows] == [
        ("alert", "a6"), ("settlement", "S7"), ("settlement", "S1"), ("settlement", "S2"),
        ("alert", "a1"), ("settlement", "S3"), ("alert", "a2"), ("alert", "a3"),
        ("settlement", "S6"),
    ]  # fmt: skip
    by_id = {r["id"]: r for r in rows}
    assert (by_id["S6"]["label"], by_id["S6"]["related_ids"]) == ("REVERSAL", ["S3"])
    assert by_id["a2"]["related_ids"] == ["S1", "S3"]
    assert (by_id["a2"]["alert_kind"], by_id["a2"]["severity"]) == ("violation", 3)
    assert by_id["S1"]["person_id"] == PSEUDO.pseudonym(P1)
    assert by_id["a1"]["person_id"] == PSEUDO.pseudonym(P2)
    assert all(r["person_id"] not in (P1, P2, P3) for r in rows)


def test_person_timeline_by_pseudonym(loaded: Store) -> None:
    def timeline(person: str) -> list[tuple[str, str]]:
        sql = "SELECT kind, id FROM {db}.person_timeline WHERE person_id = '%s'"
        return [(r["kind"], r["id"]) for r in query(loaded, sql % PSEUDO.pseudonym(person))]

    assert timeline(P1) == [
        ("face_check", "F1"), ("settlement", "S1"), ("settlement", "S4"), ("settlement", "S3"),
        ("settlement", "S6"),
    ]  # fmt: skip
    assert timeline(P2) == [("settlement", "S2"), ("alert", "a1")]  # alert after its trigger
    assert timeline(P3) == [("settlement", "S7"), ("settlement", "S5"), ("alert", "a4")]
    staff = query(loaded, "SELECT count() AS n FROM {db}.person_timeline WHERE id = 'F2'")
    assert staff == [{"n": 0}]  # a doctor's face check is not a person's event
    nobody = query(
        loaded, f"SELECT count() AS n FROM {{db}}.person_timeline WHERE person_id = '{P1}'"
    )
    assert nobody == [{"n": 0}]  # clear person numbers are not stored


def test_doctor_daily_is_the_deepest_drill_down(loaded: Store) -> None:
    rows = query(loaded, "SELECT * FROM {db}.doctor_daily")
    got = {
        (r["day"], r["institution_id"], r["doctor_id"]): (
            r["settlements"], r["reversals"], r["amount_fen"], r["distinct_persons"],
        )
        for r in rows
    }  # fmt: skip
    today, yesterday = local_date(TODAY), local_date(YESTERDAY)
    assert got == {
        (today, A, DOC1): (2, 0, 30000, 2),
        (today, A, DOC2): (1, 1, 0, 1),  # S3 and its reversal S6
        (today, C, DOC3): (1, 0, 8000, 1),
        (yesterday, A, DOC1): (1, 0, 4000, 1),
    }  # B's pharmacy purchase has no doctor
    assert {(r["province_code"], r["city_code"], r["region_code"]) for r in rows} == {
        ("36", "3601", "360102"), ("36", "3601", "360103"),
    }  # fmt: skip
