"""DetectorSet: routing, watermark and lateness, the timer index, determinism, robustness."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.alerts import Alert, make_alert
from models.detector import DUE
from models.detectors import CardBurst
from models.runner import DetectorSet, InMemoryStateStore, default_detectors
from streams.worker.processor import ObjectStates
from tests.models import factories as f
from tests.models.scenarios import FIRING

MIN = f.MINUTE


class Probe:
    """A detector that records its calls, alerts on every event, and arms a 5-minute timer."""

    version = "1"
    kind = "suspicious"
    entity_type = "person"
    stateful = True

    def __init__(
        self,
        did: str = "probe",
        topics: frozenset[str] = frozenset({"settlement"}),
        keys: tuple[str, ...] = ("person_id",),
    ) -> None:
        self.id = did
        self.topics = topics
        self._keys = keys
        self.calls: list[tuple[str, str, Any]] = []
        self.expired: list[tuple[str, int]] = []

    def keys(self, event: dict) -> list[str]:
        return [event[k] for k in self._keys if event.get(k)]

    def process(self, event: dict, state: dict | None, watermark_ms: int, key: str):
        self.calls.append((event["event_id"], key, None if state is None else dict(state)))
        n = (state or {}).get("n", 0) + 1
        alert = make_alert(self, "person", key, event, [], 1.0, 1, 0, f"第{n}次")
        return [alert], {"n": n, DUE: event["event_time"] + 5 * MIN}

    def expire(self, state: dict, watermark_ms: int, key: str):
        self.expired.append((key, watermark_ms))
        return [], None


def _objects() -> ObjectStates:
    """A replay's store: a dict of the states themselves, which `DetectorSet` reads and writes
    directly, reading each key's deadline from its state."""
    return ObjectStates(partition=0)


STORES = [InMemoryStateStore, _objects]


@pytest.fixture(params=STORES, ids=["store", "objects"])
def store(request: pytest.FixtureRequest) -> Any:
    return request.param()


def _ds(*dets: Any, **kw: Any) -> DetectorSet:
    return DetectorSet(dets, now_ms=lambda: 42, **kw)


def test_routes_by_topic_and_key() -> None:
    settle, scans = Probe("a"), Probe("b", topics=frozenset({"trace_scan"}), keys=("trace_code",))
    ds = _ds(settle, scans)
    ds.process(f.settlement(f.at(0, 9), person="X"))
    ds.process(f.scan(f.at(0, 9), f.trace_code()))
    assert [c[1] for c in settle.calls] == ["X"]
    assert [c[1] for c in scans.calls] == [f.trace_code()]


def test_one_event_several_keys_each_with_its_own_state() -> None:
    probe = Probe(keys=("doctor_id", "pharmacist_id"))
    ds = _ds(probe)
    ds.process(f.settlement(f.at(0, 9), doctor="D1", pharmacist="Y1"))
    ds.process(f.settlement(f.at(0, 9, 1), doctor="D1", pharmacist=None))
    assert [(c[1], c[2]) for c in probe.calls] == [
        ("D1", None),
        ("Y1", None),
        ("D1", {"n": 1, DUE: f.at(0, 9) + 5 * MIN}),
    ]


def test_no_keys_no_call() -> None:
    probe = Probe(keys=("pharmacist_id",))
    _ds(probe).process(f.settlement(f.at(0, 9)))
    assert probe.calls == []


def test_duplicate_detector_ids_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        DetectorSet([Probe(), Probe()])


def test_watermark_trails_newest_event_and_never_moves_back() -> None:
    ds = _ds(Probe(), allowed_lateness_ms=10 * MIN)
    ds.process(f.settlement(f.at(0, 10)))
    assert ds.watermark_ms == f.at(0, 10) - 10 * MIN
    ds.process(f.settlement(f.at(0, 9)))
    assert ds.watermark_ms == f.at(0, 10) - 10 * MIN
    ds.advance(f.at(0, 11))
    assert ds.watermark_ms == f.at(0, 11)
    ds.process(f.settlement(f.at(0, 10, 30)))
    assert ds.watermark_ms == f.at(0, 11)


def test_late_events_are_processed_and_their_alerts_flagged() -> None:
    ds = _ds(Probe(), allowed_lateness_ms=10 * MIN)
    assert not ds.process(f.settlement(f.at(0, 10)))[0].late
    assert not ds.process(f.settlement(f.at(0, 9, 55)))[0].late  # within lateness
    late = ds.process(f.settlement(f.at(0, 9, 40)))
    assert len(late) == 1 and late[0].late
    assert ds.late_events == 1 and ds.events == 3


def test_detected_at_is_the_injected_clock() -> None:
    alerts = _ds(Probe()).process(f.settlement(f.at(0, 9)))
    assert alerts[0].detected_at == 42


def test_timer_fires_once_when_watermark_passes_due(store: Any) -> None:
    probe = Probe()
    ds = _ds(probe, allowed_lateness_ms=0, store=store)
    ds.process(f.settlement(f.at(0, 9), person="A"))
    assert ds.pending_timers == 1
    ds.process(f.settlement(f.at(0, 9, 4), person="B"))
    assert probe.expired == []
    ds.process(f.settlement(f.at(0, 9, 5), person="C"))  # watermark reaches A's due
    assert probe.expired == [("A", f.at(0, 9, 5))]
    assert ds.store.get("probe", "A") is None
    ds.process(f.settlement(f.at(0, 9, 6), person="D"))
    assert [k for k, _ in probe.expired] == ["A"]


def test_timer_follows_a_deadline_moved_later(store: Any) -> None:
    probe = Probe()
    ds = _ds(probe, allowed_lateness_ms=0, store=store)
    ds.process(f.settlement(f.at(0, 9), person="A"))
    ds.process(f.settlement(f.at(0, 9, 3), person="A"))  # due moves to 9:08
    ds.process(f.settlement(f.at(0, 9, 6), person="B"))
    assert probe.expired == []
    ds.process(f.settlement(f.at(0, 9, 8), person="C"))
    assert probe.expired == [("A", f.at(0, 9, 8))]
    assert store.get("probe", "A") is None


def test_timer_follows_a_deadline_moved_earlier(store: Any) -> None:
    class Shortening(Probe):
        """Its second event for a key brings the deadline forward to one minute after it."""

        def process(self, event: dict, state: dict | None, watermark_ms: int, key: str):
            alerts, new = super().process(event, state, watermark_ms, key)
            if state is not None:
                new[DUE] = event["event_time"] + MIN
            return alerts, new

    probe = Shortening()
    ds = _ds(probe, allowed_lateness_ms=0, store=store)
    ds.process(f.settlement(f.at(0, 9), person="A"))  # due 9:05
    ds.process(f.settlement(f.at(0, 9, 1), person="A"))  # due 9:02
    ds.process(f.settlement(f.at(0, 9, 2), person="B"))
    assert probe.expired == [("A", f.at(0, 9, 2))]
    ds.process(f.settlement(f.at(0, 9, 5), person="C"))  # A's first deadline: nothing left
    assert [k for k, _ in probe.expired] == ["A"]


def test_reindex_replaces_a_later_deadline_with_an_earlier_one() -> None:
    probe = Probe()
    ds = _ds(probe, allowed_lateness_ms=0)
    ds.store.put("probe", "Z", {"n": 1, DUE: f.at(0, 12)})
    ds.reindex([("probe", "Z", {"n": 1, DUE: f.at(0, 12)})])
    ds.reindex([("probe", "Z", {"n": 1, DUE: f.at(0, 9, 9)})])
    ds.advance(f.at(0, 9, 9))
    assert probe.expired[-1] == ("Z", f.at(0, 9, 9))


def test_expiry_touches_only_due_keys(store: Any) -> None:
    probe = Probe()
    ds = _ds(probe, allowed_lateness_ms=0, store=store)
    for n in range(200):
        ds.process(f.settlement(f.at(0, 9) + n * 1000, person=f"P{n}"))
    ds.advance(f.at(0, 9, 5) + 9_500)
    assert len(probe.expired) == 10  # P0..P9 are due, 190 others untouched
    assert ds.pending_timers == 190


def test_reindex_after_restart_restores_timers() -> None:
    store = InMemoryStateStore()
    first = _ds(Probe(), store=store)
    first.process(f.settlement(f.at(0, 9), person="A"))
    probe = Probe()
    restarted = _ds(probe, store=store)
    restarted.reindex(store.items())
    assert restarted.pending_timers == 1
    restarted.flush()
    assert probe.expired and store.count() == 0


def test_a_timer_that_does_not_move_cannot_loop(store: Any) -> None:
    class Stuck(Probe):
        def expire(self, state, watermark_ms, key):
            self.expired.append((key, watermark_ms))
            return [], state  # due unchanged, still in the past

    probe = Stuck()
    ds = _ds(probe, allowed_lateness_ms=0, store=store)
    ds.process(f.settlement(f.at(0, 9)))
    ds.advance(f.at(0, 10))
    ds.advance(f.at(0, 10))
    assert len(probe.expired) == 1


def test_default_detectors_accepts_parameter_overrides() -> None:
    dets = default_detectors(f.registry(), {"card_burst": {"min_settlements": 2}})
    burst = next(d for d in dets if d.id == "card_burst")
    assert isinstance(burst, CardBurst) and burst.params.min_settlements == 2
    with pytest.raises(ValueError, match="unknown detectors"):
        default_detectors(f.registry(), {"nope": {}})
    with pytest.raises(ValueError, match="unknown parameters"):
        default_detectors(f.registry(), {"card_burst": {"min_setlements": 2}})


def _all_scenarios() -> list[dict]:
    return f.by_time(e for build in FIRING.values() for e in build())


def _records(alerts: list[Alert]) -> list[dict]:
    return [a.to_record() | {"late": a.late} for a in alerts]


def test_all_detectors_together_are_deterministic_whatever_the_batching() -> None:
    events = _all_scenarios()
    whole, _ = f.run(default_detectors(f.registry()), events)
    ds = DetectorSet(
        default_detectors(f.registry()), store=f.JsonStateStore(), now_ms=lambda: 1_800_000_000_000
    )
    pieces: list[Alert] = []
    for n in range(0, len(events), 7):
        pieces += ds.process_batch(events[n : n + 7])
    pieces += ds.flush()
    assert _records(whole) == _records(pieces)
    assert {a.detector_id for a in whole} >= set(FIRING)


def test_all_detectors_judge_alike_over_a_dict_of_the_states() -> None:
    events = _all_scenarios()
    whole, _ = f.run(default_detectors(f.registry()), events)
    store = ObjectStates(partition=0)
    ds = DetectorSet(default_detectors(f.registry()), store=store, now_ms=lambda: 1_800_000_000_000)
    objects = ds.process_batch(events) + ds.flush()
    assert _records(whole) == _records(objects)
    assert store.objects == {}  # every key expired at the end


# --- robustness --------------------------------------------------------------------------

PEOPLE = ["RY-H1", "RY-H2", "RY-H3"]
PLACES = [f.HOSP, f.HOSP2, f.CLINIC, f.PHARM, f.PHARM2, "H999999000001"]
CODES = [
    f.DRUG_A,
    f.DRUG_B,
    f.DRUG_C,
    "250305002",
    "250305003",
    "250305004",
    "250305001",
    f.EXAM_CT,
    "110200001",
]
TRACE = [f.trace_code("8123456", n) for n in range(3)]

times = st.integers(min_value=f.at(-2), max_value=f.at(5))


@st.composite
def items(draw: Any) -> list[dict]:
    out = []
    for code in draw(st.lists(st.sampled_from(CODES), max_size=5)):
        kind = "DRUG" if code.startswith("X") else draw(st.sampled_from(["EXAM", "SERVICE"]))
        out.append(
            f.item(
                code,
                item_type=kind,
                quantity=draw(st.integers(1, 3)),
                generic_group=draw(st.sampled_from([None, f.GROUP_A])) if kind == "DRUG" else None,
                days_supply=draw(st.sampled_from([None, 0, 7, 30])) if kind == "DRUG" else None,
            )
        )
    return out


@st.composite
def settlements(draw: Any) -> dict:
    visit = draw(st.sampled_from(["OUTPATIENT", "INPATIENT", "PHARMACY"]))
    t = draw(times)
    adm = draw(st.one_of(st.none(), st.integers(t - 20 * f.DAY, t + f.DAY)))
    return f.settlement(
        t,
        person=draw(st.sampled_from(PEOPLE)),
        institution=draw(st.sampled_from(PLACES)),
        visit_type=visit,
        items=draw(items()),
        doctor=draw(st.sampled_from([None, f.DOCTOR, f.DOCTOR2])),
        pharmacist=draw(st.sampled_from([None, f.PHARMACIST])),
        diagnosis=draw(st.lists(st.sampled_from(["J06.900", "I63.900"]), max_size=2)),
        channel=draw(st.sampled_from(["CARD", "QR_CODE", "FACE"])),
        face_verify_id=draw(st.sampled_from([None, "FV-H1", "FV-H2"])),
        reversal_of=draw(st.sampled_from([None, None, "ST-H1"])),
        admission=adm,
        discharge=draw(st.one_of(st.none(), st.integers(t - 20 * f.DAY, t + f.DAY))),
        fund_ratio=draw(st.sampled_from([0.0, 0.5, 1.0])),
        event_id=draw(st.sampled_from(["ST-H1", "ST-H2", None, None])),
    )


@st.composite
def scans(draw: Any) -> dict:
    return f.scan(
        draw(times),
        draw(st.sampled_from(TRACE)),
        scan_type=draw(st.sampled_from(["STOCK_IN", "SALE", "RETURN"])),
        drug_code=draw(st.sampled_from(CODES[:3])),
        institution=draw(st.sampled_from(PLACES)),
        settlement_id=draw(st.sampled_from([None, "ST-H1", "ST-H2"])),
        event_id=draw(st.sampled_from([None, None, "TS-H1"])),
    )


@st.composite
def faces(draw: Any) -> dict:
    subject_type = draw(st.sampled_from(["PATIENT", "DOCTOR", "PHARMACIST"]))
    subject = {
        "PATIENT": draw(st.sampled_from(PEOPLE)),
        "DOCTOR": f.DOCTOR,
        "PHARMACIST": f.PHARMACIST,
    }[subject_type]
    return f.face(
        draw(times),
        subject,
        subject_type=subject_type,
        purpose=draw(
            st.sampled_from(
                ["VISIT", "ADMISSION", "BEDSIDE", "SETTLEMENT", "CLOCK_IN", "CLOCK_OUT"]
            )
        ),
        institution=draw(st.sampled_from(PLACES)),
        lat=draw(st.floats(min_value=18.0, max_value=45.0)),
        lon=draw(st.floats(min_value=75.0, max_value=130.0)),
        score=draw(st.floats(min_value=0.0, max_value=1.0)),
        liveness=draw(st.booleans()),
        settlement_id=draw(st.sampled_from([None, "ST-H1"])),
        event_id=draw(st.sampled_from([None, None, "FV-H1", "FV-H2"])),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(settlements(), scans(), faces()), max_size=40))
def test_arbitrary_valid_events_never_raise(events: list[dict]) -> None:
    ds = DetectorSet(default_detectors(f.registry()), store=f.JsonStateStore(), now_ms=lambda: 0)
    alerts = ds.process_batch(events)
    alerts += ds.flush()
    for a in alerts:
        assert a.explanation.startswith(f"[{a.detector_id}]")
        assert 1 <= a.severity <= 3
    assert not ds.store.data  # everything expired at the end of time
