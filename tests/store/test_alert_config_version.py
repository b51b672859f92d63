"""Alerts keep the rule configuration that raised them all the way into the store."""

from __future__ import annotations

import pytest

from models.rules.config import load_rule_config
from schemas.codec import Codec
from streams.privacy import Pseudonymizer
from streams.sink.rows import HANDLERS, Lineage
from streams.store.client import Store
from tests.models import factories as f

pytestmark = pytest.mark.integration

PLACES = [f.HOSP, f.HOSP2, f.CLINIC, f.PHARM, f.PHARM2, f.PHARM3, "H440305000020"]


def test_alert_rows_record_the_config_version(store: Store) -> None:
    codec = Codec.default()
    to_rows = HANDLERS["alerts"][1]
    events = [
        f.settlement(f.at(0, 8 + 2 * k), person="RY1", institution=PLACES[k]) for k in range(7)
    ]
    records = []
    for name in ("default", "candidate"):
        alerts, _ = f.run(load_rule_config(name).build(f.registry()), events)
        records += [a.to_record() for a in alerts]
    first = next(r for r in records if r["detector_id"] == "cross_institution_frequency")
    v1 = {k: v for k, v in first.items() if k != "config_version"}
    v1["alert_id"] = "0" * 32
    records.append(codec.decode(codec.encode_with_version("Alert", 1, v1)))  # an old alert
    for offset, record in enumerate(records):
        lineage = Lineage(0, offset, 2, 1_800_000_000_000)
        for table, row in to_rows(record, lineage, Pseudonymizer(b"k")):
            store.insert_rows(table, [row])
    got = store.query_rows(
        f"SELECT config_version, detector_id, count() FROM `{store.database}`.alerts FINAL "
        "WHERE detector_id = 'cross_institution_frequency' GROUP BY ALL ORDER BY ALL"
    )
    assert got == [
        ("candidate@2026.12.2-rc1", "cross_institution_frequency", 1),
        ("default@2026.12.2", "cross_institution_frequency", 1),
        (None, "cross_institution_frequency", 1),
    ]
    column = store.scalar(
        "SELECT type FROM system.columns WHERE database = {db:String} AND table = 'alerts' "
        "AND name = 'config_version'",
        {"db": store.database},
    )
    assert column == "LowCardinality(Nullable(String))"
