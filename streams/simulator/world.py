"""The simulated region: cities, counties, institutions, staff, the insured and the catalogue.

Province 36 (Jiangxi) with real city centres, so cities are 100-330 km apart and a person's
card used in two cities within the hour is physically impossible. Counties sit 5-18 km from
their city centre and institutions within 4 km of their county centre: every institution of a
city is within 50 km of every other, below the impossible-travel threshold.

The population is not materialised as objects: a city holds millions of insured. A person is an
index; their county is found by bisection over contiguous index ranges, and their stable traits
(age band, chronic conditions and regimen, usual clinic, hospital and pharmacies, household) are
pure functions of (seed, index) — see `Population`.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field

from models.reference import Institution, Registry
from streams.simulator.config import Preset
from streams.simulator.formulary import CHRONIC_PROFILES, Billable, Formulary

M64 = (1 << 64) - 1

# City code, name, centre, and (county code, name) in order of size.
# fmt: off
CITIES: tuple[tuple[str, str, float, float, tuple[tuple[str, str], ...]], ...] = (
    ("3601", "南昌市", 28.682, 115.858, (
        ("02", "东湖区"), ("03", "西湖区"), ("11", "青山湖区"), ("04", "青云谱区"),
        ("13", "红谷滩区"), ("12", "新建区"), ("21", "南昌县"), ("24", "进贤县"),
        ("23", "安义县"))),
    ("3608", "吉安市", 27.113, 114.993, (
        ("02", "吉州区"), ("03", "青原区"), ("21", "吉安县"), ("22", "吉水县"), ("24", "新干县"),
        ("25", "永丰县"), ("26", "泰和县"))),
    ("3611", "上饶市", 28.454, 117.943, (
        ("02", "信州区"), ("03", "广丰区"), ("04", "广信区"), ("23", "玉山县"), ("24", "铅山县"),
        ("25", "横峰县"), ("26", "弋阳县"))),
    ("3604", "九江市", 29.705, 116.002, (
        ("02", "濂溪区"), ("03", "浔阳区"), ("04", "柴桑区"), ("23", "武宁县"), ("25", "永修县"),
        ("26", "德安县"))),
    ("3609", "宜春市", 27.816, 114.416, (
        ("02", "袁州区"), ("21", "奉新县"), ("22", "万载县"), ("23", "上高县"), ("25", "靖安县"))),
    ("3607", "赣州市", 25.831, 114.935, (
        ("02", "章贡区"), ("03", "南康区"), ("04", "赣县区"), ("22", "信丰县"), ("23", "大余县"))),
)
# fmt: on
CITY_WEIGHTS = (0.34, 0.2, 0.2, 0.14, 0.12, 0.12)

# fmt: off
STREETS = ("八一", "阳明", "中山", "胜利", "井冈山", "青山", "洪都", "丰和", "站前", "滨江", "解放",
           "人民", "文化", "北京", "建设", "新华", "沿江", "迎宾", "长征", "红旗")
# fmt: on
PHARMACY_BRANDS = (
    "黄庆仁栈华氏大药房",
    "开心人大药房",
    "益丰大药房",
    "老百姓大药房",
    "江西大参林",
    "九州通大药房",
    "国药控股国大药房",
    "济民可信大药房",
)
HOSPITAL_DEPARTMENTS = (
    "internal",
    "surgery",
    "pediatrics",
    "cardiology",
    "endocrinology",
    "respiratory",
    "orthopedics",
    "gynecology",
    "neurology",
    "ent",
    "dermatology",
    "ophthalmology",
)

HOSPITAL, CLINIC, PHARMACY = "HOSPITAL", "CLINIC", "PHARMACY"


def mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 finaliser): stable across runs and processes."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h + (v & M64) + 0x9E3779B97F4A7C15) & M64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & M64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
        h ^= h >> 31
    return h


def offset_km(lat: float, lon: float, dist_km: float, bearing: float) -> tuple[float, float]:
    """The point `dist_km` away from (lat, lon) in direction `bearing` (radians from north)."""
    dlat = dist_km * math.cos(bearing) / 111.32
    dlon = dist_km * math.sin(bearing) / (111.32 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


@dataclass(slots=True)
class County:
    index: int
    city: int
    region_code: str
    name: str
    lat: float
    lon: float
    person_start: int = 0
    person_end: int = 0
    clinics: list[int] = field(default_factory=list)
    hospitals: list[int] = field(default_factory=list)  # levels 1-2
    pharmacies: list[int] = field(default_factory=list)


@dataclass(slots=True)
class City:
    index: int
    code: str
    name: str
    lat: float
    lon: float
    counties: list[int] = field(default_factory=list)
    top_hospitals: list[int] = field(default_factory=list)  # level 3
    institutions: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Site:
    """An institution with what the simulation needs beyond the registry entry."""

    index: int
    info: Institution
    county: int
    city: int
    tier: int  # price tier: 0 clinic/pharmacy, else hospital level
    staff: list[int] = field(default_factory=list)  # doctors, or pharmacists for pharmacies
    departments: dict[str, list[int]] = field(default_factory=dict)
    devices: list[tuple[str, float, float]] = field(default_factory=list)  # id, lat, lon

    @property
    def id(self) -> str:
        return self.info.institution_id

    @property
    def kind(self) -> str:
        return self.info.institution_type


@dataclass(slots=True)
class Staff:
    """A doctor (D...) or pharmacist (Y...) attached to one institution."""

    index: int
    staff_id: str
    site: int
    department: str | None  # None for pharmacists
    role: str  # DOCTOR or PHARMACIST


class Population:
    """The insured as indices with traits derived from (seed, index).

    Households are runs of three consecutive indices (used for relatives borrowing a card).
    """

    def __init__(self, seed: int, counties: list[County], size: int) -> None:
        self.seed = seed
        self.size = size
        self.counties = counties
        self._starts = [c.person_start for c in counties]
        self._id_offset = mix(seed, 11) % 10**14

    def county(self, p: int) -> County:
        return self.counties[bisect_right(self._starts, p) - 1]

    def person_id(self, p: int) -> str:
        """20 characters: the county code, then 14 digits (a bijection of the index)."""
        county = self.counties[bisect_right(self._starts, p) - 1]
        return f"{county.region_code}{(p * 6364136223846793 + self._id_offset) % 10**14:014d}"

    def trait(self, p: int, salt: int) -> int:
        return mix(self.seed, p, salt)

    def age_band(self, p: int) -> str:
        """child (15%), adult (60%) or elderly (25%)."""
        r = self.trait(p, 1) % 100
        return "child" if r < 15 else "adult" if r < 75 else "elderly"

    def chronic(self, p: int) -> tuple[str, ...]:
        """Chronic diagnoses with monthly refills (most have none): 40% of elderly, 8% of adults."""
        band = self.age_band(p)
        share = 400 if band == "elderly" else 80 if band == "adult" else 0
        h = self.trait(p, 2)
        if h % 1000 >= share:
            return ()
        r = (h >> 20) % 10_000 / 10_000
        for profile, weight in CHRONIC_PROFILES:
            r -= weight
            if r < 0:
                return profile
        return CHRONIC_PROFILES[0][0]

    def household(self, p: int) -> range:
        first = p - p % 3
        return range(first, min(first + 3, self.size))


class World:
    """Everything that exists before the first event: region, institutions, staff, insured."""

    def __init__(self, sizes: Preset, seed: int) -> None:
        self.sizes = sizes
        self.seed = seed
        self.formulary = Formulary.build()
        self.cities: list[City] = []
        self.counties: list[County] = []
        self.sites: list[Site] = []
        self.staff: list[Staff] = []
        rng = random.Random(f"world:{seed}")
        self._build_region(rng)
        self._build_sites(rng)
        self._build_population(rng)
        self.population = Population(seed, self.counties, sizes.persons)
        self.by_id = {s.id: s for s in self.sites}

    @classmethod
    def build(cls, sizes: Preset | str, seed: int) -> World:
        """The world of a preset (by name) or of explicit sizes."""
        if isinstance(sizes, str):
            from streams.simulator.config import PRESETS

            sizes = PRESETS[sizes]
        return cls(sizes, seed)

    # -- construction -------------------------------------------------------------------------

    def _build_region(self, rng: random.Random) -> None:
        n_cities = max(2, min(self.sizes.cities, len(CITIES)))
        per_city = self.sizes.institutions / n_cities
        for ci, (code, name, lat, lon, counties) in enumerate(CITIES[:n_cities]):
            city = City(ci, code, name, lat, lon)
            self.cities.append(city)
            n_counties = max(2, min(len(counties), round(per_city / 25)))
            for k, (ccode, cname) in enumerate(counties[:n_counties]):
                if k == 0:
                    clat, clon = lat, lon
                else:
                    clat, clon = offset_km(
                        lat, lon, rng.uniform(5, 18), rng.uniform(0, 2 * math.pi)
                    )
                county = County(len(self.counties), ci, code + ccode, cname, clat, clon)
                city.counties.append(county.index)
                self.counties.append(county)

    def _build_sites(self, rng: random.Random) -> None:
        weights = CITY_WEIGHTS[: len(self.cities)]
        total_w = sum(weights)
        serial: dict[str, int] = {}
        # Every city gets at least 12 (all types, with peers); the rest goes by city weight.
        spare = max(0, self.sizes.institutions - 12 * len(self.cities))
        for city, w in zip(self.cities, weights, strict=True):
            n = 12 + round(spare * w / total_w)
            l3 = max(1, round(n * 0.02))
            l2 = max(1, round(n * 0.05))
            l1 = max(1, round(n * 0.1))
            clinics = max(4, round(n * 0.33))
            pharmacies = max(4, n - l3 - l2 - l1 - clinics)
            plan = [(HOSPITAL, 3)] * l3 + [(HOSPITAL, 2)] * l2 + [(HOSPITAL, 1)] * l1
            plan += [(CLINIC, 0)] * clinics + [(PHARMACY, 0)] * pharmacies
            counties = city.counties
            for k, (kind, level) in enumerate(plan):
                if kind == HOSPITAL and level == 3:
                    county = self.counties[counties[k % min(2, len(counties))]]
                else:
                    county = self.counties[counties[k % len(counties)]]
                self._add_site(rng, city, county, kind, level, serial)

    def _add_site(
        self,
        rng: random.Random,
        city: City,
        county: County,
        kind: str,
        level: int,
        serial: dict[str, int],
    ) -> None:
        region = county.region_code
        serial[region] = serial.get(region, 0) + 1
        letter = "P" if kind == PHARMACY else "H"
        inst_id = f"{letter}{region}{serial[region]:06d}"
        lat, lon = offset_km(county.lat, county.lon, rng.uniform(0.3, 4.0), rng.uniform(0, 6.283))
        street = STREETS[rng.randrange(len(STREETS))]
        if kind == HOSPITAL:
            name = {
                3: f"{city.name}第{serial[region]}人民医院"
                if serial[region] > 1
                else f"{city.name}人民医院",
                2: f"{county.name}{'人民医院' if serial[region] % 2 else '中医院'}",
                1: f"{county.name}{street}镇卫生院",
            }[level]
            radius = {3: rng.uniform(300, 500), 2: rng.uniform(200, 400), 1: rng.uniform(150, 300)}[
                level
            ]
        elif kind == CLINIC:
            name = f"{county.name}{street}街道社区卫生服务中心"
            radius = rng.uniform(100, 200)
        else:
            name = f"{PHARMACY_BRANDS[rng.randrange(len(PHARMACY_BRANDS))]}({street}路店)"
            radius = rng.uniform(100, 150)
        info = Institution(
            institution_id=inst_id,
            name=name,
            institution_type=kind,
            level=level,
            region_code=region,
            lat=round(lat, 6),
            lon=round(lon, 6),
            fence_radius_m=round(radius, 1),
        )
        site = Site(len(self.sites), info, county.index, city.index, tier=level)
        self.sites.append(site)
        city.institutions.append(site.index)
        if kind == HOSPITAL and level == 3:
            city.top_hospitals.append(site.index)
        elif kind == HOSPITAL:
            county.hospitals.append(site.index)
        elif kind == CLINIC:
            county.clinics.append(site.index)
        else:
            county.pharmacies.append(site.index)
        n_devices = {HOSPITAL: 3 + level, CLINIC: 2, PHARMACY: 1}[kind]
        for d in range(n_devices):
            # Terminals are fixed: within 0.4 x the fence radius of the registered centre.
            dlat, dlon = offset_km(
                lat, lon, rng.uniform(0, 0.4 * radius) / 1000, rng.uniform(0, 6.283)
            )
            site.devices.append((f"FD{inst_id[1:]}{d + 1:02d}", round(dlat, 6), round(dlon, 6)))

    def _build_population(self, rng: random.Random) -> None:
        """Split the insured over counties, then attach staff sized to the expected load."""
        weights = [
            max(1, len(c.clinics) + 2 * len(c.hospitals) + len(c.pharmacies)) for c in self.counties
        ]
        city_w = CITY_WEIGHTS[: len(self.cities)]
        start = 0
        for city, cw in zip(self.cities, city_w, strict=True):
            city_persons = round(self.sizes.persons * cw / sum(city_w))
            cw_sum = sum(weights[c] for c in city.counties)
            for k, ci in enumerate(city.counties):
                county = self.counties[ci]
                share = city_persons * weights[ci] // cw_sum
                if k == len(city.counties) - 1:
                    share = city_persons - sum(
                        self.counties[c].person_end - self.counties[c].person_start
                        for c in city.counties[:-1]
                    )
                county.person_start, county.person_end = start, start + share
                start += share
        self.counties[-1].person_end = self.sizes.persons  # rounding remainder
        for county in self.counties:
            # Every county needs somewhere to go: borrow the city's main county's institutions.
            main = self.counties[self.cities[county.city].counties[0]]
            for attr in ("clinics", "hospitals", "pharmacies"):
                if not getattr(county, attr):
                    getattr(county, attr).extend(
                        getattr(main, attr) or self._any(county.city, attr)
                    )
            if len(county.pharmacies) < 2:
                county.pharmacies.extend(p for p in main.pharmacies if p not in county.pharmacies)
        self._attach_staff(rng)

    def _any(self, city: int, attr: str) -> list[int]:
        for ci in self.cities[city].counties:
            if getattr(self.counties[ci], attr):
                return list(getattr(self.counties[ci], attr))
        return list(self.cities[city].top_hospitals)

    def _attach_staff(self, rng: random.Random) -> None:
        visits_per_day = self.sizes.persons * 0.02
        hospitals = sum(1 for s in self.sites if s.kind != PHARMACY)
        per_site = visits_per_day / max(1, hospitals)
        counters: dict[str, int] = {}
        for site in self.sites:
            region = site.info.region_code
            if site.kind == PHARMACY:
                n = 1 + rng.randrange(2 if self.sizes.persons < 10_000 else 3)
                for _ in range(n):
                    self._add_staff(site, None, "PHARMACIST", "Y", region, counters)
                continue
            lo, hi, load = {3: (8, 150, 3.0), 2: (6, 60, 1.5), 1: (3, 15, 0.6), 0: (2, 8, 0.5)}[
                site.tier
            ]
            n = max(lo, min(hi, round(per_site * load / 12)))
            if site.kind == CLINIC:
                depts: tuple[str, ...] = ("general",)
            else:
                depts = (
                    HOSPITAL_DEPARTMENTS[: 4 + 2 * site.tier]
                    if site.tier < 3
                    else HOSPITAL_DEPARTMENTS
                )
            for k in range(n):
                # Internal medicine gets every other doctor: it sees most of the patients.
                dept = depts[0] if k % 2 == 0 else depts[(k // 2) % len(depts)]
                self._add_staff(site, dept, "DOCTOR", "D", region, counters)

    def _add_staff(
        self,
        site: Site,
        dept: str | None,
        role: str,
        letter: str,
        region: str,
        counters: dict[str, int],
    ) -> None:
        key = letter + region
        counters[key] = counters.get(key, 0) + 1
        staff = Staff(
            len(self.staff), f"{letter}{region}{counters[key]:06d}", site.index, dept, role
        )
        self.staff.append(staff)
        site.staff.append(staff.index)
        if dept is not None:
            site.departments.setdefault(dept, []).append(staff.index)

    # -- queries ------------------------------------------------------------------------------

    def registry(self) -> Registry:
        """The reference data the detectors read (`institutions.jsonl`, `drugs.jsonl`)."""
        return Registry.from_items((s.info for s in self.sites), self.formulary.reference_drugs())

    def city_of(self, p: int) -> City:
        return self.cities[self.population.county(p).city]

    def usual_sites(self, p: int) -> tuple[int, int, int, int]:
        """(clinic, hospital, pharmacy, second pharmacy) a person uses, all in their county."""
        county = self.population.county(p)
        h = self.population.trait(p, 3)
        pharmacies = county.pharmacies
        first = h % len(pharmacies)
        second = (
            (first + 1 + (h >> 24) % (len(pharmacies) - 1)) % len(pharmacies)
            if len(pharmacies) > 1
            else first
        )
        return (
            county.clinics[(h >> 8) % len(county.clinics)],
            county.hospitals[(h >> 16) % len(county.hospitals)],
            pharmacies[first],
            pharmacies[second],
        )

    def regimen(self, p: int) -> tuple[tuple[str, ...], list[Billable]]:
        """A chronic patient's diagnoses and the products they refill every month (stable)."""
        dx = self.population.chronic(p)
        if not dx:
            return (), []
        groups: list[str] = []
        h = self.population.trait(p, 4)
        for code in dx:
            profile = self.formulary.diagnoses[code]
            wanted = 1 + (h % 100 < 25 and profile.max_drugs > 1)
            for k in range(wanted):
                g = profile.drugs[(h >> (8 + 4 * k)) % len(profile.drugs)]
                if g not in groups:
                    groups.append(g)
            h >>= 16
        drugs: list[Billable] = []
        for k, g in enumerate(groups):
            products = self.formulary.groups[g]
            drugs.append(products[(h >> (3 * k)) % len(products)])
        return dx, drugs
