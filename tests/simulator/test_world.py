"""The simulated region looks real: codes, geography, fences, staff, catalogue."""

from __future__ import annotations

import itertools
import re

from models.reference import distance_m
from streams.simulator import PRESETS, World
from streams.simulator.formulary import Formulary

INSTITUTION = re.compile(r"^[HP](36\d{4})\d{6}$")
STAFF = re.compile(r"^[DY](36\d{4})\d{6}$")
DRUG = re.compile(r"^[XZ][A-Z]\d{2}[A-Z]{2}D\d{3}A\d{3}\d{4}\d{5}\d{4}$")


def test_institutions_are_coded_by_region_and_typed():
    world = World.build("tiny", 7)
    kinds = {(s.kind, s.info.level) for s in world.sites}
    assert {
        ("HOSPITAL", 1),
        ("HOSPITAL", 2),
        ("HOSPITAL", 3),
        ("CLINIC", 0),
        ("PHARMACY", 0),
    } <= kinds
    assert 30 <= len(world.sites) <= 45
    for site in world.sites:
        m = INSTITUTION.match(site.id)
        assert m and m.group(1) == site.info.region_code, site.id
        assert site.id[0] == ("P" if site.kind == "PHARMACY" else "H")
        assert 100 <= site.info.fence_radius_m <= 500
        assert site.info.name
    assert len({s.id for s in world.sites}) == len(world.sites)


def test_staff_attached_with_region_prefix():
    world = World.build("tiny", 7)
    for staff in world.staff:
        site = world.sites[staff.site]
        m = STAFF.match(staff.staff_id)
        assert m and m.group(1) == site.info.region_code
        assert staff.staff_id[0] == ("Y" if site.kind == "PHARMACY" else "D")
        assert (staff.department is None) == (site.kind == "PHARMACY")
    assert all(site.staff for site in world.sites)
    assert len({s.staff_id for s in world.staff}) == len(world.staff)


def test_cities_apart_institutions_near_their_city():
    world = World.build("small", 7)
    for a, b in itertools.combinations(world.cities, 2):
        assert 50_000 <= distance_m(a.lat, a.lon, b.lat, b.lon) <= 350_000, (a.name, b.name)
    for site in world.sites:
        city = world.cities[site.city]
        assert distance_m(site.info.lat, site.info.lon, city.lat, city.lon) <= 25_000
        for _, lat, lon in site.devices:  # terminals well inside the fence
            assert (
                distance_m(lat, lon, site.info.lat, site.info.lon) <= 0.5 * site.info.fence_radius_m
            )


def test_persons_have_region_prefixed_ids_and_chronic_patients_exist():
    world = World.build("tiny", 7)
    pop = world.population
    ids = [pop.person_id(p) for p in range(pop.size)]
    assert len(set(ids)) == pop.size
    regions = {c.region_code for c in world.counties}
    assert all(len(i) == 20 and i.isdigit() and i[:6] in regions for i in ids)
    chronic = [p for p in range(pop.size) if pop.chronic(p)]
    assert 0.05 * pop.size < len(chronic) < 0.3 * pop.size
    dx, drugs = world.regimen(chronic[0])
    assert dx and drugs and all(30 % (d.days_per_box or 1) == 0 for d in drugs)


def test_catalogue_codes():
    formulary = Formulary.build()
    assert len(formulary.drugs) >= 60
    products = [d.product_code for d in formulary.drugs]
    assert len(set(products)) == len(products)
    for drug in formulary.drugs:
        assert len(drug.code) == 27 and DRUG.match(drug.code), drug.code
        assert drug.product_code and len(drug.product_code) == 7 and drug.product_code.isdigit()
        assert drug.generic_group and drug.price_fen > 0 and drug.days_per_box
    for pkg in formulary.packages:  # the rule library's packages and sub-items are billable
        assert pkg.code in formulary.items
        assert all(code in formulary.items for code, _, _ in pkg.sub_items)


def test_presets_scale():
    assert PRESETS["tiny"].persons < PRESETS["small"].persons < PRESETS["city"].persons
    assert PRESETS["city"].persons >= 1_000_000 and PRESETS["city"].institutions >= 1000
