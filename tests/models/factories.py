"""Schema-valid events for detector tests: dicts as decoded from Avro, plus `_topic`.

Times are built from `at(day, hour, minute)` in local time (Asia/Shanghai) from Monday
2025-11-17 00:00, so maintenance windows (Sunday = day -1 or 6) and nights are easy to place.
Money is fen. Ids come from a counter unless given.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from models.alerts import Alert
from models.detector import Detector
from models.reference import Drug, Institution, Registry
from models.runner import DetectorSet, InMemoryStateStore

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_763_308_800_000
"""Monday 2025-11-17 00:00 Asia/Shanghai."""

REGION = "440305"
HOSP = "H440305000001"
HOSP2 = "H440305000002"
CLINIC = "H440305000010"
PHARM = "P440305000001"
PHARM2 = "P440305000002"
PHARM3 = "P440305000003"
DOCTOR = "D440305000001"
DOCTOR2 = "D440305000002"
PHARMACIST = "Y440305000001"
PERSON = "RY0000000001"
PERSON2 = "RY0000000002"

DRUG_A = "XA01ABD075A002010100483"
DRUG_B = "XC09CAL026A001010201234"
DRUG_C = "XN02BEA071A001020300011"
GROUP_A = "metformin_oral"
GROUP_B = "valsartan_oral"
EXAM_CT = "250403001"
DEVICE = "DEV0001"

SHENZHEN = (22.540, 114.060)
GUANGZHOU = (23.130, 113.260)  # ~105 km from Shenzhen

_ids = itertools.count(1)


def at(day: float = 0, hour: float = 0, minute: float = 0) -> int:
    """Epoch ms of a local time relative to Monday 2025-11-17 00:00."""
    return T0 + int(day * DAY + hour * HOUR + minute * MINUTE)


def next_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):010d}"


def registry() -> Registry:
    """Institutions with fences (Shenzhen) and the test drugs."""
    lat, lon = SHENZHEN
    insts = [
        Institution(HOSP, "市人民医院", "HOSPITAL", 3, REGION, lat, lon, 500.0),
        Institution(HOSP2, "区医院", "HOSPITAL", 2, REGION, lat + 0.05, lon, 400.0),
        Institution(CLINIC, "社区诊所", "CLINIC", 0, REGION, lat, lon + 0.05, 200.0),
        Institution(PHARM, "大药房一店", "PHARMACY", 0, REGION, lat + 0.01, lon, 100.0),
        Institution(PHARM2, "大药房二店", "PHARMACY", 0, REGION, lat + 0.02, lon, 100.0),
        Institution(PHARM3, "大药房三店", "PHARMACY", 0, REGION, lat + 0.03, lon, 100.0),
    ]
    drugs = [
        Drug(DRUG_A, "二甲双胍缓释片", GROUP_A, "8123456", 3000, 30),
        Drug(DRUG_B, "缬沙坦胶囊", GROUP_B, "8234567", 4500, 30),
        Drug(DRUG_C, "布洛芬缓释胶囊", "ibuprofen_oral", "8345678", 1500, 10),
    ]
    return Registry.from_items(insts, drugs)


def item(
    code: str,
    *,
    item_type: str = "SERVICE",
    quantity: int = 1,
    unit_price_fen: int = 1000,
    generic_group: str | None = None,
    days_supply: int | None = None,
    trace_codes: Sequence[str] = (),
    name: str | None = None,
) -> dict[str, Any]:
    """One line item (line_no is set by `settlement`)."""
    return {
        "line_no": 0,
        "item_code": code,
        "item_name": name or f"项目{code}",
        "item_type": item_type,
        "generic_group": generic_group,
        "quantity": quantity,
        "unit_price_fen": unit_price_fen,
        "amount_fen": quantity * unit_price_fen,
        "days_supply": days_supply,
        "trace_codes": list(trace_codes),
    }


def drug(
    code: str = DRUG_A,
    *,
    group: str | None = GROUP_A,
    days: int | None = 30,
    quantity: int = 1,
    unit_price_fen: int = 3000,
    trace_codes: Sequence[str] = (),
) -> dict[str, Any]:
    return item(
        code,
        item_type="DRUG",
        quantity=quantity,
        unit_price_fen=unit_price_fen,
        generic_group=group,
        days_supply=days,
        trace_codes=trace_codes,
        name=f"药品{code[-4:]}",
    )


def exam(code: str = EXAM_CT, *, unit_price_fen: int = 20000, name: str = "CT检查") -> dict:
    return item(code, item_type="EXAM", unit_price_fen=unit_price_fen, name=name)


def service(code: str = "110200001", *, unit_price_fen: int = 1500) -> dict[str, Any]:
    return item(code, item_type="SERVICE", unit_price_fen=unit_price_fen, name="诊查费")


def settlement(
    t: int,
    *,
    person: str = PERSON,
    institution: str = HOSP,
    visit_type: str | None = None,
    items: Sequence[dict[str, Any]] | None = None,
    doctor: str | None = DOCTOR,
    pharmacist: str | None = None,
    diagnosis: Sequence[str] = ("J06.900",),
    channel: str = "CARD",
    face_verify_id: str | None = None,
    reversal_of: str | None = None,
    admission: int | None = None,
    discharge: int | None = None,
    fund_ratio: float = 0.7,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A settlement; pharmacy ids (P…) default to a PHARMACY purchase without a doctor."""
    pharmacy = institution.startswith("P")
    visit_type = visit_type or ("PHARMACY" if pharmacy else "OUTPATIENT")
    lines = [dict(it) for it in (items if items is not None else [service()])]
    sign = -1 if reversal_of is not None else 1
    for n, it in enumerate(lines, 1):
        it["line_no"] = n
        if sign < 0:
            it["amount_fen"] = -abs(it["amount_fen"])
    total = sum(it["amount_fen"] for it in lines)
    fund = int(total * fund_ratio)
    inpatient = visit_type == "INPATIENT"
    return {
        "_topic": "settlement",
        "event_id": event_id or next_id("ST"),
        "event_time": t,
        "person_id": person,
        "institution_id": institution,
        "institution_type": "PHARMACY" if pharmacy else "HOSPITAL",
        "institution_level": 0 if pharmacy else 2,
        "region_code": institution[1:7],
        "doctor_id": None if pharmacy and doctor == DOCTOR else doctor,
        "pharmacist_id": pharmacist,
        "department": None if pharmacy else "internal",
        "visit_type": visit_type,
        "admission_time": admission if inpatient else None,
        "discharge_time": discharge if inpatient else None,
        "diagnosis_codes": list(diagnosis),
        "items": lines,
        "total_fen": total,
        "fund_paid_fen": fund,
        "self_paid_fen": total - fund,
        "channel": channel,
        "face_verify_id": face_verify_id,
        "reversal_of": reversal_of,
    }


def reversal(original: dict[str, Any], t: int) -> dict[str, Any]:
    """冲正 of a settlement: same person and items, negative amounts."""
    return settlement(
        t,
        person=original["person_id"],
        institution=original["institution_id"],
        visit_type=original["visit_type"],
        items=original["items"],
        doctor=original["doctor_id"],
        diagnosis=original["diagnosis_codes"],
        reversal_of=original["event_id"],
    )


def copy_of(original: dict[str, Any], t: int) -> dict[str, Any]:
    """The same settlement again under a new id (duplicate billing)."""
    return {**original, "event_id": next_id("ST"), "event_time": t}


def trace_code(product: str = "8123456", serial: int = 1) -> str:
    return f"{product}{serial:013d}"


def scan(
    t: int,
    code: str,
    *,
    scan_type: str = "SALE",
    drug_code: str = DRUG_A,
    institution: str = PHARM,
    settlement_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "_topic": "trace_scan",
        "event_id": event_id or next_id("TS"),
        "event_time": t,
        "trace_code": code,
        "product_code": code[:7],
        "drug_code": drug_code,
        "scan_type": scan_type,
        "institution_id": institution,
        "region_code": institution[1:7],
        "settlement_id": settlement_id,
        "batch_no": "B20250101",
        "operator_id": None,
    }


def face(
    t: int,
    subject: str = PERSON,
    *,
    subject_type: str = "PATIENT",
    purpose: str = "VISIT",
    institution: str = HOSP,
    device_id: str = DEVICE,
    lat: float = SHENZHEN[0],
    lon: float = SHENZHEN[1],
    score: float = 0.95,
    liveness: bool = True,
    result: str | None = None,
    settlement_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "_topic": "face_verify",
        "event_id": event_id or next_id("FV"),
        "event_time": t,
        "subject_type": subject_type,
        "subject_id": subject,
        "purpose": purpose,
        "institution_id": institution,
        "region_code": institution[1:7],
        "device_id": device_id,
        "device_lat": lat,
        "device_lon": lon,
        "match_score": score,
        "liveness_passed": liveness,
        "result": result or ("PASS" if score >= 0.7 and liveness else "FAIL"),
        "settlement_id": settlement_id,
        "liveness_score": 0.99 if liveness else 0.10,
    }


def clock_in(t: int, subject: str = DOCTOR, institution: str = HOSP) -> dict[str, Any]:
    kind = "PHARMACIST" if subject.startswith("Y") else "DOCTOR"
    return face(t, subject, subject_type=kind, purpose="CLOCK_IN", institution=institution)


# --- running detectors ---------------------------------------------------------------------


class JsonStateStore:
    """A store that keeps states as JSON text, like a faust table: proves states are plain data
    and that detectors do not rely on object identity between calls."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get(self, detector_id: str, key: str) -> dict | None:
        raw = self.data.get((detector_id, key))
        return json.loads(raw) if raw is not None else None

    def put(self, detector_id: str, key: str, state: dict | None) -> None:
        if state is None:
            self.data.pop((detector_id, key), None)
        else:
            self.data[(detector_id, key)] = json.dumps(state, ensure_ascii=False)


def run(
    detectors: Detector | Iterable[Detector],
    events: Iterable[dict[str, Any]],
    *,
    flush: bool = True,
    lateness_ms: int = 10 * MINUTE,
    store: Any = None,
) -> tuple[list[Alert], DetectorSet]:
    """Process events in the given order (then fire all timers unless flush=False)."""
    dets = [detectors] if hasattr(detectors, "process") else list(detectors)  # type: ignore[arg-type]
    ds = DetectorSet(
        dets,
        store=store if store is not None else InMemoryStateStore(),
        allowed_lateness_ms=lateness_ms,
        now_ms=lambda: 1_800_000_000_000,
    )
    alerts = ds.process_batch(events)
    if flush:
        alerts += ds.flush()
    return alerts, ds


def by_time(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events in event-time order (stable)."""
    return sorted(events, key=lambda e: e["event_time"])
