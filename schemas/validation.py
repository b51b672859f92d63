"""Semantic validation of decoded input events: valid Avro whose meaning is impossible.

The codec proves a record has the schema's shape; this module proves it could have happened.
A record that fails must become a dead letter with a reason an operator can act on, instead of
crashing a detector, poisoning a window (a 10^15-fen settlement in an institution's hourly
totals) or being judged as if it were real. The checks only encode what the schemas' docs and
the simulator's semantics make certain; anything a fraudster could plausibly produce (a failed
face check that still settles, a box sold twice) is the detectors' business, not a reason to
drop the record.

Entry point: :func:`validate` (schema name, decoded record, wall clock or None). Reason codes
(``InvalidEvent.reason_code``, stable snake_case, stored with the dead letter):

- ``missing_field``: an id the record cannot be judged without is empty (event_id, person,
  device), or an inpatient settlement lacks its admission/discharge time.
- ``missing_reference``: a reference the record's kind requires is absent: a SALE scan without
  settlement_id, a SETTLEMENT face check without settlement_id, a settlement by channel FACE
  without face_verify_id, an empty reversal_of.
- ``bad_code``: an institution/doctor/pharmacist/drug/trace/region/diagnosis code without its
  format (``H``/``P`` + 12 digits, ``D``/``Y`` + 12 digits, 20-digit trace code whose first 7
  digits are the product code, national drug code, 6-digit region, ICD-10 letter + 2 digits),
  or a pharmacy whose id does not start with ``P`` (or a hospital/clinic whose id does).
- ``inconsistent_region``: the institution id's digits 1-6 are not the record's region_code.
- ``negative_amount``: a negative amount, quantity, unit price or days of supply outside a
  reversal (only a reversal, with reversal_of set, may carry negative amounts).
- ``positive_reversal``: a reversal with a positive amount, quantity or supply.
- ``absurd_amount``: money beyond :data:`MAX_AMOUNT_FEN` on a settlement, a line or a price.
- ``absurd_quantity``: a line beyond :data:`MAX_LINE_QUANTITY` units or :data:`MAX_DAYS_SUPPLY`
  days, or more than :data:`MAX_ITEMS` lines.
- ``inconsistent_totals``: fund + self-paid != total, the lines do not sum to the total, or a
  line's amount != quantity x unit price (money is exact integer fen).
- ``inconsistent_times``: discharge before admission, or admission after the settlement.
- ``out_of_range``: institution level outside 0-3, a score outside 0-1, a coordinate outside
  WGS-84, a NaN/infinite number, an admission/discharge time outside 2000-2100.
- ``bad_purpose``: a face check whose purpose does not fit its subject (a patient clocking in,
  a doctor's bedside check).
- ``future_event_time``: event time more than :data:`MAX_FUTURE_MS` after the wall clock, or
  after :data:`LATEST_TIME_MS` (checked even without a clock).
- ``ancient_event_time``: event time more than :data:`MAX_AGE_MS` before the wall clock, or
  before :data:`EARLIEST_TIME_MS` (checked even without a clock).

Messages name the field and, for codes and amounts, the value; never a person identifier
(``person_id``, a face check's ``subject_id``), because dead-letter reasons are logged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "EARLIEST_TIME_MS",
    "LATEST_TIME_MS",
    "MAX_AGE_MS",
    "MAX_AMOUNT_FEN",
    "MAX_DAYS_SUPPLY",
    "MAX_FUTURE_MS",
    "MAX_ITEMS",
    "MAX_LINE_QUANTITY",
    "REASON_CODES",
    "InvalidEvent",
    "validate",
]

DAY_MS = 86_400_000

MAX_AMOUNT_FEN = 1_000_000_000
"""10,000,000 yuan. The dearest single treatments paid today (CAR-T at about 1.2 million yuan,
months of ICU) stay well below it, and the simulator's dearest line is a 12,000-yuan implant;
anything above is a unit error (yuan x 100 twice) or garbage, and would swamp the hourly and
peer-group sums that detectors compare institutions with."""

MAX_LINE_QUANTITY = 10_000
"""Units on one line. An inpatient stay bills bed days and infusions by the hundred at most."""

MAX_DAYS_SUPPLY = 3_650
"""Ten years of treatment on one line: not a sale but a typo. Large but possible supplies are
left to the over-supply detector, which exists to flag them."""

MAX_ITEMS = 2_000
"""Lines in one settlement; a long inpatient stay itemised per day stays in the hundreds."""

MAX_FUTURE_MS = DAY_MS
"""One day ahead of the wall clock: covers terminals with a wrong time zone (+8 h) and clock
drift; later times would hold every window and watermark of the partition hostage."""

MAX_AGE_MS = 10 * 366 * DAY_MS
"""Ten years back: settlement records are kept and audited for years (Shenzhen screened five
years of history), but nothing older is still payable or reviewable; older times are epoch-0
defaults or seconds mistaken for milliseconds."""

EARLIEST_TIME_MS = 946_684_800_000
"""2000-01-01T00:00Z. Without a wall clock (a replay of history) times are still bounded: the
detectors render times as dates, which Python cannot do beyond the years 1-9999."""

LATEST_TIME_MS = 4_102_444_800_000
"""2100-01-01T00:00Z, the other end of the clock-free bound."""

REASON_CODES = (
    "missing_field",
    "missing_reference",
    "bad_code",
    "inconsistent_region",
    "negative_amount",
    "positive_reversal",
    "absurd_amount",
    "absurd_quantity",
    "inconsistent_totals",
    "inconsistent_times",
    "out_of_range",
    "bad_purpose",
    "future_event_time",
    "ancient_event_time",
)

_INSTITUTION = re.compile(r"[HP]\d{12}")
_DOCTOR = re.compile(r"D\d{12}")
_PHARMACIST = re.compile(r"Y\d{12}")
_REGION = re.compile(r"\d{6}")
_TRACE = re.compile(r"\d{20}")
_PRODUCT = re.compile(r"\d{7}")
# National drug code: X (western) or Z (Chinese patent medicine), ATC-like letters/digits; the
# real NHSA code has 23 characters (XA01ABD075A002010100483), the simulator's 27.
_DRUG = re.compile(r"[XZ][A-Z0-9]{22}(?:[A-Z0-9]{4})?")
_ICD10 = re.compile(r"[A-Z]\d{2}.*")

MATCHED_LIMIT = 100_000
"""Codes remembered per pattern as matched (`_MATCHED`), each of at most 32 characters (a
diagnosis code may carry any text after its first three)."""
_MATCHED: dict[re.Pattern[str], set[str]] = {
    p: set() for p in (_INSTITUTION, _DOCTOR, _PHARMACIST, _REGION, _PRODUCT, _DRUG, _ICD10)
}
"""The codes that matched their pattern, for the kinds that repeat (institutions, staff,
drugs...; not trace codes, which are each seen once or twice): a set lookup instead of a
regular expression (the city day's replay on one process: 20.9 → 20.3 s). Bounded: once full,
the others are matched each time."""
_PATIENT_PURPOSES = frozenset({"VISIT", "ADMISSION", "BEDSIDE", "SETTLEMENT"})
_STAFF_PURPOSES = frozenset({"CLOCK_IN", "CLOCK_OUT"})
_MAX_SHOWN = 40


class InvalidEvent(ValueError):
    """A decoded event whose content cannot be true; ``reason_code`` names the rule broken."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


def validate(schema_name: str, event: Mapping[str, Any], now_ms: int | None) -> None:
    """Raise :class:`InvalidEvent` if a decoded input event is meaningless; other records pass.

    ``now_ms`` is the wall clock the event time is checked against; None keeps only the
    clock-free bounds (a replay of old history). Only InvalidEvent escapes: a record that is
    not even shaped like its schema (not from the codec) is ``missing_field``, never a crash.
    """
    check = _VALIDATORS.get(schema_name)
    if check is None:
        return
    try:
        check(event)
        _check_time(event["event_time"], now_ms)
    except InvalidEvent:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise InvalidEvent(
            "missing_field", f"{schema_name} is not shaped like its schema ({type(exc).__name__})"
        ) from exc


# -- helpers -------------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...'"


def _code(
    value: Any, pattern: re.Pattern[str], field: str, what: str, line: int | None = None
) -> None:
    known = _MATCHED.get(pattern)
    if known is not None and isinstance(value, str) and value in known:
        return
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidEvent("bad_code", f"{_line(field, line)} {_show(value)} is not {what}")
    if known is not None and len(value) <= 32 and len(known) < MATCHED_LIMIT:
        known.add(value)


def _optional_code(value: Any, pattern: re.Pattern[str], field: str, what: str) -> None:
    if value is not None:
        _code(value, pattern, field, what)


def _required(value: Any, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent("missing_field", f"{field} is empty")


def _reference(value: Any, field: str, why: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent("missing_reference", f"{field} is missing: {why}")


def _institution(event: Mapping[str, Any]) -> None:
    inst, region = event["institution_id"], event["region_code"]
    _code(inst, _INSTITUTION, "institution_id", "H or P + 12 digits")
    _code(region, _REGION, "region_code", "6 digits")
    if inst[1:7] != region:
        raise InvalidEvent(
            "inconsistent_region",
            f"institution {inst} lies in division {inst[1:7]}, but region_code is {region}",
        )


def _check_time(t: int, now_ms: int | None) -> None:
    if not EARLIEST_TIME_MS <= t <= LATEST_TIME_MS:
        kind = "future_event_time" if t > LATEST_TIME_MS else "ancient_event_time"
        raise InvalidEvent(kind, f"event_time {t} is not between the years 2000 and 2100")
    if now_ms is None:
        return
    if t > now_ms + MAX_FUTURE_MS:
        raise InvalidEvent(
            "future_event_time",
            f"event_time {t} is {(t - now_ms) / 3_600_000:.1f} h ahead of the wall clock "
            f"(limit {MAX_FUTURE_MS // 3_600_000} h)",
        )
    if t < now_ms - MAX_AGE_MS:
        raise InvalidEvent(
            "ancient_event_time",
            f"event_time {t} is {(now_ms - t) / (365.25 * DAY_MS):.1f} years old "
            f"(limit {MAX_AGE_MS // DAY_MS} days)",
        )


def _unit(value: Any, field: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise InvalidEvent("out_of_range", f"{field} {_show(value)} is not between 0 and 1")


# -- per schema ----------------------------------------------------------------------------


def _settlement(e: Mapping[str, Any]) -> None:
    _required(e["event_id"], "event_id")
    _required(e["person_id"], "person_id")
    _institution(e)
    pharmacy_id = e["institution_id"].startswith("P")
    if pharmacy_id != (e["institution_type"] == "PHARMACY"):
        raise InvalidEvent(
            "bad_code",
            f"institution {e['institution_id']} is a {e['institution_type']}: "
            "pharmacies have P codes, hospitals and clinics H codes",
        )
    if not 0 <= e["institution_level"] <= 3:
        raise InvalidEvent("out_of_range", f"institution_level {e['institution_level']} is not 0-3")
    _optional_code(e["doctor_id"], _DOCTOR, "doctor_id", "D + 12 digits")
    _optional_code(e["pharmacist_id"], _PHARMACIST, "pharmacist_id", "Y + 12 digits")
    for dx in e["diagnosis_codes"]:
        _code(dx, _ICD10, "diagnosis code", "ICD-10 (letter + 2 digits)")
    if e["channel"] == "FACE":
        _reference(e["face_verify_id"], "face_verify_id", "channel FACE names its face check")
    if e["visit_type"] == "INPATIENT":
        _inpatient_times(e)

    items = e["items"]
    if len(items) > MAX_ITEMS:
        raise InvalidEvent("absurd_quantity", f"{len(items)} lines (limit {MAX_ITEMS})")
    reversal = e["reversal_of"] is not None
    if reversal:
        _reference(e["reversal_of"], "reversal_of", "a reversal names the settlement it undoes")
    money = [("total_fen", e["total_fen"]), ("fund_paid_fen", e["fund_paid_fen"]),
             ("self_paid_fen", e["self_paid_fen"])]  # fmt: skip
    # (the field names of a line are formatted only for an error: most lines have none)
    for it in items:
        n = it["line_no"]
        _sign("quantity", it["quantity"], reversal, n)
        _sign("amount_fen", it["amount_fen"], reversal, n)
        if it["days_supply"] is not None:
            _sign("days_supply", it["days_supply"], reversal, n)
        if it["unit_price_fen"] < 0:
            raise InvalidEvent(
                "negative_amount", f"line {n} unit_price_fen {it['unit_price_fen']} is negative"
            )
    for field, value in money:
        _sign(field, value, reversal)

    for field, value in money:
        _amount(field, value)
    for it in items:
        n = it["line_no"]
        _amount("amount_fen", it["amount_fen"], n)
        _amount("unit_price_fen", it["unit_price_fen"], n)
        if abs(it["quantity"]) > MAX_LINE_QUANTITY:
            raise InvalidEvent(
                "absurd_quantity",
                f"line {n} quantity {it['quantity']} (limit {MAX_LINE_QUANTITY})",
            )
        days = it["days_supply"]
        if days is not None and abs(days) > MAX_DAYS_SUPPLY:
            raise InvalidEvent(
                "absurd_quantity", f"line {n} days_supply {days} (limit {MAX_DAYS_SUPPLY})"
            )
        if it["item_type"] == "DRUG":
            _code(it["item_code"], _DRUG, "drug code", "a national drug code", n)
        for code in it["trace_codes"]:
            _code(code, _TRACE, "trace code", "20 digits", n)

    total = e["total_fen"]
    if e["fund_paid_fen"] + e["self_paid_fen"] != total:
        raise InvalidEvent(
            "inconsistent_totals",
            f"fund_paid_fen {e['fund_paid_fen']} + self_paid_fen {e['self_paid_fen']} "
            f"!= total_fen {total}",
        )
    for it in items:
        if it["quantity"] * it["unit_price_fen"] != it["amount_fen"]:
            raise InvalidEvent(
                "inconsistent_totals",
                f"line {it['line_no']}: quantity {it['quantity']} x unit_price_fen "
                f"{it['unit_price_fen']} != amount_fen {it['amount_fen']}",
            )
    # A settlement sent without its lines (a summary) is judged on its totals alone.
    if items and sum(it["amount_fen"] for it in items) != total:
        raise InvalidEvent(
            "inconsistent_totals",
            f"lines sum to {sum(it['amount_fen'] for it in items)} fen, total_fen is {total}",
        )


def _line(field: str, line: int | None) -> str:
    return field if line is None else f"line {line} {field}"


def _sign(field: str, value: int, reversal: bool, line: int | None = None) -> None:
    if reversal and value > 0:
        raise InvalidEvent(
            "positive_reversal",
            f"{_line(field, line)} {value} is positive in a reversal (amounts undo)",
        )
    if not reversal and value < 0:
        raise InvalidEvent(
            "negative_amount",
            f"{_line(field, line)} {value} is negative but reversal_of is not set",
        )


def _amount(field: str, value: int, line: int | None = None) -> None:
    if abs(value) > MAX_AMOUNT_FEN:
        field = _line(field, line)
        raise InvalidEvent(
            "absurd_amount",
            f"{field} {value} fen = {value / 100:,.0f} yuan (limit {MAX_AMOUNT_FEN // 100:,})",
        )


def _inpatient_times(e: Mapping[str, Any]) -> None:
    admission, discharge = e["admission_time"], e["discharge_time"]
    if admission is None or discharge is None:
        raise InvalidEvent(
            "missing_field", "an INPATIENT settlement needs admission_time and discharge_time"
        )
    for field, t in (("admission_time", admission), ("discharge_time", discharge)):
        if not EARLIEST_TIME_MS <= t <= LATEST_TIME_MS:
            raise InvalidEvent(
                "out_of_range", f"{field} {t} is not between the years 2000 and 2100"
            )
    if discharge < admission:
        raise InvalidEvent(
            "inconsistent_times", f"discharge_time {discharge} is before admission {admission}"
        )
    if admission > e["event_time"]:
        raise InvalidEvent(
            "inconsistent_times",
            f"admission_time {admission} is after the settlement's event_time {e['event_time']}",
        )


def _trace_scan(e: Mapping[str, Any]) -> None:
    _required(e["event_id"], "event_id")
    code = e["trace_code"]
    _code(code, _TRACE, "trace_code", "20 digits")
    _code(e["product_code"], _PRODUCT, "product_code", "7 digits")
    if code[:7] != e["product_code"]:
        raise InvalidEvent(
            "bad_code",
            f"product_code {e['product_code']} is not the prefix of trace code {code}",
        )
    _code(e["drug_code"], _DRUG, "drug_code", "a national drug code")
    _institution(e)
    _optional_code(e["operator_id"], _PHARMACIST, "operator_id", "Y + 12 digits")
    if e["scan_type"] == "SALE":
        _reference(e["settlement_id"], "settlement_id", "a SALE scan belongs to a settlement")


def _face_verify(e: Mapping[str, Any]) -> None:
    _required(e["event_id"], "event_id")
    _required(e["device_id"], "device_id")
    _institution(e)
    subject, purpose = e["subject_type"], e["purpose"]
    if subject == "PATIENT":
        _required(e["subject_id"], "subject_id")
        allowed = _PATIENT_PURPOSES
    else:  # the staff code itself is not shown: subject ids are never logged
        pattern = _DOCTOR if subject == "DOCTOR" else _PHARMACIST
        if not isinstance(e["subject_id"], str) or not pattern.fullmatch(e["subject_id"]):
            letter = "D" if subject == "DOCTOR" else "Y"
            raise InvalidEvent("bad_code", f"{subject} subject_id is not {letter} + 12 digits")
        allowed = _STAFF_PURPOSES
    if purpose not in allowed:
        raise InvalidEvent("bad_purpose", f"a {subject} face check cannot have purpose {purpose}")
    if purpose == "SETTLEMENT":
        _reference(e["settlement_id"], "settlement_id", "a SETTLEMENT check names its settlement")
    _unit(e["match_score"], "match_score")
    if e["liveness_score"] is not None:
        _unit(e["liveness_score"], "liveness_score")
    lat, lon = e["device_lat"], e["device_lon"]
    if not (math.isfinite(lat) and -90 <= lat <= 90 and math.isfinite(lon) and -180 <= lon <= 180):
        raise InvalidEvent(
            "out_of_range", f"device location ({lat}, {lon}) is not a WGS-84 coordinate"
        )


_VALIDATORS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "SettlementEvent": _settlement,
    "TraceScanEvent": _trace_scan,
    "FaceVerifyEvent": _face_verify,
}
