"""The event-time window primitive and local-time helpers."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from models import window as w


def _filled(*times: int) -> dict:
    win = w.new()
    for n, t in enumerate(times):
        w.add(win, t, [f"e{n}", t])
    return win


def test_add_keeps_time_order_and_ties_in_arrival_order() -> None:
    win = _filled(5, 1, 3, 3, 9)
    assert win["t"] == [1, 3, 3, 5, 9]
    assert [v[0] for v in win["v"]] == ["e1", "e2", "e3", "e0", "e4"]


def test_add_ignores_a_redelivered_event() -> None:
    win = _filled(1, 2)
    assert w.add(win, 2, ["e1", 2]) is False
    assert w.add(win, 2, ["other", 2]) is True
    assert len(win["t"]) == 3


def test_evict_before_returns_dropped_oldest_first() -> None:
    win = _filled(1, 2, 3, 4)
    assert [v[0] for v in w.evict_before(win, 3)] == ["e0", "e1"]
    assert win["t"] == [3, 4]
    assert w.evict_before(win, 0) == []


def test_trim_bounds_length() -> None:
    win = _filled(1, 2, 3, 4)
    assert [v[0] for v in w.trim(win, 3)] == ["e0"]
    assert win["t"] == [2, 3, 4]


def test_remove_id_and_between() -> None:
    win = _filled(1, 2, 3, 4)
    assert w.remove_id(win, "e2")
    assert not w.remove_id(win, "nope")
    assert [t for t, _ in w.between(win, 2, 4)] == [2, 4]
    assert w.span(win, 2, 3) == (1, 2)


def test_slices_containing_in_order_is_one_window() -> None:
    win = _filled(0, 10, 20, 30)
    assert w.slices_containing(win, 30, 15) == [(2, 4)]


def test_slices_containing_out_of_order_checks_the_windows_it_completes() -> None:
    win = _filled(0, 10, 20, 30)
    # an event at 10 arriving late: windows ending at 10, 20 (contains 10), not 30 (> 10 + 15)
    assert w.slices_containing(win, 10, 15) == [(0, 2), (1, 3)]


def test_best_slice_picks_the_largest_measure() -> None:
    win = _filled(0, 10, 12, 14, 40)
    m, i, j = w.best_slice(win, 10, 5, lambda vals, i, j: j - i)
    assert (m, i, j) == (3, 1, 4)


def test_window_survives_json_round_trip() -> None:
    win = json.loads(json.dumps(_filled(3, 1, 2)))
    assert w.add(win, 2, ["e2", 2]) is False  # lists after JSON still compare by id
    w.evict_before(win, 2)
    assert win["t"] == [2, 3]


def test_prune_keyed_and_keyed_due() -> None:
    groups = {"a": _filled(1, 5), "b": _filled(2)}
    groups["b"]["f"] = 2
    groups["c"] = {"t": [], "v": [], "f": 50}
    w.prune_keyed(groups, 4)
    assert set(groups) == {"a", "c"}  # b empty and fired before the cutoff
    assert w.keyed_due(groups, 10) == 50 + 10 + 1
    assert w.keyed_due({}, 10) is None


def test_local_time_helpers() -> None:
    t = 1_763_308_800_000 + 90 * 60_000  # Monday 01:30 local
    assert w.local_weekday(t) == 0
    assert w.local_minute_of_day(t) == 90
    assert w.local_day_start(w.local_day(t)) == 1_763_308_800_000
    assert w.fmt_local(t) == "2025-11-17 01:30"


@given(st.lists(st.integers(min_value=0, max_value=1000), max_size=60), st.integers(0, 1000))
def test_window_stays_sorted_under_any_adds_and_evictions(times: list[int], cut: int) -> None:
    win = w.new()
    for n, t in enumerate(times):
        w.add(win, t, [f"e{n}"])
    w.evict_before(win, cut)
    assert win["t"] == sorted(win["t"])
    assert all(t >= cut for t in win["t"])
    assert len(win["t"]) == len(win["v"]) == sum(1 for t in times if t >= cut)
