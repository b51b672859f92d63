"""Normal life in the region, day by day: who works, who falls ill, who refills, who is admitted.

A day is planned first as light tuples (time, sequence, kind, arguments) and then materialised
in time order into records. Normal behaviour stays under every threshold of docs/detection.md
by construction, not by luck, because a city has millions of people and luck runs out:

- a person has at most 3 settlements a day at distinct institutions, 45 minutes apart, and at
  most 4 distinct institutions over two days (cross-institution frequency, card bursts);
- at most one outpatient visit in 4 days (repeated exams), one stay per 30 days (split
  hospitalisation), nothing else during a stay (hanging bed);
- a supply ledger keeps every person's days of supply of a generic group at most 60 in any
  30 days (over-supply), and people shop at two pharmacies only (pharmacy hopping);
- staff on duty clock in at 07:20-07:58 on their institution's terminal before the first
  patient (08:00); nothing settles between 22:40 and 07:59 (odd hours, maintenance windows).
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from streams.simulator.acts import Acts, Line
from streams.simulator.config import DAY_MS, HOUR_MS, MINUTE_MS, local_weekday
from streams.simulator.formulary import (
    ACUTE,
    DIAGNOSES,
    INPATIENT,
    OTC,
    Diagnosis,
)
from streams.simulator.world import PHARMACY, Site, Staff, World, mix

# Activity kinds of a day plan.
CLOCK_IN, CLOCK_OUT, ADMIT, REFILL, OUTPATIENT, PURCHASE = range(6)

# Hour-of-day weights (arrivals), local time.
HOSPITAL_HOURS = {8: 10, 9: 10, 10: 9, 11: 6, 12: 1.5, 13: 2, 14: 7, 15: 6.5, 16: 5}
TOP_HOSPITAL_HOURS = {**HOSPITAL_HOURS, 17: 2, 18: 1.5, 19: 1}
PHARMACY_HOURS = {
    8: 4,
    9: 7,
    10: 8,
    11: 7,
    12: 5,
    13: 4,
    14: 5,
    15: 5,
    16: 5,
    17: 6,
    18: 7,
    19: 7,
    20: 5,
    21: 2,
}
ADMISSION_HOURS = {8: 6, 9: 8, 10: 8, 11: 6, 12: 2, 13: 3, 14: 5, 15: 5, 16: 4, 17: 2, 18: 1, 19: 1}
# Day-of-week factors, Monday first: fewer outpatients at weekends, slightly more shoppers.
OUTPATIENT_WEEK = (1.1, 1.05, 1.0, 1.0, 0.95, 0.7, 0.55)
PHARMACY_WEEK = (1.0, 0.95, 0.95, 1.0, 1.05, 1.15, 1.1)
ADMISSION_WEEK = (1.2, 1.1, 1.0, 1.0, 1.0, 0.6, 0.5)
# Per insured person and day (China: ~7 outpatient visits and ~0.2 admissions a year).
OUTPATIENT_RATE, PHARMACY_RATE, ADMISSION_RATE = 0.02, 0.015, 0.00055
REVERSAL_SHARE = 0.008
SUPPLY_WINDOW_DAYS, SUPPLY_LIMIT_DAYS = 30, 60
MIN_GAP_MS = 45 * MINUTE_MS


class HourSampler:
    """Draws an arrival time within a day from hour weights."""

    def __init__(self, weights: dict[int, float]) -> None:
        self.hours = sorted(weights)
        self.cumulative = list(accumulate(weights[h] for h in self.hours))

    def __call__(self, rng: random.Random, day_start: int) -> int:
        k = bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return (
            day_start
            + self.hours[min(k, len(self.hours) - 1)] * HOUR_MS
            + int(rng.random() * HOUR_MS)
        )


def duty_share(tier: int, weekday: int) -> int:
    """Percent of a hospital's or clinic's doctors on duty: nearly all on weekdays, a weekend
    rota (bigger hospitals keep more doctors on Saturdays)."""
    if weekday < 5:
        return 94
    if tier >= 2:
        return 45 if weekday == 5 else 35
    return 50 if weekday == 5 else 30


class Roster:
    """Who is on duty: a pure function of (seed, staff, day), so any day can be asked ahead."""

    def __init__(self, world: World, seed: int, start_ms: int) -> None:
        self.world = world
        self.seed = seed
        self.start_ms = start_ms
        self._days: dict[int, list[list[int]]] = {}

    def day(self, d: int) -> list[list[int]]:
        """Staff on duty per site on day d (at least one per site)."""
        cached = self._days.get(d)
        if cached is not None:
            return cached
        weekday = local_weekday(self.start_ms + d * DAY_MS)
        out: list[list[int]] = []
        for site in self.world.sites:
            if site.kind == PHARMACY:  # pharmacists: one day off a week
                on = [s for s in site.staff if mix(self.seed, s, 71) % 7 != weekday]
            else:
                share = duty_share(site.tier, weekday)
                on = [s for s in site.staff if mix(self.seed, s, d, 72) % 100 < share]
            if not on and site.staff:
                on = [site.staff[d % len(site.staff)]]
            out.append(on)
        if len(self._days) > 64:
            for old in sorted(self._days)[:32]:
                del self._days[old]
        self._days[d] = out
        return out

    def doctors(self, site: Site, d: int, departments: tuple[str, ...] = ()) -> list[int]:
        """On-duty doctors of the first department in `departments` that has one, else all."""
        on = self.day(d)[site.index]
        staff = self.world.staff
        for dept in departments:
            hit = [s for s in on if staff[s].department == dept]
            if hit:
                return hit
        return on

    def off_duty(self, site: Site, d: int) -> list[int]:
        on = self.day(d)[site.index]
        return [s for s in site.staff if s not in on]

    def clock_in(self, staff: int, d: int) -> int:
        """07:20-07:58 local on day d."""
        h = mix(self.seed, staff, d, 73)
        return self.start_ms + d * DAY_MS + 7 * HOUR_MS + 20 * MINUTE_MS + h % (38 * MINUTE_MS)

    def clock_out(self, staff: Staff, d: int) -> int:
        site = self.world.sites[staff.site]
        h = mix(self.seed, staff.index, d, 74)
        if site.kind == PHARMACY:
            base = 22 * HOUR_MS + 10 * MINUTE_MS
        elif site.tier == 3:
            base = 20 * HOUR_MS + 40 * MINUTE_MS
        else:
            base = 17 * HOUR_MS + 40 * MINUTE_MS
        return self.start_ms + d * DAY_MS + base + h % (40 * MINUTE_MS)


@dataclass(slots=True)
class Modifier:
    """An institution whose activity is inflated from `start_ms` (cost growth, peer deviation)."""

    start_ms: int
    volume: float  # visit volume multiplier
    amount: float  # amount per visit multiplier
    on_settlement: Callable[[dict[str, Any]], None] | None = None
    versus_peers: bool = False  # amount relative to the peers' mean cost, not the own basket


@dataclass(slots=True)
class Busy:
    """Per-person bookkeeping of the day being planned (and the day before)."""

    today: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    yesterday: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


class NormalLife:
    """Plans and materialises the normal activity of each day."""

    def __init__(self, world: World, acts: Acts, roster: Roster, start_ms: int, seed: int) -> None:
        self.world = world
        self.acts = acts
        self.roster = roster
        self.start_ms = start_ms
        self.rng = random.Random(f"life:{seed}")
        self.pop = world.population
        self.formulary = world.formulary
        n = world.sizes.persons
        self.last_outpatient = array("i", [-1000]) * n
        self.stay_until = array("i", [-1000]) * n
        self.last_discharge = array("i", [-1000]) * n
        self.reserved: dict[int, list[tuple[int, int]]] = {}
        self.suppressed_clock: set[tuple[int, int]] = set()  # (day, staff): a scenario clocks in
        self.modifiers: dict[int, Modifier] = {}
        self.peer_cost: dict[tuple[str, int, int], list[int]] = {}  # [sum fen, count]
        self.refills: dict[int, list[int]] = {}
        self.refill_offset = mix(seed, 5) % 30
        self.busy = Busy()
        self.seq = 0
        self.day_no = 0
        self.day_start = start_ms
        self.sample_hospital = HourSampler(HOSPITAL_HOURS)
        self.sample_top = HourSampler(TOP_HOSPITAL_HOURS)
        self.sample_pharmacy = HourSampler(PHARMACY_HOURS)
        self.sample_admission = HourSampler(ADMISSION_HOURS)
        by_age: dict[str, list[Diagnosis]] = {"child": [], "adult": [], "elderly": []}
        for dx in DIAGNOSES:
            if dx.kind == ACUTE:
                for band in by_age:
                    if dx.ages == "all" or (dx.ages == "adult" and band != "child"):
                        by_age[band].append(dx)
        self.acute = {
            band: (dxs, list(accumulate(d.weight for d in dxs))) for band, dxs in by_age.items()
        }
        inpatient = [d for d in DIAGNOSES if d.kind == INPATIENT]
        self.inpatient = (inpatient, list(accumulate(d.weight for d in inpatient)))
        self.otc = [g for g, kind in self.formulary.group_kind.items() if kind == OTC]
        self.padding = [
            self.formulary.items[c]
            for c in (
                "250101015",
                "250401001",
                "250102001",
                "310701001",
                "120400001",
                "340200001",
                "430000001",
            )
        ]

    # -- planning -----------------------------------------------------------------------------

    def plan_day(self, d: int) -> list[tuple]:
        """The day's activities as (time, seq, kind, *args), sorted."""
        self.day_no = d
        self.day_start = day_start = self.start_ms + d * DAY_MS
        weekday = local_weekday(day_start)
        self.busy = Busy(today={}, yesterday=self.busy.today)
        rng = self.rng
        plan: list[tuple] = []
        self._plan = plan
        n = self.world.sizes.persons
        roster = self.roster.day(d)
        staff = self.world.staff
        for site in self.world.sites:
            for s in roster[site.index]:
                if (d, s) not in self.suppressed_clock:
                    plan.append((self.roster.clock_in(s, d), self._next(), CLOCK_IN, s))
                plan.append((self.roster.clock_out(staff[s], d), self._next(), CLOCK_OUT, s))
        for _ in range(self._count(n * ADMISSION_RATE * ADMISSION_WEEK[weekday])):
            self._plan_admission(rng.randrange(n))
        for p in self.refills.pop(d, ()):
            self._plan_refill(p)
        for p in range(self._first_refill_person(d), n, 30) if d < 30 else ():
            if self.pop.chronic(p):
                self._plan_refill(p)
        for _ in range(self._count(n * OUTPATIENT_RATE * OUTPATIENT_WEEK[weekday])):
            self.plan_outpatient(rng.randrange(n))
        for _ in range(self._count(n * PHARMACY_RATE * PHARMACY_WEEK[weekday])):
            self.plan_purchase(rng.randrange(n))
        self._plan_extra_volume()
        plan.sort()
        if d % 7 == 6:
            self.acts.prune_ledger(d - SUPPLY_WINDOW_DAYS - 1)
        return plan

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _count(self, mu: float) -> int:
        return max(0, int(mu + self.rng.gauss(0, math.sqrt(mu)) + 0.5)) if mu > 0 else 0

    def _first_refill_person(self, d: int) -> int:
        return (d - self.refill_offset) % 30

    def is_reserved(self, p: int, d0: int, d1: int) -> bool:
        return any(a <= d1 and d0 <= b for a, b in self.reserved.get(p, ()))

    def reserve(self, p: int, d0: int, d1: int) -> None:
        """Keep a person out of normal activity on days d0..d1 (a scenario acts for them)."""
        self.reserved.setdefault(p, []).append((d0 - 1, d1 + 1))

    def available(self, p: int, d0: int, d1: int) -> bool:
        """Free for a scenario on days d0..d1: not reserved, not in a stay, no plan today."""
        return (
            not self.is_reserved(p, d0, d1)
            and self.stay_until[p] < d0 - 1
            and p not in self.busy.today
            and p not in self.busy.yesterday
        )

    def _book(self, p: int, site: int, t: int) -> bool:
        """Check the per-person limits for a settlement at `site` around `t`, and record it."""
        if self.stay_until[p] >= self.day_no or self.is_reserved(p, self.day_no, self.day_no):
            return False
        today = self.busy.today.get(p)
        if today is not None:
            if len(today) >= 3:
                return False
            for s, t2 in today:
                if s == site or abs(t - t2) < MIN_GAP_MS:
                    return False
            before = self.busy.yesterday.get(p, ())
            sites = {s for s, _ in today} | {s for s, _ in before} | {site}
            if len(sites) > 4:
                return False
            today.append((site, t))
        else:
            before = self.busy.yesterday.get(p)
            if before and len({s for s, _ in before} | {site}) > 4:
                return False
            self.busy.today[p] = [(site, t)]
        return True

    def _hour(self, site: Site) -> int:
        if site.kind == PHARMACY:
            return self.sample_pharmacy(self.rng, self.day_start)
        if site.tier == 3:
            return self.sample_top(self.rng, self.day_start)
        return self.sample_hospital(self.rng, self.day_start)

    def _pick_doctor(self, site: Site, departments: tuple[str, ...]) -> int | None:
        on = self.roster.doctors(site, self.day_no, departments)
        return on[self.rng.randrange(len(on))] if on else None

    def plan_outpatient(self, p: int, site_no: int | None = None) -> bool:
        """An acute outpatient visit: usual clinic, usual hospital or a top hospital of the city."""
        rng = self.rng
        d = self.day_no
        if d - self.last_outpatient[p] < 4:
            return False
        band = self.pop.age_band(p)
        dxs, cum = self.acute[band]
        dx = dxs[min(bisect_right(cum, rng.random() * cum[-1]), len(dxs) - 1)]
        if site_no is None:
            clinic, hospital, _, _ = self.world.usual_sites(p)
            r = rng.random()
            if r < 0.45:
                site_no = clinic
            elif r < 0.8:
                site_no = hospital
            else:
                tops = self.world.city_of(p).top_hospitals
                site_no = tops[rng.randrange(len(tops))]
        site = self.world.sites[site_no]
        departments = dx.departments
        if band == "child":
            departments = ("pediatrics", *departments)
        doctor = self._pick_doctor(site, departments)
        if doctor is None:
            return False
        t = self._hour(site)
        if not self._book(p, site_no, t):
            return False
        self.last_outpatient[p] = d
        self._plan.append((t, self._next(), OUTPATIENT, p, site_no, doctor, dx.code))
        return True

    def plan_purchase(self, p: int, site_no: int | None = None) -> bool:
        """A self-care purchase at the person's usual pharmacy (or their second one)."""
        rng = self.rng
        if site_no is None:
            _, _, first, second = self.world.usual_sites(p)
            site_no = first if rng.random() < 0.8 else second
        site = self.world.sites[site_no]
        pharmacists = self.roster.day(self.day_no)[site_no]
        if not pharmacists:
            return False
        t = self._hour(site)
        if not self._book(p, site_no, t):
            return False
        pharmacist = pharmacists[rng.randrange(len(pharmacists))]
        self._plan.append((t, self._next(), PURCHASE, p, site_no, pharmacist, None))
        return True

    def _plan_refill(self, p: int) -> None:
        """A chronic patient's monthly refill where their chronic card is (postponed if busy)."""
        d = self.day_no
        h = self.pop.trait(p, 6) % 10
        clinic, hospital, pharmacy, _ = self.world.usual_sites(p)
        site_no = hospital if h < 5 else clinic if h < 8 else pharmacy
        site = self.world.sites[site_no]
        dx, _ = self.world.regimen(p)
        staff: int | None
        if site.kind == PHARMACY:
            on = self.roster.day(d)[site_no]
            staff = on[self.rng.randrange(len(on))] if on else None
        else:
            staff = self._pick_doctor(site, self.formulary.diagnoses[dx[0]].departments)
        t = self._hour(site)
        if (
            staff is None
            or (site.kind != PHARMACY and d - self.last_outpatient[p] < 4)
            or not self._book(p, site_no, t)
        ):
            self.refills.setdefault(d + 1, []).append(p)
            return
        if site.kind != PHARMACY:
            self.last_outpatient[p] = d
        self._plan.append((t, self._next(), REFILL, p, site_no, staff, None))
        self.refills.setdefault(d + self.rng.randint(26, 34), []).append(p)

    def _plan_admission(self, p: int) -> None:
        rng = self.rng
        d = self.day_no
        if d - self.last_discharge[p] < 30 or p in self.busy.today:
            return
        dxs, cum = self.inpatient
        dx = dxs[min(bisect_right(cum, rng.random() * cum[-1]), len(dxs) - 1)]
        if dx.ages == "adult" and self.pop.age_band(p) == "child":
            return
        los = rng.randint(*dx.los)
        if self.stay_until[p] >= d or self.is_reserved(p, d, d + los):
            return
        _, hospital, _, _ = self.world.usual_sites(p)
        if rng.random() < 0.5 or (self.world.sites[hospital].tier < 2 and los > 8):
            tops = self.world.city_of(p).top_hospitals
            hospital = tops[rng.randrange(len(tops))]
        site = self.world.sites[hospital]
        t = self.sample_admission(rng, self.day_start)
        if not self._book(p, hospital, t):
            return
        self.stay_until[p] = d + los
        self.last_discharge[p] = d + los
        self._plan.append((t, self._next(), ADMIT, p, site.index, los, dx.code))

    def _plan_extra_volume(self) -> None:
        """Cost growth: extra visits at inflated institutions, by people of their county."""
        if not self.modifiers:
            return
        counts: dict[int, int] = {}
        for entry in self._plan:
            if entry[2] in (OUTPATIENT, PURCHASE) and entry[4] in self.modifiers:
                counts[entry[4]] = counts.get(entry[4], 0) + 1
        for site_no, mod in self.modifiers.items():
            if mod.volume <= 1 or mod.start_ms >= self.day_start + DAY_MS:
                continue
            site = self.world.sites[site_no]
            county = self.world.counties[site.county]
            extra = round(max(counts.get(site_no, 0), 3) * (mod.volume - 1))
            for _ in range(extra * 3):  # some candidates are busy
                if extra <= 0:
                    break
                p = county.person_start + self.rng.randrange(
                    max(1, county.person_end - county.person_start)
                )
                planned = (
                    self.plan_purchase(p, site_no)
                    if site.kind == PHARMACY
                    else self.plan_outpatient(p, site_no)
                )
                extra -= planned

    # -- materialising ------------------------------------------------------------------------

    def materialise(self, entry: tuple) -> None:
        kind = entry[2]
        if kind in (CLOCK_IN, CLOCK_OUT):
            staff = self.world.staff[entry[3]]
            self.acts.staff_face(entry[0], staff, "CLOCK_IN" if kind == CLOCK_IN else "CLOCK_OUT")
        elif kind == OUTPATIENT:
            self._outpatient(entry[0], entry[3], self.world.sites[entry[4]], entry[5], entry[6])
        elif kind == PURCHASE:
            self._purchase(entry[0], entry[3], self.world.sites[entry[4]], entry[5])
        elif kind == REFILL:
            self._refill(entry[0], entry[3], self.world.sites[entry[4]], entry[5])
        elif kind == ADMIT:
            self.stay(entry[0], entry[3], self.world.sites[entry[4]], entry[5], entry[6])

    def drug_lines(self, p: int, groups: list[str], k: int, max_boxes: int = 2) -> list[Line]:
        """Up to k drugs from `groups`, 1..max_boxes boxes, within the person's supply ledger."""
        rng = self.rng
        lines: list[Line] = []
        pool = list(groups)
        while pool and len(lines) < k:
            g = pool.pop(rng.randrange(len(pool)))
            products = self.formulary.groups[g]
            drug = products[rng.randrange(len(products))]
            qty = 1 if (drug.days_per_box or 1) >= 15 else 1 + rng.randrange(max_boxes)
            if self.acts.supply_allows(p, drug, qty, self.day_no):
                lines.append((drug, qty))
        return lines

    def visit_lines(self, p: int, dx: Diagnosis, site: Site) -> list[Line]:
        """Consultation, drugs, exams and services consistent with an outpatient diagnosis."""
        rng = self.rng
        items = self.formulary.items
        fee = "110200001"
        if site.tier == 3:
            r = rng.random()
            fee = "110200004" if r < 0.2 else "110200003" if r < 0.5 else fee
        lines: list[Line] = [(items[fee], 1)]
        if dx.max_drugs:
            lines += self.drug_lines(p, list(dx.drugs), 1 + rng.randrange(dx.max_drugs))
        for code, prob in dx.exams:
            if rng.random() < prob:
                lines.append((items[code], 1))
        for code, prob in dx.services:
            if rng.random() < prob:
                lines.append((items[code], 1 + rng.randrange(3)))
        return lines

    def _inflate(self, p: int, site: Site, lines: list[Line], mod: Modifier) -> list[Line]:
        """Padding of an inflated institution: more boxes of short acute and self-care drugs
        (never of a chronic regimen, whose supply would then pile up), extra items."""
        tier = site.tier

        def total(ls: list[Line]) -> int:
            return sum(item.price_at(tier) * q for item, q in ls)

        base = total(lines)
        if mod.versus_peers:  # at least `amount` times what peers bill on average
            spent, n = self.peer_cost.get((site.kind, site.tier, site.city), (0, 0))
            base = max(base, spent // n if n >= 5 else 0)
        target = base * mod.amount
        out: list[Line] = []
        for item, q in lines:
            if (
                item.kind in (ACUTE, OTC)
                and (item.days_per_box or 0) <= 10
                and self.acts.supply_allows(p, item, 2 * q, self.day_no)
            ):
                q *= 2
            out.append((item, q))
        if site.kind == PHARMACY:  # more self-care products, one at a time
            groups = [g for g in self.otc if all(i.generic_group != g for i, _ in out)]
            while total(out) < target and groups:
                extra = self.drug_lines(p, groups, 1)
                if not extra:
                    break
                out += extra
                groups.remove(extra[0][0].generic_group or "")
            return out
        for step in range(20):  # exams once each, then more sessions of the services
            if total(out) >= target:
                break
            item = self.padding[step % len(self.padding)]
            at = next((k for k, (i, _) in enumerate(out) if i.code == item.code), None)
            if at is None:
                out.append((item, 1))
            elif item.item_type == "SERVICE":
                out[at] = (item, out[at][1] + 1)
        return out

    def _observe(self, rec: dict[str, Any], site: Site, mod: Modifier | None) -> None:
        """Feed an inflated institution's sample, or the running mean cost of its peer group."""
        if mod is not None:
            if mod.on_settlement is not None:
                mod.on_settlement(rec)
        elif site.index not in self.modifiers:
            key = (site.kind, site.tier, site.city)
            acc = self.peer_cost.setdefault(key, [0, 0])
            acc[0] += rec["total_fen"]
            acc[1] += 1

    def _modified(self, site: Site, t: int) -> Modifier | None:
        mod = self.modifiers.get(site.index)
        return mod if mod is not None and t >= mod.start_ms else None

    def _outpatient(self, t0: int, p: int, site: Site, doctor_no: int, dx_code: str) -> None:
        rng = self.rng
        acts = self.acts
        dx = self.formulary.diagnoses[dx_code]
        if site.tier >= 2 and rng.random() < 0.5:
            acts.face(t0, "PATIENT", self.pop.person_id(p), "VISIT", site, 1)
        t = t0 + 6 * MINUTE_MS + int(rng.random() * 29 * MINUTE_MS)
        lines = self.visit_lines(p, dx, site)
        mod = self._modified(site, t)
        if mod is not None and mod.amount > 1:
            lines = self._inflate(p, site, lines, mod)
        rec = acts.settle(
            t,
            p,
            site,
            "OUTPATIENT",
            lines,
            doctor=self.world.staff[doctor_no],
            dx=(dx.code,),
            stock_t=t0,
        )
        self._after(rec, site, t, mod)

    def _purchase(self, t0: int, p: int, site: Site, pharmacist_no: int) -> None:
        rng = self.rng
        r = rng.random()
        k = 1 if r < 0.55 else 2 if r < 0.85 else 3
        lines = self.drug_lines(p, self.otc, k)
        if not lines:
            return
        t = t0 + 2 * MINUTE_MS + int(rng.random() * 6 * MINUTE_MS)
        mod = self._modified(site, t)
        if mod is not None and mod.amount > 1:
            lines = self._inflate(p, site, lines, mod)
        rec = self.acts.settle(
            t, p, site, "PHARMACY", lines, pharmacist=self.world.staff[pharmacist_no], stock_t=t0
        )
        self._after(rec, site, t, mod)

    def _after(self, rec: dict[str, Any], site: Site, t: int, mod: Modifier | None) -> None:
        self._observe(rec, site, mod)
        if self.rng.random() < REVERSAL_SHARE:
            self.acts.reverse(
                rec, t + 3 * MINUTE_MS + int(self.rng.random() * 22 * MINUTE_MS), site
            )

    def _refill(self, t0: int, p: int, site: Site, staff_no: int) -> None:
        rng = self.rng
        dx, regimen = self.world.regimen(p)
        items = self.formulary.items
        lines: list[Line] = []
        if site.kind != PHARMACY:
            lines.append((items["110200001"], 1))
        for drug in regimen:
            qty = 30 // (drug.days_per_box or 30)
            if self.acts.supply_allows(p, drug, qty, self.day_no):
                lines.append((drug, qty))
        if site.kind != PHARMACY:
            for code, prob in self.formulary.diagnoses[dx[0]].exams:
                if rng.random() < prob:
                    lines.append((items[code], 1))
        if not any(item.item_type == "DRUG" for item, _ in lines):
            return
        staff = self.world.staff[staff_no]
        share = 0.75 + rng.random() * 0.1  # chronic-disease outpatient scheme (门诊慢特病)
        pharmacy = site.kind == PHARMACY
        t = (
            t0
            + (2 if pharmacy else 5) * MINUTE_MS
            + int(rng.random() * (6 if pharmacy else 15) * MINUTE_MS)
        )
        mod = self._modified(site, t)
        if mod is not None and mod.amount > 1:
            lines = self._inflate(p, site, lines, mod)
        if pharmacy:
            rec = self.acts.settle(
                t, p, site, "PHARMACY", lines, pharmacist=staff, dx=dx, stock_t=t0, fund_share=share
            )
        else:
            rec = self.acts.settle(
                t, p, site, "OUTPATIENT", lines, doctor=staff, dx=dx, stock_t=t0, fund_share=share
            )
        self._observe(rec, site, mod)

    def stay(
        self,
        t: int,
        p: int,
        site: Site,
        los: int,
        dx_code: str,
        *,
        skip_bedside: tuple[int, ...] = (),
        attending: int | None = None,
    ) -> dict[str, Any]:
        """An inpatient stay admitted at `t`: admission check, a bedside check every morning,
        discharge settlement on day `los` with bed, nursing, daily labs, drugs and exams.

        `skip_bedside`: days of the stay (1..los) without a bedside check (hanging bed).
        Returns {"admission": check, "bedside": [checks], "settlement": record}.
        """
        rng = self.rng
        acts = self.acts
        items = self.formulary.items
        dx = self.formulary.diagnoses[dx_code]
        person_id = self.pop.person_id(p)
        admission = acts.face(t, "PATIENT", person_id, "ADMISSION", site, 1)
        day0 = self.start_ms + (t - self.start_ms) // DAY_MS * DAY_MS
        d_admit = (t - self.start_ms) // DAY_MS
        bedside = []
        for k in range(1, los + 1):
            if k in skip_bedside:
                continue
            tb = day0 + k * DAY_MS + 7 * HOUR_MS + 30 * MINUTE_MS + int(rng.random() * 3 * HOUR_MS)
            bedside.append(acts.face(tb, "PATIENT", person_id, "BEDSIDE", site, 2 + k % 2))
        discharge_day = d_admit + los
        t_out = day0 + los * DAY_MS + 11 * HOUR_MS + int(rng.random() * 4 * HOUR_MS)
        if attending is None:
            on = self.roster.doctors(site, discharge_day, dx.departments)
            attending = on[rng.randrange(len(on))]
        lines: list[Line] = [
            (items["120100002"], los),
            (items["121100002"], los),
            (items["250101015"], los),
        ]
        for g in dx.drugs:
            products = self.formulary.groups[g]
            drug = products[rng.randrange(len(products))]
            per_day = 1 if drug.days_per_box == 1 else 0
            qty = los * per_day if per_day else 1
            if self.acts.supply_allows(p, drug, qty, discharge_day):
                lines.append((drug, qty))
        for code, prob in dx.exams:
            if rng.random() < prob:
                lines.append((items[code], 1))
        for code, prob in dx.services:  # operations, anaesthesia, implants
            if rng.random() < prob:
                lines.append((items[code], 1))
        lines.append((items["110900001"], los))
        lines.append((items["120400001"], los))
        lines.append((items["C0301021210000104780"], los))
        settlement = acts.settle(
            t_out,
            p,
            site,
            "INPATIENT",
            lines,
            doctor=self.world.staff[attending],
            dx=(dx.code,),
            stock_t=t,
            admission=t,
            discharge=t_out,
        )
        return {"admission": admission, "bedside": bedside, "settlement": settlement}
