"""InstitutionHourAggregator: hourly figures, emission at the watermark, corrections, expiry."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from models.aggregates import InstitutionHourAggregator, Record, hour_start
from models.detector import DUE, State
from schemas.codec import Codec
from tests.models import factories as f

MIN = f.MINUTE
HOUR = f.HOUR
LATENESS = 10 * MIN
NOW = 1_800_000_000_000


class Driver:
    """What the runner does for a detector: watermark = newest time − lateness, `process` for
    each key of an event, then `expire` on every key whose `due` the watermark has reached."""

    def __init__(self, agg: InstitutionHourAggregator, json_state: bool = False) -> None:
        self.agg = agg
        self.states: dict[str, State] = {}
        self.wm = -(2**62)
        self.newest = -(2**62)
        self.json_state = json_state  # round-trip states through JSON, like a changelog

    def _put(self, key: str, state: State | None) -> None:
        if state is None:
            self.states.pop(key, None)
        else:
            self.states[key] = json.loads(json.dumps(state)) if self.json_state else state

    def event(self, event: dict[str, Any]) -> list[Record]:
        self.newest = max(self.newest, event["event_time"])
        self.wm = max(self.wm, self.newest - LATENESS)
        out: list[Record] = []
        for key in self.agg.keys(event):
            records, new = self.agg.process(event, self.states.get(key), self.wm, key)
            self._put(key, new)
            out.extend(records)
        return out + self.timers()

    def events(self, events: Iterable[dict[str, Any]]) -> list[Record]:
        return [r for e in events for r in self.event(e)]

    def advance(self, watermark_ms: int) -> list[Record]:
        self.wm = max(self.wm, watermark_ms)
        return self.timers()

    def timers(self) -> list[Record]:
        out: list[Record] = []
        for key in sorted(self.states):
            state = self.states[key]
            if state[DUE] <= self.wm:
                records, new = self.agg.expire(state, self.wm, key)
                self._put(key, new)
                out.extend(records)
        return out


def agg() -> InstitutionHourAggregator:
    return InstitutionHourAggregator(now_ms=lambda: NOW)


def figures(record: Record) -> tuple[Any, ...]:
    return (
        record["hour_start"], record["settlements"], record["reversals"], record["amount_fen"],
        record["fund_paid_fen"], record["self_paid_fen"], record["distinct_persons"],
        record["doctors"], record["revision"],
    )  # fmt: skip


def nine_oclock() -> list[dict[str, Any]]:
    """Three settlements of two persons with two doctors at 09:xx, one at 10:05."""
    return [
        f.settlement(f.at(0, 9, 5), person=f.PERSON, doctor=f.DOCTOR),
        f.settlement(f.at(0, 9, 20), person=f.PERSON2, doctor=f.DOCTOR2,
                     items=[f.exam(unit_price_fen=20000)]),
        f.settlement(f.at(0, 9, 40), person=f.PERSON, doctor=f.DOCTOR),
        f.settlement(f.at(0, 10, 5), person=f.PERSON2, doctor=f.DOCTOR),
    ]  # fmt: skip


def test_counts_amounts_and_distinct_persons_per_hour() -> None:
    d = Driver(agg())
    events = nine_oclock()
    assert d.events(events) == []  # the 10:05 event puts the watermark at 09:55
    (rec,) = d.advance(f.at(0, 10))
    nine = events[:3]
    assert figures(rec) == (
        f.at(0, 9), 3, 0, sum(e["total_fen"] for e in nine),
        sum(e["fund_paid_fen"] for e in nine), sum(e["self_paid_fen"] for e in nine), 2, 2, 0,
    )  # fmt: skip
    assert rec["institution_id"] == f.HOSP
    assert (rec["institution_type"], rec["institution_level"], rec["region_code"]) == (
        "HOSPITAL", 2, f.REGION,
    )  # fmt: skip
    assert rec["computed_at"] == NOW
    (ten,) = d.advance(f.at(0, 11))
    assert figures(ten)[:3] == (f.at(0, 10), 1, 0)


def test_hours_align_in_utc_and_local_time() -> None:
    t = f.at(3, 14, 59)
    assert hour_start(t) == f.at(3, 14)
    assert (hour_start(t) + 8 * HOUR) % HOUR == 0


def test_emitted_exactly_when_the_watermark_reaches_the_hour_end() -> None:
    a = agg()
    e = f.settlement(f.at(0, 9, 30))
    records, state = a.process(e, None, f.at(0, 9, 20), f.HOSP)
    assert records == ()
    assert state is not None and state[DUE] == f.at(0, 10)
    assert a.expire(state, f.at(0, 10) - 1, f.HOSP)[0] == []
    (rec,), state = a.expire(state, f.at(0, 10), f.HOSP)
    assert (rec["settlements"], rec["revision"]) == (1, 0)
    # closed: only kept for corrections until end + grace
    assert state is not None and state[DUE] == f.at(0, 12)
    assert a.expire(state, f.at(0, 11), f.HOSP)[0] == []


def test_late_event_re_emits_the_hour_with_the_next_revision() -> None:
    d = Driver(agg())
    first = f.settlement(f.at(0, 9, 10), person=f.PERSON)
    d.event(first)
    (rev0,) = d.advance(f.at(0, 10, 30))
    late = f.settlement(f.at(0, 9, 50), person=f.PERSON2, doctor=f.DOCTOR2)
    (rev1,) = d.event(late)
    assert figures(rev1) == (
        f.at(0, 9), 2, 0, first["total_fen"] + late["total_fen"],
        first["fund_paid_fen"] + late["fund_paid_fen"],
        first["self_paid_fen"] + late["self_paid_fen"], 2, 2, 1,
    )  # fmt: skip
    assert rev0["revision"] == 0
    assert d.event(late) == []  # re-delivered: already counted, nothing to correct
    (rev2,) = d.event(f.settlement(f.at(0, 9, 55), person=f.PERSON))
    assert (rev2["settlements"], rev2["distinct_persons"], rev2["revision"]) == (3, 2, 2)


def test_first_event_of_an_already_closed_hour_is_emitted_at_once() -> None:
    a = agg()
    records, state = a.process(f.settlement(f.at(0, 9, 30)), None, f.at(0, 10, 30), f.HOSP)
    assert [r["revision"] for r in records] == [0]
    assert state is not None and state[DUE] == f.at(0, 12)


def test_state_expires_after_the_grace_and_later_events_are_ignored() -> None:
    d = Driver(agg())
    d.event(f.settlement(f.at(0, 9, 10)))
    assert len(d.advance(f.at(0, 10))) == 1
    assert f.HOSP in d.states
    assert d.advance(f.at(0, 12) - 1) == []
    assert f.HOSP in d.states
    assert d.advance(f.at(0, 12)) == []
    assert d.states == {}
    assert d.event(f.settlement(f.at(0, 9, 30))) == []  # too late to correct
    assert d.states == {}


def test_state_holds_only_open_and_recently_closed_hours() -> None:
    d = Driver(agg())
    for h in range(24):
        d.event(f.settlement(f.at(0, h, 30)))
    hours = sorted(int(k) for k in d.states[f.HOSP]["hours"])
    assert hours == [f.at(0, 21), f.at(0, 22), f.at(0, 23)]  # 21-22 closed, 23 open


def test_reversal_counts_apart_and_nets_the_amounts() -> None:
    d = Driver(agg())
    original = f.settlement(f.at(0, 9, 10))
    d.events([original, f.reversal(original, f.at(0, 9, 40))])
    (rec,) = d.advance(f.at(0, 10))
    assert figures(rec) == (f.at(0, 9), 1, 1, 0, 0, 0, 1, 1, 0)


def test_two_institutions_are_aggregated_apart() -> None:
    d = Driver(agg())
    d.events([
        f.settlement(f.at(0, 9, 10), institution=f.HOSP),
        f.settlement(f.at(0, 9, 20), institution=f.PHARM, doctor=None),
        f.settlement(f.at(0, 9, 30), institution=f.PHARM, person=f.PERSON2, doctor=None),
    ])  # fmt: skip
    records = d.advance(f.at(0, 10))
    by_inst = {r["institution_id"]: r for r in records}
    assert sorted(by_inst) == [f.HOSP, f.PHARM]
    assert (by_inst[f.HOSP]["settlements"], by_inst[f.HOSP]["doctors"]) == (1, 1)
    pharm = by_inst[f.PHARM]
    assert (pharm["settlements"], pharm["distinct_persons"], pharm["doctors"]) == (2, 2, 0)
    assert (pharm["institution_type"], pharm["institution_level"]) == ("PHARMACY", 0)


def _run(json_state: bool) -> Sequence[Record]:
    d = Driver(agg(), json_state=json_state)
    events = [
        f.settlement(f.at(0, 9, 5), person=f.PERSON, event_id="S1"),
        f.settlement(f.at(0, 9, 35), person=f.PERSON2, event_id="S2"),
        f.settlement(f.at(0, 10, 45), person=f.PERSON, event_id="S3"),
        f.settlement(f.at(0, 9, 50), person="RY0000000003", event_id="S4"),  # late
        f.settlement(f.at(0, 11, 15), person=f.PERSON, event_id="S5"),
    ]
    return d.events(events) + d.advance(2**62)


def test_deterministic_json_safe_and_codec_ready() -> None:
    records = _run(json_state=False)
    assert records == _run(json_state=False) == _run(json_state=True)
    assert [(r["hour_start"], r["revision"]) for r in records] == [
        (f.at(0, 9), 0), (f.at(0, 9), 1), (f.at(0, 10), 0), (f.at(0, 11), 0),
    ]  # fmt: skip
    codec = Codec.default()
    persons = {f.PERSON, f.PERSON2, "RY0000000003"}
    for rec in records:
        assert codec.decode(codec.encode("InstitutionHour", rec), expect="InstitutionHour") == rec
        assert not persons & {v for v in rec.values() if isinstance(v, str)}


def test_rejects_a_negative_grace() -> None:
    with pytest.raises(ValueError):
        InstitutionHourAggregator(grace_ms=-1)
