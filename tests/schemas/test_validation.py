"""Semantic validation (schemas/validation.py): each rule rejects what it must, the values just
inside its limits pass, simulated normal data never fails, and nothing the codec lets through
makes `validate` or a detector raise anything else."""

from __future__ import annotations

import copy
import math
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.aggregates import InstitutionHourAggregator
from models.runner import DetectorSet, default_detectors
from schemas.codec import Codec
from schemas.validation import (
    EARLIEST_TIME_MS,
    LATEST_TIME_MS,
    MAX_AGE_MS,
    MAX_AMOUNT_FEN,
    MAX_DAYS_SUPPLY,
    MAX_FUTURE_MS,
    MAX_ITEMS,
    MAX_LINE_QUANTITY,
    REASON_CODES,
    InvalidEvent,
    validate,
)
from streams.simulator import SimConfig, Simulation
from tests.models.factories import HOSP, PHARM, REGION, registry
from tests.records import T0, face_verify, settlement, trace_scan
from tests.schemas.test_codec import INT64, OPT_TEXT, TEXT, settlements

NOW = T0 + 3_600_000
S, TS, FV = "SettlementEvent", "TraceScanEvent", "FaceVerifyEvent"
Record = dict[str, Any]


def reason(schema: str, record: Record, now: int | None = NOW) -> str | None:
    """The reason code validation gives, or None if the record passes."""
    try:
        validate(schema, record, now)
    except InvalidEvent as exc:
        assert exc.reason_code in REASON_CODES
        assert str(exc)
        return exc.reason_code
    return None


def with_items(record: Record, **over: Any) -> Record:
    """A settlement whose first line is changed and whose totals still add up."""
    rec = copy.deepcopy(record)
    rec["items"][0].update(over)
    total = sum(it["amount_fen"] for it in rec["items"])
    rec["total_fen"] = total
    rec["fund_paid_fen"] = total * 7 // 10
    rec["self_paid_fen"] = total - rec["fund_paid_fen"]
    return rec


def reversal_of(record: Record) -> Record:
    """A reversal the way the simulator writes one: every quantity and amount negated."""
    rec = copy.deepcopy(record)
    for it in rec["items"]:
        it["quantity"] = -it["quantity"]
        it["amount_fen"] = -it["amount_fen"]
        if it["days_supply"]:
            it["days_supply"] = -it["days_supply"]
    for f in ("total_fen", "fund_paid_fen", "self_paid_fen"):
        rec[f] = -rec[f]
    return {**rec, "event_id": "ST00000002", "reversal_of": record["event_id"]}


# --------------------------------------------------------------------------- valid records


def test_examples_of_every_contract_pass() -> None:
    assert reason("SettlementEvent", settlement()) is None
    assert reason("TraceScanEvent", trace_scan()) is None
    assert reason("FaceVerifyEvent", face_verify()) is None


def test_other_records_are_not_judged() -> None:
    validate("Alert", {}, NOW)
    validate("Watermark", {"nonsense": True}, NOW)


def test_reversal_with_negative_amounts_passes() -> None:
    assert reason("SettlementEvent", reversal_of(settlement())) is None


@pytest.mark.parametrize("drug_code", ["XA10BAA080A001010100347", "ZA10BAD048A0010101011000001"])
def test_real_23_and_simulated_27_character_drug_codes_pass(drug_code: str) -> None:
    assert reason("TraceScanEvent", trace_scan(drug_code=drug_code)) is None


def test_boundaries_just_inside_pass() -> None:
    s = settlement()
    assert reason("SettlementEvent", settlement(event_time=NOW + MAX_FUTURE_MS)) is None
    assert reason("SettlementEvent", settlement(event_time=NOW - MAX_AGE_MS)) is None
    price = MAX_AMOUNT_FEN - 6000  # plus the 6000-fen exam line: exactly the limit
    big = with_items(s, quantity=1, unit_price_fen=price, amount_fen=price)
    assert big["total_fen"] == MAX_AMOUNT_FEN
    assert reason("SettlementEvent", big) is None
    many = with_items(s, quantity=MAX_LINE_QUANTITY, amount_fen=1500 * MAX_LINE_QUANTITY)
    assert reason("SettlementEvent", many) is None
    assert reason("SettlementEvent", with_items(s, days_supply=MAX_DAYS_SUPPLY)) is None
    free = with_items(s, quantity=0, unit_price_fen=0, amount_fen=0, days_supply=0)
    assert reason("SettlementEvent", free) is None
    assert reason("FaceVerifyEvent", face_verify(match_score=0.0, liveness_score=1.0)) is None
    assert reason("FaceVerifyEvent", face_verify(device_lat=-90.0, device_lon=180.0)) is None


def test_summary_settlement_without_lines_passes() -> None:
    assert reason("SettlementEvent", settlement(items=[])) is None


def test_without_a_clock_only_the_fixed_bounds_apply() -> None:
    assert reason(S, settlement(event_time=EARLIEST_TIME_MS), now=None) is None
    assert reason(S, settlement(event_time=LATEST_TIME_MS), now=None) is None
    assert reason(S, settlement(event_time=EARLIEST_TIME_MS - 1), now=None) == "ancient_event_time"
    assert reason(S, settlement(event_time=LATEST_TIME_MS + 1), now=None) == "future_event_time"


def test_fraud_looking_records_are_left_to_the_detectors() -> None:
    """A failed face check, a box sold again, a drug billed without codes: all possible."""
    assert reason("FaceVerifyEvent", face_verify(result="FAIL", liveness_passed=False)) is None
    assert reason("TraceScanEvent", trace_scan(scan_type="RETURN", settlement_id=None)) is None
    no_codes = copy.deepcopy(settlement())
    no_codes["items"][0]["trace_codes"] = []
    assert reason("SettlementEvent", no_codes) is None


# --------------------------------------------------------------------------- rejections

REJECTED: list[tuple[str, str, Callable[[], Record]]] = [
    # time
    ("future_event_time", S, lambda: settlement(event_time=NOW + MAX_FUTURE_MS + 1)),
    ("future_event_time", FV, lambda: face_verify(event_time=2**62)),
    ("ancient_event_time", S, lambda: settlement(event_time=NOW - MAX_AGE_MS - 1)),
    ("ancient_event_time", TS, lambda: trace_scan(event_time=0)),
    ("ancient_event_time", TS, lambda: trace_scan(event_time=T0 // 1000)),  # seconds, not ms
    # signs
    ("negative_amount", S, lambda: with_items(settlement(), quantity=-2, amount_fen=-3000)),
    ("negative_amount", S, lambda: with_items(settlement(), unit_price_fen=-1, amount_fen=-2)),
    ("negative_amount", S, lambda: with_items(settlement(), days_supply=-30)),
    ("negative_amount", S, lambda: settlement(fund_paid_fen=9001, self_paid_fen=-1)),
    ("negative_amount", S, lambda: {**reversal_of(settlement()), "reversal_of": None}),
    ("positive_reversal", S, lambda: {**settlement(), "reversal_of": "ST00000001"}),
    ("missing_reference", S, lambda: {**reversal_of(settlement()), "reversal_of": " "}),
    # sizes
    (
        "absurd_amount",
        S,
        lambda: with_items(
            settlement(),
            unit_price_fen=MAX_AMOUNT_FEN + 1,
            quantity=1,
            amount_fen=MAX_AMOUNT_FEN + 1,
        ),
    ),
    (
        "absurd_amount",
        S,
        lambda: settlement(
            items=[],
            total_fen=MAX_AMOUNT_FEN + 1,
            fund_paid_fen=0,
            self_paid_fen=MAX_AMOUNT_FEN + 1,
        ),
    ),
    (
        "absurd_amount",
        S,
        lambda: settlement(items=[], total_fen=2**62, fund_paid_fen=2**61, self_paid_fen=2**61),
    ),
    (
        "absurd_quantity",
        S,
        lambda: with_items(
            settlement(), quantity=MAX_LINE_QUANTITY + 1, amount_fen=1500 * (MAX_LINE_QUANTITY + 1)
        ),
    ),
    ("absurd_quantity", S, lambda: with_items(settlement(), days_supply=MAX_DAYS_SUPPLY + 1)),
    (
        "absurd_quantity",
        S,
        lambda: settlement(
            items=[{**settlement()["items"][1], "line_no": n} for n in range(MAX_ITEMS + 1)],
            total_fen=6000 * (MAX_ITEMS + 1),
            fund_paid_fen=0,
            self_paid_fen=6000 * (MAX_ITEMS + 1),
        ),
    ),
    # totals
    ("inconsistent_totals", S, lambda: settlement(fund_paid_fen=6301)),
    ("inconsistent_totals", S, lambda: settlement(total_fen=9001, self_paid_fen=2701)),
    ("inconsistent_totals", S, lambda: with_items(settlement(), amount_fen=3001)),
    # codes
    ("bad_code", S, lambda: settlement(institution_id="H36010200001")),  # 11 digits
    ("bad_code", S, lambda: settlement(institution_id="X360102000001")),
    ("bad_code", S, lambda: settlement(institution_id="P360102000001")),  # a HOSPITAL
    ("bad_code", S, lambda: settlement(institution_type="PHARMACY", institution_level=0)),
    ("bad_code", S, lambda: settlement(region_code="36010")),
    ("bad_code", S, lambda: settlement(doctor_id="Y360102000001")),
    ("bad_code", S, lambda: settlement(pharmacist_id="D360102000001")),
    ("bad_code", S, lambda: settlement(diagnosis_codes=["11.900"])),
    ("bad_code", S, lambda: with_items(settlement(), item_code="250305001")),  # a DRUG line
    ("bad_code", S, lambda: with_items(settlement(), trace_codes=["8123456000000000001"])),
    ("bad_code", TS, lambda: trace_scan(trace_code="8123456000000000000X")),
    ("bad_code", TS, lambda: trace_scan(product_code="8123457")),
    ("bad_code", TS, lambda: trace_scan(drug_code="XA10BAA080")),
    ("bad_code", TS, lambda: trace_scan(operator_id="D360102000001")),
    (
        "bad_code",
        FV,
        lambda: face_verify(
            subject_type="DOCTOR",
            subject_id="36010200000000000001",
            purpose="CLOCK_IN",
            settlement_id=None,
        ),
    ),
    (
        "bad_code",
        FV,
        lambda: face_verify(
            subject_type="PHARMACIST",
            subject_id="D360102000001",
            purpose="CLOCK_OUT",
            settlement_id=None,
        ),
    ),
    ("inconsistent_region", S, lambda: settlement(region_code="360103")),
    ("inconsistent_region", TS, lambda: trace_scan(region_code="440305")),
    ("inconsistent_region", FV, lambda: face_verify(region_code="440305")),
    # references and required fields
    ("missing_reference", TS, lambda: trace_scan(settlement_id=None)),
    ("missing_reference", FV, lambda: face_verify(settlement_id="")),
    ("missing_reference", S, lambda: settlement(face_verify_id=None)),  # channel FACE
    ("missing_field", S, lambda: settlement(event_id="")),
    ("missing_field", S, lambda: settlement(person_id="  ")),
    ("missing_field", FV, lambda: face_verify(device_id="")),
    ("missing_field", FV, lambda: face_verify(subject_id="")),
    ("missing_field", S, lambda: settlement(visit_type="INPATIENT")),  # no admission time
    ("missing_field", S, lambda: {k: v for k, v in settlement().items() if k != "items"}),
    ("missing_field", TS, lambda: trace_scan(event_time=None)),
    (
        "inconsistent_times",
        S,
        lambda: settlement(visit_type="INPATIENT", admission_time=T0 - 10, discharge_time=T0 - 20),
    ),
    (
        "inconsistent_times",
        S,
        lambda: settlement(visit_type="INPATIENT", admission_time=T0 + 10, discharge_time=T0 + 20),
    ),
    # ranges and purposes
    (
        "out_of_range",
        S,
        lambda: settlement(visit_type="INPATIENT", admission_time=-(2**62), discharge_time=T0),
    ),
    ("out_of_range", S, lambda: settlement(institution_level=4)),
    ("out_of_range", FV, lambda: face_verify(match_score=1.0001)),
    ("out_of_range", FV, lambda: face_verify(match_score=math.nan)),
    ("out_of_range", FV, lambda: face_verify(liveness_score=-0.1)),
    ("out_of_range", FV, lambda: face_verify(device_lat=91.0)),
    ("out_of_range", FV, lambda: face_verify(device_lon=math.inf)),
    ("bad_purpose", FV, lambda: face_verify(purpose="CLOCK_IN", settlement_id=None)),
    (
        "bad_purpose",
        FV,
        lambda: face_verify(
            subject_type="DOCTOR", subject_id="D360102000001", purpose="BEDSIDE", settlement_id=None
        ),
    ),
]


@pytest.mark.parametrize(
    ("code", "schema", "make"),
    REJECTED,
    ids=[f"{code}-{i}" for i, (code, _, _) in enumerate(REJECTED)],
)
def test_rule_rejects(code: str, schema: str, make: Callable[[], Record]) -> None:
    assert reason(schema, make()) == code


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"quantity": -2, "amount_fen": -3000}, "line 1 quantity -2 is negative but reversal_of"),
        ({"days_supply": -30}, "line 1 days_supply -30 is negative"),
        (
            {"quantity": 0, "amount_fen": 0, "unit_price_fen": MAX_AMOUNT_FEN + 1},
            f"line 1 unit_price_fen {MAX_AMOUNT_FEN + 1} fen",
        ),
        ({"item_code": "NOT-A-DRUG"}, "line 1 drug code 'NOT-A-DRUG' is not a national drug code"),
    ],
)
def test_a_line_error_names_the_line_and_field(over: dict, message: str) -> None:
    record = with_items(settlement(), **over)
    with pytest.raises(InvalidEvent) as err:
        validate("SettlementEvent", record, NOW)
    assert str(err.value).startswith(message), str(err.value)


def test_every_reason_code_has_a_rejection_test() -> None:
    assert {code for code, _, _ in REJECTED} == set(REASON_CODES)


def test_messages_never_carry_person_identifiers() -> None:
    person = "36010200000000000001"
    for record in (
        face_verify(subject_type="DOCTOR", subject_id=person, purpose="CLOCK_IN"),
        face_verify(subject_id=person, purpose="CLOCK_IN"),
    ):
        with pytest.raises(InvalidEvent) as err:
            validate(FV, record, NOW)
        assert person not in str(err.value)
    for _, _, make in REJECTED:
        record = make()
        for field in ("person_id", "subject_id"):
            value = record.get(field)
            if isinstance(value, str) and len(value) > 3:
                try:
                    validate(S if field == "person_id" else FV, record, NOW)
                except InvalidEvent as exc:
                    assert value not in str(exc), (field, str(exc))


# --------------------------------------------------------------------------- simulated data


@pytest.mark.parametrize("seed", [7, 11])
def test_a_whole_simulated_world_passes(seed: int) -> None:
    """Normal life and every injected fraud scenario: nothing may be dead-lettered."""
    sim = Simulation(SimConfig(preset="tiny", seed=seed, days=14))
    failures: dict[str, str] = {}
    n = 0
    now = (sim.end_ms or 0) + 3_600_000
    for rec in sim.records():
        if rec.topic == "sim_labels":
            continue
        n += 1
        try:
            validate(rec.schema, rec.record, now)
        except InvalidEvent as exc:
            failures.setdefault(exc.reason_code, f"{rec.record['event_id']}: {exc}")
    assert n > 10_000
    assert not failures, failures


# --------------------------------------------------------------------------- properties

NAME = {"SettlementEvent": S, "TraceScanEvent": TS, "FaceVerifyEvent": FV}
DOUBLE = st.floats(allow_nan=True, allow_infinity=True)
traces = st.fixed_dictionaries(
    {
        "event_id": TEXT,
        "event_time": INT64,
        "trace_code": TEXT,
        "product_code": TEXT,
        "drug_code": TEXT,
        "scan_type": st.sampled_from(["STOCK_IN", "SALE", "RETURN"]),
        "institution_id": TEXT,
        "region_code": TEXT,
        "settlement_id": OPT_TEXT,
        "batch_no": OPT_TEXT,
        "operator_id": OPT_TEXT,
    }
)
faces = st.fixed_dictionaries(
    {
        "event_id": TEXT,
        "event_time": INT64,
        "subject_type": st.sampled_from(["PATIENT", "DOCTOR", "PHARMACIST"]),
        "subject_id": TEXT,
        "purpose": st.sampled_from(
            ["VISIT", "ADMISSION", "BEDSIDE", "SETTLEMENT", "CLOCK_IN", "CLOCK_OUT"]
        ),
        "institution_id": TEXT,
        "region_code": TEXT,
        "device_id": TEXT,
        "device_lat": DOUBLE,
        "device_lon": DOUBLE,
        "match_score": DOUBLE,
        "liveness_passed": st.booleans(),
        "result": st.sampled_from(["PASS", "FAIL"]),
        "settlement_id": OPT_TEXT,
        "liveness_score": st.none() | DOUBLE,
    }
)
shaped = st.one_of(
    st.tuples(st.just(S), settlements),
    st.tuples(st.just(TS), traces),
    st.tuples(st.just(FV), faces),
)


@given(shaped, st.none() | INT64)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_validate_raises_only_invalid_event_on_schema_shaped_records(
    case: tuple[str, Record], now: int | None
) -> None:
    schema, record = case
    reason(schema, record, now)


@given(shaped, st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_validate_raises_only_invalid_event_on_misshapen_records(
    case: tuple[str, Record], data: st.DataObject
) -> None:
    """Fields missing, None where the schema has none, wrong types: still only InvalidEvent."""
    schema, record = case
    field = data.draw(st.sampled_from(sorted(record)))
    junk = data.draw(st.none() | st.integers() | st.text() | st.lists(st.none()) | DOUBLE)
    if data.draw(st.booleans()):
        del record[field]
    else:
        record[field] = junk
    reason(schema, record, NOW)


# Odd but valid: events built to pass validation, with empty lists, None optionals, zero
# money, times at both ends of the accepted span, unicode ids; then through the real codec.

DIGITS = string.digits


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(DIGITS, min_size=n, max_size=n)


ODD_TEXT = st.text(min_size=1, max_size=12).filter(str.strip)
REGIONS = st.sampled_from([REGION, "360102"]) | digits(6)
EVENT_TIMES = st.sampled_from([NOW - MAX_AGE_MS, NOW + MAX_FUTURE_MS, NOW, T0]) | st.integers(
    NOW - MAX_AGE_MS, NOW + MAX_FUTURE_MS
)
DRUG_CODES = st.sampled_from(["XA01ABD075A002010100483", "ZA10BAD048A0010101011000001"])


@st.composite
def institutions(draw: st.DrawFn, pharmacy: bool | None = None) -> tuple[str, str, str]:
    """(institution id, type, region): the registry's (with fences) or a fresh one."""
    kind = draw(st.sampled_from(["HOSPITAL", "CLINIC", "PHARMACY"])) if pharmacy is None else (
        "PHARMACY" if pharmacy else "HOSPITAL"
    )  # fmt: skip
    if draw(st.booleans()):
        return (PHARM if kind == "PHARMACY" else HOSP), kind, REGION
    region = draw(REGIONS)
    letter = "P" if kind == "PHARMACY" else "H"
    return f"{letter}{region}{draw(digits(6))}", kind, region


def staff(letter: str) -> st.SearchStrategy[str | None]:
    return (
        st.none()
        | st.sampled_from([f"{letter}{REGION}000001"])
        | digits(12).map(lambda d: letter + d)
    )


NON_DRUGS = ["CONSUMABLE", "SERVICE", "EXAM"]


@st.composite
def odd_settlements(draw: st.DrawFn) -> Record:
    inst, kind, region = draw(institutions())
    reversal = draw(st.booleans())
    sign = -1 if reversal else 1
    items = []
    for n in range(draw(st.integers(0, 4))):
        qty = draw(st.integers(0, MAX_LINE_QUANTITY))
        price = draw(st.integers(0, MAX_AMOUNT_FEN // max(qty, 1) // 5))
        drug = draw(st.booleans())
        days = draw(st.none() | st.integers(0, MAX_DAYS_SUPPLY))
        items.append({
            "line_no": draw(st.sampled_from([n + 1, 0, -1, 2**31 - 1])),
            "item_code": draw(DRUG_CODES) if drug else draw(st.text(max_size=20)),
            "item_name": draw(st.text(max_size=12)),
            "item_type": "DRUG" if drug else draw(st.sampled_from(NON_DRUGS)),
            "generic_group": draw(OPT_TEXT),
            "quantity": sign * qty,
            "unit_price_fen": price,
            "amount_fen": sign * qty * price,
            "days_supply": None if days is None else sign * days,
            "trace_codes": draw(st.lists(digits(20), max_size=3)),
        })  # fmt: skip
    total = (
        sum(it["amount_fen"] for it in items)
        if items
        else sign * draw(st.integers(0, MAX_AMOUNT_FEN))
    )
    fund = sign * draw(st.integers(0, abs(total)))
    t = draw(EVENT_TIMES)
    visit = draw(st.sampled_from(["OUTPATIENT", "INPATIENT", "PHARMACY"]))
    admission = discharge = draw(st.none() | INT64) if visit != "INPATIENT" else None
    if visit == "INPATIENT":
        admission = t - draw(st.integers(0, 400 * 86_400_000))
        discharge = admission + draw(st.integers(0, 2**40))
    channel = draw(st.sampled_from(["CARD", "QR_CODE", "FACE"]))
    return {
        "event_id": draw(ODD_TEXT),
        "event_time": t,
        "person_id": draw(st.sampled_from(["RY0000000001", "人员😀"]) | ODD_TEXT),
        "institution_id": inst,
        "institution_type": kind,
        "institution_level": draw(st.integers(0, 3)),
        "region_code": region,
        "doctor_id": draw(staff("D")),
        "pharmacist_id": draw(staff("Y")),
        "department": draw(OPT_TEXT),
        "visit_type": visit,
        "admission_time": admission,
        "discharge_time": discharge,
        "diagnosis_codes": draw(st.lists(st.sampled_from(["E11.900", "I10.x00", "Z99"]) | st.text(
            max_size=5).map(lambda s: "J20" + s), max_size=3)),
        "items": items,
        "total_fen": total,
        "fund_paid_fen": fund,
        "self_paid_fen": total - fund,
        "channel": channel,
        "face_verify_id": draw(ODD_TEXT if channel == "FACE" else OPT_TEXT),
        "reversal_of": draw(ODD_TEXT) if reversal else None,
    }  # fmt: skip


@st.composite
def odd_scans(draw: st.DrawFn) -> Record:
    inst, _, region = draw(institutions())
    code = draw(st.sampled_from(["81234560000000000001"]) | digits(20))
    scan_type = draw(st.sampled_from(["STOCK_IN", "SALE", "RETURN"]))
    return {
        "event_id": draw(ODD_TEXT),
        "event_time": draw(EVENT_TIMES),
        "trace_code": code,
        "product_code": code[:7],
        "drug_code": draw(DRUG_CODES),
        "scan_type": scan_type,
        "institution_id": inst,
        "region_code": region,
        "settlement_id": draw(ODD_TEXT if scan_type == "SALE" else OPT_TEXT),
        "batch_no": draw(OPT_TEXT),
        "operator_id": draw(staff("Y")),
    }


@st.composite
def odd_faces(draw: st.DrawFn) -> Record:
    inst, _, region = draw(institutions())
    subject = draw(st.sampled_from(["PATIENT", "DOCTOR", "PHARMACIST"]))
    if subject == "PATIENT":
        subject_id = draw(st.sampled_from(["RY0000000001"]) | ODD_TEXT)
        purpose = draw(st.sampled_from(["VISIT", "ADMISSION", "BEDSIDE", "SETTLEMENT"]))
    else:
        subject_id = draw(staff("D" if subject == "DOCTOR" else "Y").filter(bool))
        purpose = draw(st.sampled_from(["CLOCK_IN", "CLOCK_OUT"]))
    unit = st.floats(0, 1)
    return {
        "event_id": draw(ODD_TEXT),
        "event_time": draw(EVENT_TIMES),
        "subject_type": subject,
        "subject_id": subject_id,
        "purpose": purpose,
        "institution_id": inst,
        "region_code": region,
        "device_id": draw(ODD_TEXT),
        "device_lat": draw(st.floats(-90, 90)),
        "device_lon": draw(st.floats(-180, 180)),
        "match_score": draw(unit),
        "liveness_passed": draw(st.booleans()),
        "result": draw(st.sampled_from(["PASS", "FAIL"])),
        "settlement_id": draw(ODD_TEXT if purpose == "SETTLEMENT" else OPT_TEXT),
        "liveness_score": draw(st.none() | unit),
    }


TOPIC = {S: "settlement", TS: "trace_scan", FV: "face_verify"}
odd_events = st.one_of(
    st.tuples(st.just(S), odd_settlements()),
    st.tuples(st.just(TS), odd_scans()),
    st.tuples(st.just(FV), odd_faces()),
)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_odd_strategies_produce_valid_events() -> None:
    """The generators below must mostly build events that pass (else the property is empty)."""
    passed = 0
    for _ in range(200):
        schema, record = odd_events.example()
        passed += reason(schema, record) is None
    assert passed >= 190


@given(st.lists(odd_events, min_size=1, max_size=25), st.booleans())
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_detectors_never_raise_on_odd_but_valid_events(
    events: list[tuple[str, Record]], sort: bool
) -> None:
    codec = Codec.default()
    decoded = []
    for schema, record in events:
        if reason(schema, record) is not None:
            continue  # the worker dead-letters it: detectors never see it
        event = codec.decode(codec.encode(schema, record), expect=schema)  # what a worker sees
        event["_topic"] = TOPIC[schema]
        decoded.append(event)
    assume(decoded)
    if sort:  # the worker's reorder buffer judges in event-time order; a replay may not
        decoded.sort(key=lambda e: e["event_time"])
    ds = DetectorSet(
        [*default_detectors(registry()), InstitutionHourAggregator(now_ms=lambda: NOW)],
        now_ms=lambda: NOW,
    )
    for event in decoded:
        ds.process(event)
    ds.advance(max(e["event_time"] for e in decoded) + 86_400_000)
    ds.flush()


@given(odd_events)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_odd_valid_events_pass_the_codec(case: tuple[str, Record]) -> None:
    schema, record = case
    assume(reason(schema, record) is None)
    codec = Codec.default()
    assert codec.decode(codec.encode(schema, record), expect=schema) == record


def test_remembered_codes_do_not_let_a_bad_one_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """Codes that matched are remembered (a set lookup instead of a regular expression): a
    code that does not match is still rejected, before and after the memory is full, and a
    value that is not a string is never looked up as one."""
    from schemas import validation

    for pattern in validation._MATCHED:
        monkeypatch.setitem(validation._MATCHED, pattern, set())
    monkeypatch.setattr(validation, "MATCHED_LIMIT", 2)
    good = settlement()
    for _ in range(2):
        assert reason(S, good) is None
    assert good["institution_id"] in validation._MATCHED[validation._INSTITUTION]
    for inst in (good["institution_id"] + "0", good["institution_id"][:-1] + "x", 12345):
        assert reason(S, {**good, "institution_id": inst}) == "bad_code", inst
    region = good["region_code"]
    many = [settlement(institution_id=f"H{region}{i:06d}") for i in range(5)]
    assert all(reason(S, r) is None for r in many)
    assert len(validation._MATCHED[validation._INSTITUTION]) == 2  # bounded
    assert reason(S, {**good, "institution_id": "H" + "1" * 11}) == "bad_code"
