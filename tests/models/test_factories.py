"""The factories produce events the Avro contracts accept, so detector tests are honest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from tests.models import factories as f

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def _schema(name: str) -> dict:
    return parse_schema(json.loads((AVRO / f"{name}.avsc").read_text(encoding="utf-8")))


def _plain(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "_topic"}


@pytest.mark.parametrize(
    ("schema", "event"),
    [
        ("settlement_event", f.settlement(f.at(0, 9))),
        ("settlement_event", f.settlement(f.at(0, 9), institution=f.PHARM, items=[f.drug()])),
        (
            "settlement_event",
            f.settlement(
                f.at(5),
                visit_type="INPATIENT",
                admission=f.at(0),
                discharge=f.at(5),
                items=[f.drug(trace_codes=[f.trace_code()]), f.exam()],
                channel="FACE",
                face_verify_id="FV1",
            ),
        ),
        ("settlement_event", f.reversal(f.settlement(f.at(0, 9)), f.at(0, 10))),
        ("trace_scan_event", f.scan(f.at(0, 9), f.trace_code(), settlement_id="ST1")),
        ("trace_scan_event", f.scan(f.at(0, 9), f.trace_code(), scan_type="STOCK_IN")),
        ("face_verify_event", f.face(f.at(0, 9))),
        ("face_verify_event", f.clock_in(f.at(0, 8))),
        ("face_verify_event", f.face(f.at(0, 9), score=0.4, liveness=False)),
    ],
)
def test_factory_events_are_schema_valid(schema: str, event: dict) -> None:
    assert validate(_plain(event), _schema(schema), raise_errors=True)


def test_local_time_base_is_monday_midnight() -> None:
    from models.window import local_minute_of_day, local_weekday

    assert local_weekday(f.T0) == 0
    assert local_minute_of_day(f.T0) == 0
    assert local_weekday(f.at(-1, 2)) == 6  # the Sunday before
