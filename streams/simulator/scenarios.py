"""Fraud injectors: one function per scenario of `models.catalogue.SCENARIOS`, keyed by its id.

An injector runs when the day its instance starts is planned. It picks its actors (people are
reserved, so normal life leaves them alone from the day before to the day after), builds its
records with the same acts as normal life, pushes them on the timeline (days ahead if the
instance spans days) and pushes the ground-truth label right after the last constituting event.
Each injector crosses its detector's default threshold of docs/detection.md clearly and avoids
crossing the others' (exam-free visits where exams would repeat, short-supply drugs where
supply would add up, at most two pharmacies where hopping would show).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models.catalogue import BY_ID, SCENARIOS
from models.reference import distance_m
from streams.simulator.acts import Acts, Line
from streams.simulator.behaviour import Modifier, NormalLife, Roster
from streams.simulator.config import DAY_MS, HOUR_MS, MINUTE_MS, local_text, local_weekday
from streams.simulator.events import SIM_LABELS, IdGen, SimRecord
from streams.simulator.formulary import ACUTE, INPATIENT, OTC, Diagnosis
from streams.simulator.world import CLINIC, HOSPITAL, PHARMACY, Site, World, offset_km

Injector = Callable[["Context", int], bool]


@dataclass(frozen=True, slots=True)
class Timing:
    """When an instance may start: `span` days must fit before the end of a bounded run;
    `weekday` restricts the start day (0 Monday .. 6 Sunday); `late` asks for history first."""

    span: int = 1
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    late: bool = False


TIMING: dict[str, Timing] = {
    "drug_over_supply": Timing(span=4),
    "trace_code_resale": Timing(span=2),
    "hanging_bed": Timing(span=7),
    "split_hospitalization": Timing(span=6),
    "pharmacy_hopping": Timing(span=2),
    "odd_hour_sales": Timing(weekdays=(0, 1, 2, 3, 4)),
    "maintenance_window": Timing(weekdays=(6,)),
    "repeated_exam": Timing(span=3),
    "cost_growth": Timing(span=6, late=True),
    "peer_deviation": Timing(span=6),
}


def timing(scenario: str) -> Timing:
    return TIMING.get(scenario, Timing())


class Context:
    """What an injector works with, and the helpers they share."""

    def __init__(
        self,
        world: World,
        acts: Acts,
        life: NormalLife,
        roster: Roster,
        ids: IdGen,
        start_ms: int,
        end_day: int | None,
        seed: int,
    ) -> None:
        self.world = world
        self.acts = acts
        self.life = life
        self.roster = roster
        self.ids = ids
        self.start_ms = start_ms
        self.end_day = end_day  # first day not simulated (None: unbounded)
        self.rng = random.Random(f"fraud:{seed}")
        self.pop = world.population
        self.formulary = world.formulary
        self.items = world.formulary.items
        self.day = 0
        self.scenario = ""
        self.modified: set[int] = set()
        self.labels = 0
        # pharmacies with injected night-time sales, per day: one night scenario per pharmacy,
        # so two instances never merge into one (a detector fires once per pharmacy and night)
        self.night_sites: dict[int, set[int]] = {}

    # -- time ---------------------------------------------------------------------------------

    def at(self, day: int, hour: float, jitter_min: float = 0) -> int:
        """Local time `hour` on `day`, plus up to `jitter_min` random minutes."""
        return (
            self.start_ms
            + day * DAY_MS
            + int(hour * HOUR_MS)
            + int(self.rng.random() * jitter_min * MINUTE_MS)
        )

    def days_left(self) -> int:
        """Days from today to the end of the run (today included), large when unbounded."""
        return 10_000 if self.end_day is None else self.end_day - self.day

    # -- actors -------------------------------------------------------------------------------

    def person(
        self,
        d0: int,
        d1: int,
        *,
        city: int | None = None,
        county: int | None = None,
        adult: bool = True,
        chronic: bool = False,
        tries: int = 400,
    ) -> int | None:
        """A person free on days d0..d1, reserved for the scenario."""
        rng = self.rng
        for _ in range(tries):
            if county is not None:
                c = self.world.counties[county]
                p = c.person_start + rng.randrange(max(1, c.person_end - c.person_start))
            elif city is not None:
                counties = self.world.cities[city].counties
                c = self.world.counties[counties[rng.randrange(len(counties))]]
                p = c.person_start + rng.randrange(max(1, c.person_end - c.person_start))
            else:
                p = rng.randrange(self.world.sizes.persons)
            if adult and self.pop.age_band(p) == "child":
                continue
            if chronic and not self.pop.chronic(p):
                continue
            if self.life.available(p, d0, d1):
                self.life.reserve(p, d0, d1)
                return p
        return None

    def sites(
        self, kind: str, city: int | None = None, min_tier: int = 0, max_tier: int = 3
    ) -> list[Site]:
        return [
            s
            for s in self.world.sites
            if s.kind == kind
            and min_tier <= s.tier <= max_tier
            and (city is None or s.city == city)
        ]

    def site(
        self,
        kind: str,
        city: int | None = None,
        min_tier: int = 0,
        max_tier: int = 3,
        exclude: Sequence[int] = (),
    ) -> Site | None:
        options = [s for s in self.sites(kind, city, min_tier, max_tier) if s.index not in exclude]
        return options[self.rng.randrange(len(options))] if options else None

    def doctor(self, site: Site, day: int, dx: Diagnosis | None = None) -> int | None:
        on = self.roster.doctors(site, day, dx.departments if dx else ())
        return on[self.rng.randrange(len(on))] if on else None

    def pharmacist(self, site: Site, day: int) -> int | None:
        on = self.roster.day(day)[site.index]
        return on[self.rng.randrange(len(on))] if on else None

    def acute_dx(self, with_drugs: bool = True) -> Diagnosis:
        options = [
            d
            for d in self.formulary.diagnoses.values()
            if d.kind == ACUTE and (d.max_drugs > 0) == with_drugs
        ]
        return options[self.rng.randrange(len(options))]

    def otc_lines(
        self, k: int, exclude: set[str] | None = None, covered: bool = True
    ) -> list[Line]:
        """k distinct short-supply self-care drugs (at most 10 days a box), 1-2 boxes each."""
        groups = [
            g
            for g, kind in self.formulary.group_kind.items()
            if kind == OTC and (exclude is None or g not in exclude)
        ]
        lines: list[Line] = []
        while groups and len(lines) < k:
            g = groups.pop(self.rng.randrange(len(groups)))
            products = [
                d
                for d in self.formulary.groups[g]
                if (d.days_per_box or 0) <= 10 and d.covered >= covered
            ]
            if products:
                drug = products[self.rng.randrange(len(products))]
                lines.append((drug, 1 + self.rng.randrange(2)))
        return lines

    # -- acts ---------------------------------------------------------------------------------

    def visit(
        self,
        p: int,
        site: Site,
        t: int,
        dx: Diagnosis,
        *,
        lines: list[Line] | None = None,
        doctor: int | None = None,
        exams: bool = True,
        channel: str | None = None,
        face: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """An outpatient settlement by an on-duty doctor (None when nobody is on duty)."""
        day = (t - self.start_ms) // DAY_MS
        if doctor is None:
            doctor = self.doctor(site, day, dx)
            if doctor is None:
                return None
        if lines is None:
            lines = self.life.visit_lines(p, dx, site)
            if not exams:
                lines = [ln for ln in lines if ln[0].item_type != "EXAM"]
        return self.acts.settle(
            t,
            p,
            site,
            "OUTPATIENT",
            lines,
            doctor=self.world.staff[doctor],
            dx=(dx.code,),
            channel=channel,
            face=face,
        )

    def purchase(
        self,
        p: int,
        site: Site,
        t: int,
        lines: list[Line],
        *,
        pharmacist: bool = True,
        channel: str | None = None,
        face: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        staff = None
        if pharmacist:
            on = self.pharmacist(site, (t - self.start_ms) // DAY_MS)
            staff = self.world.staff[on] if on is not None else None
        return self.acts.settle(
            t, p, site, "PHARMACY", lines, pharmacist=staff, channel=channel, face=face, **kwargs
        )

    def label(self, entity_id: str, events: Sequence[dict[str, Any]], description: str) -> None:
        """The ground truth of one instance, on the timeline right after its last event."""
        scenario = BY_ID[self.scenario]
        event_time = max(e["event_time"] for e in events)
        rec = {
            "label_id": self.ids.next("LB"),
            "scenario": scenario.id,
            "entity_type": scenario.entity_type,
            "entity_id": entity_id,
            "event_ids": [e["event_id"] for e in events],
            "expected_detector": scenario.detector_id,
            "event_time": event_time,
            "description": description,
        }
        self.acts.timeline.push(SimRecord(SIM_LABELS, rec["label_id"], event_time, "SimLabel", rec))
        self.labels += 1


def yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


def group_name(ctx: Context, group: str | None) -> str:
    """The Chinese generic name of a group (its first product's name without the package)."""
    products = ctx.formulary.groups.get(group or "")
    return products[0].name.split(" ")[0] if products else str(group)


# -- injectors, in catalogue order ------------------------------------------------------------


def cross_institution_frequency(ctx: Context, d: int) -> bool:
    """6-8 settlements of one person at distinct institutions of their city within a day."""
    rng = ctx.rng
    p = ctx.person(d, d)
    if p is None:
        return False
    city = ctx.world.city_of(p).index
    k = rng.randint(6, 8)
    n_pharm = rng.randint(1, 2)
    care = [
        s for s in ctx.sites(HOSPITAL, city) + ctx.sites(CLINIC, city) if ctx.roster.doctors(s, d)
    ]
    pharmacies = ctx.sites(PHARMACY, city)
    rng.shuffle(care)
    rng.shuffle(pharmacies)
    chosen = care[: k - n_pharm] + pharmacies[:n_pharm]
    if len(chosen) < 6:
        return False
    t = ctx.at(d, 8, 30)
    events: list[dict[str, Any]] = []
    used: set[str] = set()
    for site in chosen:
        if site.kind == PHARMACY:
            lines = ctx.otc_lines(1 + rng.randrange(2), exclude=used)
            rec = ctx.purchase(p, site, t, lines, channel="QR_CODE")
        else:
            dx = ctx.acute_dx()
            lines = [(ctx.items["110200001"], 1)] + [
                ln
                for ln in ctx.life.drug_lines(p, list(dx.drugs), 1)
                if ln[0].generic_group not in used
            ]
            rec = ctx.visit(p, site, t, dx, lines=lines, channel="CARD")
            if rec is None:
                continue
        used.update(ln[0].generic_group or "" for ln in lines)
        events.append(rec)
        t += rng.randint(40, 80) * MINUTE_MS
    if len(events) < 6:
        return False
    ctx.label(ctx.pop.person_id(p), events, f"24小时内在{len(events)}家不同机构就诊购药,阈值5家")
    return True


def drug_over_supply(ctx: Context, d: int) -> bool:
    """3-5 purchases of 30 days of one generic group within <= 20 days, at 2-3 institutions."""
    rng = ctx.rng
    span = min(20, ctx.days_left() - 1)
    k = rng.randint(3, 5)
    if span < 3:
        return False
    k = min(k, span)
    span = rng.randint(max(k, min(span, 10)), span)
    p = ctx.person(d, d + span, chronic=True)
    if p is None:
        p = ctx.person(d, d + span)
    if p is None:
        return False
    dx_codes, regimen = ctx.world.regimen(p)
    if regimen:
        group, dx = regimen[0].generic_group, ctx.formulary.diagnoses[dx_codes[0]]
    else:
        dx = ctx.formulary.diagnoses["I10.x00"]
        group = dx.drugs[rng.randrange(len(dx.drugs))]
    assert group is not None
    clinic, hospital, pharmacy, _ = ctx.world.usual_sites(p)
    places = [hospital, pharmacy, clinic][: rng.randint(2, 3)]
    days = sorted(rng.sample(range(1, span + 1), k - 1))
    events: list[dict[str, Any]] = []
    for n, offset in enumerate([0, *days]):
        site = ctx.world.sites[places[n % len(places)]]
        products = ctx.formulary.groups[group]
        drug = products[rng.randrange(len(products))]
        lines: list[Line] = [(drug, 30 // (drug.days_per_box or 30))]
        if site.kind == PHARMACY:
            t = ctx.at(d + offset, 9, 600)
            rec: dict[str, Any] | None = ctx.purchase(p, site, t, lines, dx=(dx.code,))
        else:
            t = ctx.at(d + offset, 8.5, 420)
            rec = ctx.visit(p, site, t, dx, lines=[(ctx.items["110200001"], 1), *lines])
        if rec is not None:
            events.append(rec)
    if len(events) < 3:
        return False
    spent = (events[-1]["event_time"] - events[0]["event_time"]) // DAY_MS + 1
    total = sum(
        ln["days_supply"] or 0 for e in events for ln in e["items"] if ln["generic_group"] == group
    )
    n_sites = len({e["institution_id"] for e in events})
    ctx.label(
        ctx.pop.person_id(p),
        events,
        f"{spent}天内在{n_sites}家机构{len(events)}次开取{group_name(ctx, group)}"
        f"共{total}天用量,30天窗口阈值60天",
    )
    return True


def duplicate_billing(ctx: Context, d: int) -> bool:
    """A settlement copied under a new id 1-8 minutes after the original."""
    rng = ctx.rng
    site = ctx.site(HOSPITAL, min_tier=1) if rng.random() < 0.7 else ctx.site(CLINIC)
    if site is None:
        return False
    p = ctx.person(d, d, city=site.city)
    if p is None:
        return False
    dx = ctx.formulary.diagnoses[("M54.500", "K76.000", "J20.900")[rng.randrange(3)]]
    lines: list[Line] = [(ctx.items["110200001"], 1)]
    lines += [(ctx.items[c], 1) for c, _ in dx.exams[:2]] or [(ctx.items["250101015"], 1)]
    orig = ctx.visit(p, site, ctx.at(d, 8.5, 420), dx, lines=lines, channel="CARD")
    if orig is None:
        return False
    minutes = rng.randint(1, 8)
    t = orig["event_time"] + minutes * MINUTE_MS + rng.randrange(MINUTE_MS // 2)
    copy = {
        **orig,
        "event_id": ctx.ids.next("ST"),
        "event_time": t,
        "items": [dict(line) for line in orig["items"]],
    }
    ctx.acts.timeline.push(SimRecord("settlement", copy["person_id"], t, "SettlementEvent", copy))
    ctx.label(
        site.id,
        [orig, copy],
        f"同一患者同一机构{minutes}分钟内重复结算相同项目,金额{yuan(orig['total_fen'])}元",
    )
    return True


PACKAGE_DX = {
    "250305001": "K76.000",
    "250307001": "N18.900",
    "250306001": "E78.500",
    "250304001": "E87.600",
}


def split_charging(ctx: Context, d: int) -> bool:
    """A packaged exam billed as 3-4 of its sub-items in one settlement."""
    rng = ctx.rng
    site = ctx.site(HOSPITAL, min_tier=1)
    if site is None:
        return False
    p = ctx.person(d, d, city=site.city)
    if p is None:
        return False
    pkg = ctx.formulary.packages[rng.randrange(len(ctx.formulary.packages))]
    dx = ctx.formulary.diagnoses[PACKAGE_DX.get(pkg.code, "K76.000")]
    subs = rng.sample(
        list(pkg.sub_items), rng.randint(max(3, pkg.min_sub_items), len(pkg.sub_items))
    )
    lines: list[Line] = [(ctx.items["110200001"], 1)] + [(ctx.items[c], 1) for c, _, _ in subs]
    rec = ctx.visit(p, site, ctx.at(d, 8.5, 420), dx, lines=lines)
    if rec is None:
        return False
    billed = sum(line["amount_fen"] for line in rec["items"][1:])
    ctx.label(
        site.id,
        [rec],
        f"{pkg.name}拆分为{len(subs)}个子项目收费({'、'.join(n for _, n, _ in subs)}),"
        f"合计{yuan(billed)}元,组合价{yuan(ctx.items[pkg.code].price_at(site.tier))}元",
    )
    return True


def drug_swap(ctx: Context, d: int) -> bool:
    """A pharmacy bills drug A and scans boxes of B, or bills a drug with no codes and no scans."""
    rng = ctx.rng
    site = ctx.site(PHARMACY)
    if site is None:
        return False
    p = ctx.person(d, d, city=site.city)
    if p is None:
        return False
    billed_lines = ctx.otc_lines(1)
    drug, qty = billed_lines[0]
    t = ctx.at(d, 9, 660)
    if rng.random() < 0.6:
        others = [
            g
            for g, kind in ctx.formulary.group_kind.items()
            if kind == OTC and g != drug.generic_group
        ]
        cheap = [
            x for g in others for x in ctx.formulary.groups[g] if not x.covered
        ] or ctx.formulary.groups[others[0]]
        swap = cheap[rng.randrange(len(cheap))]
        rec = ctx.purchase(p, site, t, [(drug, qty)], dispense="swap", swap_to=swap)
        scans = list(ctx.acts.last_scans)
        ctx.label(
            site.id, [rec, *scans], f"结算{drug.name}×{qty}(医保支付),实际扫码出库{swap.name}"
        )
    else:
        rec = ctx.purchase(p, site, t, [(drug, qty)], dispense="none")
        ctx.label(site.id, [rec], f"结算{drug.name}×{qty},无追溯码且结算后无销售扫码")
    return True


def trace_code_resale(ctx: Context, d: int) -> bool:
    """A sold box sold again 1-10 days later, at the same or another pharmacy of the city."""
    rng = ctx.rng
    gap = rng.randint(1, max(1, min(10, ctx.days_left() - 1)))
    if ctx.days_left() < 2:
        return False
    first_site = ctx.site(PHARMACY)
    if first_site is None:
        return False
    buyer = ctx.person(d, d, city=first_site.city)
    reseller_customer = ctx.person(d + gap, d + gap, city=first_site.city)
    if buyer is None or reseller_customer is None:
        return False
    lines = ctx.otc_lines(1)
    first = ctx.purchase(buyer, first_site, ctx.at(d, 9, 540), lines)
    sold = ctx.acts.last_scans[0]
    code = sold["trace_code"]
    drug = lines[0][0]
    same = rng.random() < 0.5
    second_site = (
        first_site
        if same
        else (ctx.site(PHARMACY, first_site.city, exclude=[first_site.index]) or first_site)
    )
    t = ctx.at(d + gap, 9, 600)
    events: list[dict[str, Any]] = [sold]
    if second_site is not first_site and rng.random() < 0.5:
        # Bought back from the patient and scanned in again (回流药).
        events.append(
            ctx.acts.scan(t - rng.randint(20, 120) * MINUTE_MS, code, drug, "STOCK_IN", second_site)
        )
    second = ctx.purchase(reseller_customer, second_site, t, [(drug, 1)], boxes={0: [code]})
    events += [s for s in ctx.acts.last_scans if s["trace_code"] == code] + [second]
    where = "同一药店" if second_site is first_site else "另一药店"
    del first
    ctx.label(
        code,
        events,
        f"追溯码{code}已于{local_text(sold['event_time'])}售出,{gap}天后在{where}再次销售",
    )
    return True


def impersonation(ctx: Context, d: int) -> bool:
    """A relative settles with the victim's identity by face: low match score or no liveness."""
    rng = ctx.rng
    p = ctx.person(d, d)
    if p is None:
        return False
    relatives = [q for q in ctx.pop.household(p) if q != p]
    clinic, hospital, pharmacy, _ = ctx.world.usual_sites(p)
    if rng.random() < 0.5:
        score = round(rng.uniform(0.3, 0.6), 4)
        face = {"score": score, "liveness": True, "result": "FAIL"}
        what = f"人脸比对分{score:.2f}(阈值0.70)仍完成刷脸结算"
    else:
        score = round(rng.uniform(0.8, 0.95), 4)
        face = {"score": score, "liveness": False, "result": "PASS"}
        what = "活体检测未通过(活体分{live:.2f},疑似照片)仍完成刷脸结算"
    t = ctx.at(d, 9, 600)
    site = ctx.world.sites[(pharmacy, clinic, hospital)[rng.randrange(3)]]
    if site.kind == PHARMACY:
        rec = ctx.purchase(p, site, t, ctx.otc_lines(2), channel="FACE", face=face)
    else:
        found = ctx.visit(p, site, ctx.at(d, 8.5, 420), ctx.acute_dx(), channel="FACE", face=face)
        if found is None:
            return False
        rec = found
    check = ctx.acts.last_face
    assert check is not None
    who = "疑似家属冒用" if relatives else "疑似他人冒用"
    what = what.format(live=check["liveness_score"])
    ctx.label(ctx.pop.person_id(p), [check, rec], f"{what},{who}")
    return True


def impossible_travel(ctx: Context, d: int) -> bool:
    """Two face-identified settlements of one person 150-400 km apart within 30-60 minutes."""
    rng = ctx.rng
    p = ctx.person(d, d)
    if p is None:
        return False
    home = ctx.world.city_of(p)
    _, _, pharmacy, _ = ctx.world.usual_sites(p)
    here = ctx.world.sites[pharmacy]
    far = [
        s
        for s in ctx.sites(PHARMACY)
        if s.city != home.index
        and 150_000 <= distance_m(s.info.lat, s.info.lon, here.info.lat, here.info.lon) <= 400_000
    ]
    if not far:
        return False
    there = far[rng.randrange(len(far))]
    km = distance_m(here.info.lat, here.info.lon, there.info.lat, there.info.lon) / 1000
    t1 = ctx.at(d, 9, 600)
    s1 = ctx.purchase(p, here, t1, ctx.otc_lines(1), channel="FACE")
    f1 = ctx.acts.last_face
    assert f1 is not None
    minutes = rng.randint(30, max(30, min(60, int(km * 60 / 260))))  # >= 260 km/h
    s2 = ctx.purchase(p, there, t1 + minutes * MINUTE_MS, ctx.otc_lines(1), channel="FACE")
    f2 = ctx.acts.last_face
    assert f2 is not None
    km = distance_m(f1["device_lat"], f1["device_lon"], f2["device_lat"], f2["device_lon"]) / 1000
    minutes_apart = (f2["event_time"] - f1["event_time"]) / MINUTE_MS
    ctx.label(
        ctx.pop.person_id(p),
        [f1, s1, f2, s2],
        f"{minutes_apart:.0f}分钟内在相距{km:.0f}公里的两地刷脸结算,"
        f"隐含时速{km / (minutes_apart / 60):.0f}公里/小时",
    )
    return True


def _inpatient(ctx: Context, p: int) -> tuple[Site, Diagnosis]:
    adult_ok = ctx.pop.age_band(p) != "child"
    options = [
        x
        for x in ctx.formulary.diagnoses.values()
        if x.kind == INPATIENT and (adult_ok or x.ages == "all")
    ]
    dx = options[ctx.rng.randrange(len(options))]
    tops = ctx.world.city_of(p).top_hospitals
    return ctx.world.sites[tops[ctx.rng.randrange(len(tops))]], dx


def hanging_bed(ctx: Context, d: int) -> bool:
    """A 6-10 day stay with >= 3 days without bedside checks, or a purchase elsewhere mid-stay."""
    rng = ctx.rng
    los = min(rng.randint(6, 10), ctx.days_left() - 1)
    if los < 6:
        return False
    p = ctx.person(d, d + los)
    if p is None:
        return False
    site, dx = _inpatient(ctx, p)
    ctx.life.stay_until[p] = d + los
    ctx.life.last_discharge[p] = d + los
    t = ctx.at(d, 8.5, 480)
    if rng.random() < 0.6:
        gap = rng.randint(3, min(4, los - 2))
        first = rng.randint(1, los - gap)
        skipped = tuple(range(first, first + gap))
        stay = ctx.life.stay(t, p, site, los, dx.code, skip_bedside=skipped)
        ctx.label(
            ctx.pop.person_id(p),
            [stay["admission"], stay["settlement"]],
            f"住院{los}天,第{first}至{first + gap - 1}天连续{gap}天无床旁刷脸核验",
        )
        return True
    stay = ctx.life.stay(t, p, site, los, dx.code)
    _, _, pharmacy, _ = ctx.world.usual_sites(p)
    mid = rng.randint(1, los - 1)
    shop = ctx.purchase(p, ctx.world.sites[pharmacy], ctx.at(d + mid, 14, 300), ctx.otc_lines(1))
    ctx.label(
        ctx.pop.person_id(p),
        [stay["admission"], shop, stay["settlement"]],
        f"住院{los}天期间(第{mid}天)在{ctx.world.sites[pharmacy].info.name}购药结算",
    )
    return True


def split_hospitalization(ctx: Context, d: int) -> bool:
    """A second stay 3-12 days after the first, same hospital and main diagnosis."""
    rng = ctx.rng
    room = ctx.days_left() - 1
    if room < 5:
        return False
    gap = rng.randint(3, min(12, room - 2))
    los1 = rng.randint(1, min(6, room - gap - 1))
    los2 = rng.randint(1, min(6, room - gap - los1))
    total = los1 + gap + los2
    p = ctx.person(d, d + total)
    if p is None:
        return False
    site, dx = _inpatient(ctx, p)
    ctx.life.stay_until[p] = d + total
    ctx.life.last_discharge[p] = d + total
    first = ctx.life.stay(ctx.at(d, 8.5, 480), p, site, los1, dx.code)
    second = ctx.life.stay(ctx.at(d + los1 + gap, 8.5, 480), p, site, los2, dx.code)
    ctx.label(
        ctx.pop.person_id(p),
        [first["settlement"], second["admission"], second["settlement"]],
        f"出院{gap}天后再次入住{site.info.name},主诊断相同({dx.code} {dx.name}),阈值15天",
    )
    return True


def licence_lending(ctx: Context, d: int) -> bool:
    """A doctor prescribing on a day without clock-in, or clocking in at two institutions."""
    rng = ctx.rng
    hospitals = [s for s in ctx.sites(HOSPITAL) + ctx.sites(CLINIC)]
    rng.shuffle(hospitals)
    if rng.random() < 0.5:
        for site in hospitals:
            off = ctx.roster.off_duty(site, d)
            if not off:
                continue
            doctor = off[rng.randrange(len(off))]
            events = []
            t = ctx.at(d, 9, 60)
            for _ in range(rng.randint(2, 4)):
                p = ctx.person(d, d, city=site.city)
                if p is None:
                    break
                rec = ctx.visit(p, site, t, ctx.acute_dx(), doctor=doctor, exams=False)
                if rec is not None:
                    events.append(rec)
                t += rng.randint(20, 90) * MINUTE_MS
            if events:
                staff = ctx.world.staff[doctor]
                ctx.label(
                    staff.staff_id,
                    events,
                    f"医师{local_text(events[0]['event_time'])[:10]}未刷脸打卡,"
                    f"仍以其名义开具{len(events)}张处方",
                )
                return True
        return False
    for site in hospitals:
        on = ctx.roster.day(d)[site.index]
        other = ctx.site(CLINIC, site.city, exclude=[site.index])
        if not on or other is None:
            continue
        doctor = ctx.world.staff[on[rng.randrange(len(on))]]
        ctx.life.suppressed_clock.add((d, doctor.index))
        t1 = ctx.roster.clock_in(doctor.index, d) - 20 * MINUTE_MS
        c1 = ctx.acts.staff_face(t1, doctor, "CLOCK_IN")
        minutes = rng.randint(10, 50)
        c2 = ctx.acts.staff_face(t1 + minutes * MINUTE_MS, doctor, "CLOCK_IN", site=other)
        ctx.label(
            doctor.staff_id,
            [c1, c2],
            f"医师{minutes}分钟内先后在{site.info.name}和{other.info.name}刷脸打卡",
        )
        return True
    return False


def fence_breach(ctx: Context, d: int) -> bool:
    """Clock-in checks of an institution's staff reported 2-20 km from its fence."""
    rng = ctx.rng
    site = ctx.site(HOSPITAL) if rng.random() < 0.6 else ctx.site(CLINIC)
    if site is None:
        return False
    on = [s for s in ctx.roster.day(d)[site.index] if (d, s) not in ctx.life.suppressed_clock]
    if not on:
        return False
    chosen = rng.sample(on, min(len(on), rng.randint(1, 3)))
    events = []
    for s in chosen:
        ctx.life.suppressed_clock.add((d, s))
        lat, lon = offset_km(
            site.info.lat, site.info.lon, rng.uniform(2, 20), rng.uniform(0, 6.283)
        )
        events.append(
            ctx.acts.staff_face(
                ctx.roster.clock_in(s, d),
                ctx.world.staff[s],
                "CLOCK_IN",
                where=(round(lat, 6), round(lon, 6)),
            )
        )
    km = (
        max(
            distance_m(e["device_lat"], e["device_lon"], site.info.lat, site.info.lon)
            for e in events
        )
        / 1000
    )
    ctx.label(
        site.id,
        events,
        f"{len(events)}次打卡刷脸设备位置距机构最远{km:.1f}公里,"
        f"超出电子围栏半径{site.info.fence_radius_m:.0f}米",
    )
    return True


def pharmacy_basket_ring(ctx: Context, d: int) -> bool:
    """6-10 people buying the same 3-4 item basket at one pharmacy within a day."""
    rng = ctx.rng
    site = ctx.site(PHARMACY)
    if site is None:
        return False
    basket = ctx.otc_lines(rng.randint(3, 4))
    k = rng.randint(6, 10)
    slots = sorted(rng.sample(range(9 * 60, 21 * 60, 25), k))  # minutes, 25 apart
    events = []
    for minute in slots:
        p = ctx.person(d, d, county=site.county, tries=60)
        if p is None:
            p = ctx.person(d, d, city=site.city)
        if p is None:
            continue
        events.append(ctx.purchase(p, site, ctx.at(d, minute / 60, 10), basket))
    if len(events) < 6:
        return False
    names = "、".join(item.name.split(" ")[0] for item, _ in basket)
    ctx.label(
        site.id,
        events,
        f"{len(events)}名参保人当日在同一药店购买相同{len(basket)}种药品组合({names})",
    )
    return True


def pharmacy_hopping(ctx: Context, d: int) -> bool:
    """One person buying one drug at 3-5 pharmacies within 5 days."""
    rng = ctx.rng
    span = max(0, min(4, ctx.days_left() - 1))
    p = ctx.person(d, d + span)
    if p is None:
        return False
    city = ctx.world.city_of(p).index
    pharmacies = ctx.sites(PHARMACY, city)
    k = min(len(pharmacies), rng.randint(3, 5))
    if k < 3:
        return False
    chosen = rng.sample(pharmacies, k)
    line = ctx.otc_lines(1)[0]
    drug, qty = line[0], 1
    offsets = sorted(rng.randint(0, span) for _ in range(k))
    events = []
    last_t = 0
    for site, offset in zip(chosen, offsets, strict=True):
        t = max(ctx.at(d + offset, 9, 600), last_t + 70 * MINUTE_MS)
        last_t = t
        events.append(ctx.purchase(p, site, t, [(drug, qty)]))
    days = (events[-1]["event_time"] - events[0]["event_time"]) // DAY_MS + 1
    ctx.label(
        ctx.pop.person_id(p),
        events,
        f"{days}天内在{k}家药店购买同一通用名药品({group_name(ctx, drug.generic_group)}),"
        "阈值7天3家",
    )
    return True


def odd_hour_sales(ctx: Context, d: int) -> bool:
    """3-6 pharmacy sales between 00:30 and 04:30 on a weekday night."""
    rng = ctx.rng
    site = ctx.site(PHARMACY, exclude=tuple(ctx.night_sites.get(d, ())))
    if site is None:
        return False
    ctx.night_sites.setdefault(d, set()).add(site.index)
    k = rng.randint(3, 6)
    minutes = sorted(rng.sample(range(30, 270, 12), k))
    events = []
    for minute in minutes:
        p = ctx.person(d, d, city=site.city)
        if p is None:
            continue
        lines = ctx.otc_lines(rng.randint(1, 3))
        events.append(
            ctx.purchase(
                p,
                site,
                ctx.at(d, minute / 60, 8),
                lines,
                pharmacist=False,
                channel=("CARD", "QR_CODE")[rng.randrange(2)],
            )
        )
    if len(events) < 3:
        return False
    ctx.label(
        site.id,
        events,
        f"凌晨{local_text(events[0]['event_time'])[11:]}至{local_text(events[-1]['event_time'])[11:]}"
        f"发生{len(events)}笔药店结算,营业时间08:00-22:00",
    )
    return True


def maintenance_window(ctx: Context, d: int) -> bool:
    """1-2 settlements of one pharmacy inside the Sunday 01:00-04:00 maintenance window."""
    rng = ctx.rng
    site = ctx.site(PHARMACY, exclude=tuple(ctx.night_sites.get(d, ())))
    if site is None or local_weekday(ctx.at(d, 2)) != 6:
        return False
    ctx.night_sites.setdefault(d, set()).add(site.index)
    events = []
    for minute in sorted(rng.sample(range(65, 220, 15), rng.randint(1, 2))):
        p = ctx.person(d, d, city=site.city)
        if p is None:
            continue
        events.append(
            ctx.purchase(p, site, ctx.at(d, minute / 60, 10), ctx.otc_lines(2), pharmacist=False)
        )
    if not events:
        return False
    ctx.label(site.id, events, f"系统维护时段(周日01:00-04:00)内发生{len(events)}笔结算")
    return True


def card_burst(ctx: Context, d: int) -> bool:
    """4-6 settlements of one card within 10 minutes at one or two pharmacies."""
    rng = ctx.rng
    p = ctx.person(d, d)
    if p is None:
        return False
    _, _, first, second = ctx.world.usual_sites(p)
    k = rng.randint(4, 6)
    t = ctx.at(d, 9, 600)
    used: set[str] = set()
    events = []
    for n in range(k):
        site = ctx.world.sites[first if n % 2 == 0 or rng.random() < 0.5 else second]
        lines = ctx.otc_lines(1, exclude=used)
        if not lines:
            break
        used.update(ln[0].generic_group or "" for ln in lines)
        events.append(ctx.purchase(p, site, t, lines, channel="CARD"))
        t += rng.randint(60, 110) * 1000
    if len(events) < 4:
        return False
    minutes = (events[-1]["event_time"] - events[0]["event_time"]) / MINUTE_MS
    ctx.label(
        ctx.pop.person_id(p),
        events,
        f"{minutes:.1f}分钟内同一医保卡结算{len(events)}次,阈值10分钟4次",
    )
    return True


REPEATED_EXAMS = {
    "210300001": "M54.500",
    "220201001": "K29.700",
    "210102001": "J20.900",
    "310701001": "R51.x00",
}


def repeated_exam(ctx: Context, d: int) -> bool:
    """One exam billed in 3-4 outpatient settlements within 5 days."""
    rng = ctx.rng
    span = min(4, ctx.days_left() - 1)
    if span < 2:
        return False
    k = min(rng.randint(3, 4), span + 1)
    p = ctx.person(d, d + span)
    if p is None:
        return False
    code = list(REPEATED_EXAMS)[rng.randrange(len(REPEATED_EXAMS))]
    dx = ctx.formulary.diagnoses[REPEATED_EXAMS[code]]
    _, hospital, _, _ = ctx.world.usual_sites(p)
    tops = ctx.world.city_of(p).top_hospitals
    places = [ctx.world.sites[hospital], ctx.world.sites[tops[rng.randrange(len(tops))]]]
    offsets = sorted(rng.sample(range(span + 1), k))
    events = []
    for n, offset in enumerate(offsets):
        lines: list[Line] = [(ctx.items["110200001"], 1), (ctx.items[code], 1)]
        rec = ctx.visit(
            p,
            places[n % 2 if rng.random() < 0.5 else 0],
            ctx.at(d + offset, 8.5, 420),
            dx,
            lines=lines,
        )
        if rec is not None:
            events.append(rec)
    if len(events) < 3:
        return False
    days = (events[-1]["event_time"] - events[0]["event_time"]) // DAY_MS + 1
    ctx.label(
        ctx.pop.person_id(p),
        events,
        f"{days}天内{len(events)}次门诊重复开具{ctx.items[code].name},阈值7天3次",
    )
    return True


def group_visit(ctx: Context, d: int) -> bool:
    """8-12 people with the same diagnosis and items at one clinic within an hour."""
    rng = ctx.rng
    site = ctx.site(CLINIC) or ctx.site(HOSPITAL, max_tier=1)
    if site is None:
        return False
    dx = ctx.formulary.diagnoses[("J06.900", "K29.700", "M54.500")[rng.randrange(3)]]
    doctor = ctx.doctor(site, d, dx)
    if doctor is None:
        return False
    drug_groups = list(dx.drugs)
    rng.shuffle(drug_groups)
    lines: list[Line] = [(ctx.items["110200001"], 1)]
    for g in drug_groups[:2]:
        products = [x for x in ctx.formulary.groups[g] if (x.days_per_box or 0) <= 10]
        if products:
            lines.append((products[rng.randrange(len(products))], 1))
    k = rng.randint(8, 12)
    t = ctx.at(d, 9, 300)
    hour_text = local_text(t)
    events = []
    for _ in range(k):
        p = ctx.person(d, d, county=site.county, tries=60)
        if p is None:
            p = ctx.person(d, d, city=site.city)
        if p is None:
            continue
        rec = ctx.visit(p, site, t, dx, lines=lines, doctor=doctor)
        if rec is not None:
            events.append(rec)
        t += rng.randint(2, 4) * MINUTE_MS
    if len(events) < 8:
        return False
    group = f"{site.id}|{dx.code}|{hour_text[:13].replace('-', '').replace(' ', 'T')}"
    ctx.label(
        group,
        events,
        f"{len(events)}人1小时内在{site.info.name}以相同诊断({dx.code} {dx.name})和相同项目就诊",
    )
    return True


def _peer_candidates(ctx: Context) -> list[Site]:
    """Clinics and pharmacies with at least two unmodified peers (same type, level and city)
    left, the busier half of them (an institution-level pattern needs volume to show)."""
    groups: dict[tuple[str, int, int], list[Site]] = {}
    for s in ctx.world.sites:
        groups.setdefault((s.kind, s.tier, s.city), []).append(s)
    out = []
    for members in groups.values():
        taken = sum(1 for s in members if s.index in ctx.modified)
        if len(members) >= 3 and taken < max(1, (len(members) - 1) // 2):
            out += [s for s in members if s.index not in ctx.modified and s.kind != HOSPITAL]
    load = {s.index: _catchment(ctx, s) for s in out}
    out.sort(key=lambda s: (-load[s.index], s.index))
    return out[: max(1, (len(out) + 1) // 2)]


def _catchment(ctx: Context, site: Site) -> float:
    """Insured per institution of the site's kind in its county: its expected volume."""
    county = ctx.world.counties[site.county]
    same = county.pharmacies if site.kind == PHARMACY else county.clinics
    return (county.person_end - county.person_start) / max(1, len(same))


def _institution_shift(
    ctx: Context,
    d: int,
    volume: float,
    amount: float,
    describe: Callable[[int], str],
    versus_peers: bool = False,
) -> bool:
    candidates = _peer_candidates(ctx)
    if not candidates:
        return False
    site = candidates[ctx.rng.randrange(len(candidates))]
    ctx.modified.add(site.index)
    start = ctx.at(d, 0)
    scenario = ctx.scenario
    sample: list[dict[str, Any]] = []
    done = [False]

    def collect(rec: dict[str, Any]) -> None:
        if done[0]:
            return
        sample.append(rec)
        t = rec["event_time"]
        # The first 50 settlements after the shift; fewer at a quiet institution: at least 10
        # of two days, 5 of four, or whatever five days brought.
        days = (t - start) / DAY_MS
        n = len(sample)
        if n >= 50 or (days >= 2 and n >= 10) or (days >= 4 and n >= 5) or days >= 5:
            done[0] = True
            saved, ctx.scenario = ctx.scenario, scenario
            ctx.label(site.id, sample, describe(len(sample)))
            ctx.scenario = saved

    ctx.life.modifiers[site.index] = Modifier(start, volume, amount, collect, versus_peers)
    return True


def cost_growth(ctx: Context, d: int) -> bool:
    """From a day on, one institution's visit volume x2-3 and amount per visit x1.3-1.6."""
    rng = ctx.rng
    volume, amount = round(rng.uniform(2.0, 3.0), 2), round(rng.uniform(1.3, 1.6), 2)
    since = local_text(ctx.at(d, 0))[:10]
    return _institution_shift(
        ctx,
        d,
        volume,
        amount,
        lambda n: (
            f"自{since}起就诊量约为此前{volume:.1f}倍、次均费用约{amount:.1f}倍"
            f"(总费用约{volume * amount:.1f}倍);样本为变化后前{n}笔结算"
        ),
    )


def peer_deviation(ctx: Context, d: int) -> bool:
    """One institution whose cost per visit is about twice its peers' (same type, level, city)."""
    rng = ctx.rng
    amount = round(rng.uniform(2.0, 2.5), 2)
    since = local_text(ctx.at(d, 0))[:10]
    return _institution_shift(
        ctx,
        d,
        1.0,
        amount,
        lambda n: (
            f"自{since}起次均费用约为同级同类机构的{amount:.1f}倍(偏离+{(amount - 1) * 100:.0f}%,"
            f"三级预警);样本为前{n}笔结算"
        ),
        versus_peers=True,
    )


INJECTORS: dict[str, Injector] = {
    "cross_institution_frequency": cross_institution_frequency,
    "drug_over_supply": drug_over_supply,
    "duplicate_billing": duplicate_billing,
    "split_charging": split_charging,
    "drug_swap": drug_swap,
    "trace_code_resale": trace_code_resale,
    "impersonation": impersonation,
    "impossible_travel": impossible_travel,
    "hanging_bed": hanging_bed,
    "split_hospitalization": split_hospitalization,
    "licence_lending": licence_lending,
    "fence_breach": fence_breach,
    "pharmacy_basket_ring": pharmacy_basket_ring,
    "pharmacy_hopping": pharmacy_hopping,
    "odd_hour_sales": odd_hour_sales,
    "maintenance_window": maintenance_window,
    "card_burst": card_burst,
    "repeated_exam": repeated_exam,
    "group_visit": group_visit,
    "cost_growth": cost_growth,
    "peer_deviation": peer_deviation,
}
assert list(INJECTORS) == [s.id for s in SCENARIOS], "one injector per catalogue scenario, in order"


def inject(ctx: Context, scenario: str, d: int, attempts: int = 3) -> bool:
    """Run one instance of a scenario starting on day d (a few attempts with fresh picks)."""
    ctx.day = d
    ctx.scenario = scenario
    return any(INJECTORS[scenario](ctx, d) for _ in range(attempts))


def plan_instances(
    rng: random.Random,
    first_day: int,
    days: int,
    end_day: int | None,
    count: Callable[[str], int],
    weekday_of: Callable[[int], int],
) -> dict[int, list[str]]:
    """Start days for each scenario's instances within [first_day, first_day + days)."""
    plan: dict[int, list[str]] = {}
    for scenario in SCENARIOS:
        tm = timing(scenario.id)
        hi = first_day + days - (tm.span - 1 if end_day is not None else 0)
        lo = first_day + (max(1, min(days // 2, hi - first_day - 1)) if tm.late else 0)
        candidates = [d for d in range(lo, hi) if weekday_of(d) in tm.weekdays]
        if not candidates:
            continue
        for _ in range(count(scenario.id)):
            plan.setdefault(candidates[rng.randrange(len(candidates))], []).append(scenario.id)
    for d in plan:
        plan[d].sort(key=[s.id for s in SCENARIOS].index)
    return plan
