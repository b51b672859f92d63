"""The acts every event comes from: a face check, a settlement with its dispensed boxes, a refund.

Normal behaviour and the fraud injectors build on the same acts, so an injected record is as
valid as a normal one and differs only where the fraud is (a failed check that still settles, a
box scanned twice, a drug billed but another scanned).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from streams.simulator.config import DAY_MS
from streams.simulator.events import FACE_VERIFY, SETTLEMENT, TRACE_SCAN, IdGen, SimRecord, Timeline
from streams.simulator.formulary import Billable
from streams.simulator.inventory import SERIAL_MOD, SERIAL_STEP, Inventory
from streams.simulator.world import PHARMACY, Site, Staff, World

Line = tuple[Billable, int]  # (item, quantity)

# Fund share of the covered amount by visit type and tier (0 clinic/pharmacy, 1-3 level).
FUND_SHARE = {
    "OUTPATIENT": (0.8, 0.75, 0.65, 0.55),
    "INPATIENT": (0.9, 0.88, 0.8, 0.7),
    "PHARMACY": (0.5, 0.5, 0.5, 0.5),
}
CHANNELS = (("CARD", 0.3), ("QR_CODE", 0.45), ("FACE", 0.25))
_STEP_INVERSE = pow(SERIAL_STEP, -1, SERIAL_MOD)


class Acts:
    """Builds records, pushes them on the timeline and keeps the shelves."""

    def __init__(
        self, world: World, timeline: Timeline, ids: IdGen, seed: int, start_ms: int
    ) -> None:
        self.world = world
        self.start_ms = start_ms
        self.pop = world.population
        self.timeline = timeline
        self.ids = ids
        self.seed = seed
        self.rng = random.Random(f"acts:{seed}")
        self.inventory = Inventory(seed, self._stock_in)
        self.last_scans: list[dict[str, Any]] = []  # SALE scans of the latest settlement
        self.last_face: dict[str, Any] | None = None  # its SETTLEMENT face check, if any
        # Days of supply bought per (person, generic group): [(day, days)], normal and injected.
        self.ledger: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._group_no = {g: k for k, g in enumerate(world.formulary.groups)}

    # -- supply ledger ------------------------------------------------------------------------

    def supply_allows(self, p: int, drug: Billable, qty: int, day: int, limit: int = 60) -> bool:
        """Would `qty` boxes keep the person within `limit` days of supply in any 30 days?"""
        entries = self.ledger.get((p, self._group_no[drug.generic_group]))
        new = qty * (drug.days_per_box or 0)
        if not entries:
            return new <= limit
        since = day - 30
        return sum(n for d, n in entries if d >= since) + new <= limit

    def _record_supply(self, p: int, day: int, items: list[dict[str, Any]]) -> None:
        for line in items:
            days = line["days_supply"]
            if days:
                key = (p, self._group_no[line["generic_group"]])
                self.ledger.setdefault(key, []).append((day, days))

    def prune_ledger(self, before_day: int) -> None:
        """Forget purchases older than any window that can still matter."""
        for key in list(self.ledger):
            kept = [e for e in self.ledger[key] if e[0] >= before_day]
            if kept:
                self.ledger[key] = kept
            else:
                del self.ledger[key]

    # -- face checks --------------------------------------------------------------------------

    def face(
        self,
        t: int,
        subject_type: str,
        subject_id: str,
        purpose: str,
        site: Site,
        device: int = 0,
        *,
        score: float | None = None,
        liveness: bool = True,
        result: str | None = None,
        settlement_id: str | None = None,
        where: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """A face check at one of the site's terminals (or reported from `where`)."""
        rng = self.rng
        device_id, lat, lon = site.devices[device % len(site.devices)]
        if where is not None:
            lat, lon = where
        if score is None:
            score = round(0.86 + rng.random() * 0.13, 4)
        live = (
            round(0.9 + rng.random() * 0.099, 4)
            if liveness
            else round(0.05 + rng.random() * 0.3, 4)
        )
        if result is None:
            result = "PASS" if score >= 0.7 and liveness else "FAIL"
        rec = {
            "event_id": self.ids.next("FV"),
            "event_time": t,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "purpose": purpose,
            "institution_id": site.info.institution_id,
            "region_code": site.info.region_code,
            "device_id": device_id,
            "device_lat": lat,
            "device_lon": lon,
            "match_score": score,
            "liveness_passed": liveness,
            "result": result,
            "settlement_id": settlement_id,
            "liveness_score": live,
        }
        self.timeline.push(SimRecord(FACE_VERIFY, subject_id, t, "FaceVerifyEvent", rec))
        return rec

    def staff_face(
        self,
        t: int,
        staff: Staff,
        purpose: str,
        site: Site | None = None,
        where: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """A doctor or pharmacist clocking in or out on the attendance terminal (device 0)."""
        site = site or self.world.sites[staff.site]
        return self.face(t, staff.role, staff.staff_id, purpose, site, 0, where=where)

    # -- settlements --------------------------------------------------------------------------

    def channel(self) -> str:
        r = self.rng.random()
        for name, share in CHANNELS:
            r -= share
            if r < 0:
                return name
        return "CARD"

    def settle(
        self,
        t: int,
        p: int,
        site: Site,
        visit_type: str,
        lines: Sequence[Line],
        *,
        doctor: Staff | None = None,
        pharmacist: Staff | None = None,
        dx: Sequence[str] = (),
        channel: str | None = None,
        stock_t: int | None = None,
        face: dict[str, Any] | None = None,
        dispense: str = "scan",
        swap_to: Billable | None = None,
        admission: int | None = None,
        discharge: int | None = None,
        fund_share: float | None = None,
        sid: str | None = None,
        boxes: dict[int, list[str]] | None = None,
    ) -> dict[str, Any]:
        """A settlement at `t` with its identification and its boxes.

        `dispense`: "scan" (every box scanned with the settlement id, the rule), "none" (billed
        without codes or scans) or "swap" (boxes of `swap_to` scanned for the billed drug).
        `face`: overrides of the SETTLEMENT check for channel FACE (score, liveness, result).
        `boxes`: line index -> trace codes to sell instead of boxes from the shelf.
        The SALE scans are left in `last_scans`.
        """
        rng = self.rng
        person_id = self.pop.person_id(p)
        sid = sid or self.ids.next("ST")
        channel = channel or self.channel()
        face_id = None
        self.last_face = None
        if channel == "FACE":
            check = self.face(
                t - 5_000 - int(rng.random() * 40_000),
                "PATIENT",
                person_id,
                "SETTLEMENT",
                site,
                1,
                settlement_id=sid,
                **(face or {}),
            )
            face_id = check["event_id"]
            self.last_face = check
        stock_t = t if stock_t is None else stock_t
        operator = pharmacist.staff_id if pharmacist is not None else None
        items: list[dict[str, Any]] = []
        total = covered = 0
        scan_t = t
        self.last_scans = scans = []
        for n, (item, qty) in enumerate(lines, 1):
            price = item.price_at(site.tier)
            amount = price * qty
            total += amount
            if item.covered:
                covered += amount
            codes: list[str] = []
            if item.item_type == "DRUG" and dispense != "none":
                boxed = swap_to if dispense == "swap" and swap_to is not None else item
                carton = max(2, qty) if site.tier < 2 else max(5, qty)
                if boxes is not None and n - 1 in boxes:
                    codes = list(boxes[n - 1])
                else:
                    codes = self.inventory.take(
                        site.index,
                        boxed,
                        qty,
                        scan_t + 1000,
                        stock_t,
                        carton,
                        exact=stock_t > self.timeline.clock,
                    )
                for code in codes:
                    scan_t += 2_000 + int(rng.random() * 6_000)
                    scans.append(self._scan(scan_t, code, boxed, "SALE", site, sid, operator))
            items.append(
                {
                    "line_no": n,
                    "item_code": item.code,
                    "item_name": item.name,
                    "item_type": item.item_type,
                    "generic_group": item.generic_group,
                    "quantity": qty,
                    "unit_price_fen": price,
                    "amount_fen": amount,
                    "days_supply": qty * item.days_per_box if item.days_per_box else None,
                    "trace_codes": codes,
                }
            )
        if fund_share is None:
            fund_share = FUND_SHARE[visit_type][site.tier] + (rng.random() - 0.5) * 0.1
        fund = round(covered * fund_share)
        rec = {
            "event_id": sid,
            "event_time": t,
            "person_id": person_id,
            "institution_id": site.info.institution_id,
            "institution_type": site.info.institution_type,
            "institution_level": site.info.level,
            "region_code": site.info.region_code,
            "doctor_id": doctor.staff_id if doctor is not None else None,
            "pharmacist_id": operator,
            "department": doctor.department if doctor is not None else None,
            "visit_type": visit_type,
            "admission_time": admission,
            "discharge_time": discharge,
            "diagnosis_codes": list(dx),
            "items": items,
            "total_fen": total,
            "fund_paid_fen": fund,
            "self_paid_fen": total - fund,
            "channel": channel,
            "face_verify_id": face_id,
            "reversal_of": None,
        }
        self.timeline.push(SimRecord(SETTLEMENT, person_id, t, "SettlementEvent", rec))
        self._record_supply(p, (t - self.start_ms) // DAY_MS, items)
        return rec

    def reverse(self, original: dict[str, Any], t: int, site: Site) -> dict[str, Any]:
        """A legitimate refund of a whole settlement: negative lines, boxes scanned back in."""
        sid = self.ids.next("ST")
        items = []
        scan_t = t
        formulary = self.world.formulary.items
        for line in original["items"]:
            items.append(
                {
                    **line,
                    "quantity": -line["quantity"],
                    "amount_fen": -line["amount_fen"],
                    "days_supply": -line["days_supply"]
                    if line["days_supply"]
                    else line["days_supply"],
                    "trace_codes": list(line["trace_codes"]),
                }
            )
            if line["trace_codes"]:
                drug = formulary[line["item_code"]]
                for code in line["trace_codes"]:
                    scan_t += 2_000 + int(self.rng.random() * 5_000)
                    self._scan(scan_t, code, drug, "RETURN", site, None, original["pharmacist_id"])
                self.inventory.give_back(site.index, drug, line["trace_codes"], scan_t)
        rec = {
            **original,
            "event_id": sid,
            "event_time": t,
            "items": items,
            "total_fen": -original["total_fen"],
            "fund_paid_fen": -original["fund_paid_fen"],
            "self_paid_fen": -original["self_paid_fen"],
            "reversal_of": original["event_id"],
            "diagnosis_codes": list(original["diagnosis_codes"]),
        }
        self.timeline.push(SimRecord(SETTLEMENT, rec["person_id"], t, "SettlementEvent", rec))
        return rec

    # -- trace codes --------------------------------------------------------------------------

    def _scan(
        self,
        t: int,
        code: str,
        drug: Billable,
        scan_type: str,
        site: Site,
        settlement_id: str | None,
        operator: str | None,
    ) -> dict[str, Any]:
        rec = {
            "event_id": self.ids.next("TS"),
            "event_time": t,
            "trace_code": code,
            "product_code": code[:7],
            "drug_code": drug.code,
            "scan_type": scan_type,
            "institution_id": site.info.institution_id,
            "region_code": site.info.region_code,
            "settlement_id": settlement_id,
            "batch_no": self.batch_of(code, drug),
            "operator_id": operator,
        }
        self.timeline.push(SimRecord(TRACE_SCAN, code, t, "TraceScanEvent", rec))
        return rec

    def scan(
        self,
        t: int,
        code: str,
        drug: Billable,
        scan_type: str,
        site: Site,
        settlement_id: str | None = None,
    ) -> dict[str, Any]:
        """One scan outside a settlement (scenarios: a box bought back and restocked)."""
        return self._scan(t, code, drug, scan_type, site, settlement_id, self._operator(site))

    def batch_of(self, code: str, drug: Billable) -> str:
        """The production batch printed on a box: lots of 200 boxes in production order."""
        base = self.inventory.serial_base(drug)
        made = (int(code[7:]) - base) * _STEP_INVERSE % SERIAL_MOD
        return f"{(drug.product_code or '0000000')[3:]}{made // 200 + 1:04d}"

    def _stock_in(
        self, t: int, site_no: int, drug: Billable, codes: list[str], carton: int
    ) -> None:
        site = self.world.sites[site_no]
        operator = self._operator(site)
        for k, code in enumerate(codes):
            self._scan(t + k, code, drug, "STOCK_IN", site, None, operator)

    def _operator(self, site: Site) -> str | None:
        if site.info.institution_type != PHARMACY or not site.staff:
            return None
        return self.world.staff[site.staff[0]].staff_id
