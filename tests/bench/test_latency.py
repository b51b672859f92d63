"""The benchmark's pure parts: percentiles, the produce-time join, throughput from commit
samples, the replay's event-time merge, and the profile's package grouping."""

from __future__ import annotations

import pytest

from streams.bench.latency import SeenAlert, join_latencies, percentile
from streams.bench.live import throughput
from streams.bench.profiles import group_of


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    with pytest.raises(ValueError):
        percentile(values, 101)


def _alert(aid: str, trigger: str, detected_s: float, stored_s: float, det: str = "d") -> SeenAlert:
    return SeenAlert(aid, det, trigger, int(detected_s * 1000), stored_s)


def test_join_uses_the_triggering_event_and_splits_detect_and_store() -> None:
    produced = {"e1": 100.0, "e2": 101.0, "e3": 102.0}
    alerts = [
        _alert("a1", "e1", 100.5, 101.0, "x"),  # 1.0 s: 0.5 detect + 0.5 store
        _alert("a2", "e2", 102.0, 104.0, "y"),  # 3.0 s
        _alert("a3", "e3", 103.0, 103.5, "y"),  # 1.5 s
    ]
    report = join_latencies(produced, alerts)
    assert report.joined == 3 and report.timer == 0 and report.unmatched == 0
    assert report.p50_s == pytest.approx(1.5)
    assert report.max_s == pytest.approx(3.0)
    assert report.detect_p50_s == pytest.approx(1.0)
    assert report.store_p50_s == pytest.approx(0.5)
    assert report.by_detector_p50_s == {"x": pytest.approx(1.0), "y": pytest.approx(2.25)}


def test_join_counts_timer_and_unknown_alerts_apart_and_dedupes_redeliveries() -> None:
    produced = {"e1": 10.0, "e2": 11.0}
    alerts = [
        _alert("a1", "e1", 10.2, 12.0),
        _alert("a1", "e1", 10.2, 11.0),  # re-delivered, stored earlier the second time seen
        _alert("t1", "e2", 50.0, 51.0),  # fired by a timer, long after its trigger
        _alert("a9", "unknown", 10.0, 12.0),  # not produced by this run
    ]
    report = join_latencies(produced, alerts, immediate={"a1", "a9"})
    assert report.joined == 1 and report.timer == 1 and report.unmatched == 1
    assert report.p50_s == pytest.approx(1.0)  # the first store of a1 counts
    empty = join_latencies({}, [])
    assert empty.joined == 0 and empty.p50_s is None and empty.p99_s is None


def test_throughput_counts_between_commit_points() -> None:
    # start at t=0; first commit at t=2 (1,000 records), everything (5,000) at t=4
    samples = [(0.5, 0), (2.0, 1000), (3.0, 3000), (4.0, 5000), (4.25, 5000)]
    rps, drain = throughput(samples, 5000, 0.0)
    assert rps == pytest.approx(2000.0)
    assert drain == pytest.approx(4.0)
    assert throughput([(1.0, 10)], 5000, 0.0) == (0.0, 0.0)  # one sample, never caught up
    partial = throughput([(1.0, 100), (3.0, 500)], 5000, 0.0)  # timed out: the rate so far
    assert partial == (pytest.approx(200.0), 0.0)
    rps, drain = throughput([(0.2, 0), (2.0, 5000)], 5000, 0.0)  # one commit: start -> end
    assert rps == pytest.approx(2500.0) and drain == pytest.approx(2.0)


def test_profile_packages() -> None:
    site = "/x/.venv/lib/python3.11/site-packages"
    assert group_of(f"{site}/faust/transport/consumer.py") == "faust"
    assert group_of(f"{site}/six.py") == "six"
    assert group_of("/work/main/models/detectors/groups.py") == "models/detectors"
    assert group_of("/work/main/models/runner.py") == "models/runner"
    assert group_of("/usr/lib/python3.11/asyncio/tasks.py") == "asyncio"
    assert group_of(None) == "<native>"
