"""Event-time windows as plain data, and local-time arithmetic.

A window is a dict `{"t": [times...], "v": [values...]}`: two parallel lists kept sorted by event
time, the pattern of Flink's fraud-detection demo (per-key MapState evicted by event time) rather
than faust's windowed tables (faust-streaming#185, #385). It is plain data on purpose: it lives in
faust tables (RocksDB, JSON or msgpack) and must survive a round trip, so no custom classes. Each
value is a list whose first element is the event id; re-delivered events (same time and id) are
ignored, which keeps at-least-once processing from double counting. Values may come back as lists
after a JSON round trip; only indexing is used on them.

Times are epoch milliseconds. Local time is Asia/Shanghai, a fixed UTC+8 without daylight saving,
so local days and hours are plain integer arithmetic.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LOCAL_OFFSET_MS = 8 * HOUR_MS
"""Asia/Shanghai is UTC+8 all year."""

Window = dict[str, Any]

_NONE: list[Any] = []


def new() -> Window:
    """An empty window."""
    return {"t": [], "v": []}


def add(win: Window, t: int, value: list[Any]) -> bool:
    """Insert `value` (first element: event id) at time `t`; False if that event is already in.

    Ties keep arrival order, so the same events in the same order give the same window.
    """
    times = win["t"]
    vals = win["v"]
    eid = value[0]
    i = len(times) if not times or t >= times[-1] else bisect_right(times, t)
    j = i - 1
    while j >= 0 and times[j] == t:
        if vals[j][0] == eid:
            return False
        j -= 1
    if i == len(times):
        times.append(t)
        vals.append(value)
    else:
        times.insert(i, t)
        vals.insert(i, value)
    return True


def evict_before(win: Window, cutoff: int) -> list[Any]:
    """Drop entries with time < cutoff; return the dropped values (oldest first)."""
    times = win["t"]
    if not times or times[0] >= cutoff:
        return _NONE
    i = bisect_left(times, cutoff)
    vals = win["v"]
    dropped = vals[:i]
    del times[:i]
    del vals[:i]
    return dropped


def trim(win: Window, max_len: int) -> list[Any]:
    """Keep the newest `max_len` entries (a hard bound on state per key); return the dropped."""
    times = win["t"]
    extra = len(times) - max_len
    if extra <= 0:
        return _NONE
    vals = win["v"]
    dropped = vals[:extra]
    del times[:extra]
    del vals[:extra]
    return dropped


def remove_id(win: Window, event_id: str) -> bool:
    """Remove the entry of one event (e.g. the original of a reversal)."""
    vals = win["v"]
    for i, v in enumerate(vals):
        if v[0] == event_id:
            del vals[i]
            del win["t"][i]
            return True
    return False


def open_window(
    event: dict[str, Any], state: dict[str, Any] | None, watermark_ms: int, width: int
) -> tuple[dict[str, Any] | None, Window | None]:
    """The common start of a detector over one settlement window per key (state["w"]).

    A reversal removes its original from the window and ends there (window None); any other
    event gets the key's window, created if needed and evicted up to the watermark − width.
    """
    rev = event["reversal_of"]
    if rev is not None:
        if state is not None:
            remove_id(state["w"], rev)
        return state, None
    if state is None:
        state = {"w": new()}
    win = state["w"]
    evict_before(win, watermark_ms - width)
    return state, win


def span(win: Window, lo: int, hi: int) -> tuple[int, int]:
    """Index range [i, j) of the entries with lo <= time <= hi."""
    times = win["t"]
    return bisect_left(times, lo), bisect_right(times, hi)


def between(win: Window, lo: int, hi: int) -> Iterator[tuple[int, Any]]:
    """Iterate (time, value) over lo <= time <= hi."""
    i, j = span(win, lo, hi)
    return zip(win["t"][i:j], win["v"][i:j], strict=True)


def slices_containing(win: Window, t: int, width: int) -> list[tuple[int, int]]:
    """Index ranges of the candidate windows [e - width, e] that contain time `t`.

    A sliding window holding `t` can always be slid until it ends on an event at or after `t`,
    so the candidates end at `t` and at each later entry within `width`. In order (nothing after
    `t`) that is one range; an out-of-order event also checks the windows it completes.
    """
    times = win["t"]
    n = len(times)
    if not n or times[-1] <= t:
        return [(bisect_left(times, t - width), n)]
    out = [(bisect_left(times, t - width), bisect_right(times, t))]
    k = bisect_right(times, t)
    last = t
    while k < n and times[k] <= t + width:
        e = times[k]
        if e != last:
            out.append((bisect_left(times, e - width), bisect_right(times, e)))
            last = e
        k += 1
    return out


def best_slice(
    win: Window, t: int, width: int, measure: Callable[[list[Any], int, int], float]
) -> tuple[float, int, int]:
    """(measure, i, j) of the candidate window containing `t` with the largest measure."""
    best = (-1.0, 0, 0)
    vals = win["v"]
    for i, j in slices_containing(win, t, width):
        m = measure(vals, i, j)
        if m > best[0]:
            best = (m, i, j)
    return best


def prune_keyed(windows: dict[str, Window], cutoff: int) -> None:
    """Evict each of a dict of sub-windows (one per drug group, exam, basket…) before `cutoff`.

    A sub-window may carry `"f"`, the time it last fired; it is dropped once empty and its last
    firing is older than `cutoff` (it can no longer suppress an on-time event).
    """
    empty = None
    for k, win in windows.items():
        evict_before(win, cutoff)
        if not win["t"] and win.get("f", cutoff - 1) < cutoff:
            if empty is None:
                empty = [k]
            else:
                empty.append(k)
    if empty:
        for k in empty:
            del windows[k]


def keyed_due(windows: dict[str, Window], width: int) -> int | None:
    """When every sub-window (and its last firing) is older than `width`: the key's deadline."""
    due = None
    for win in windows.values():
        times = win["t"]
        last = times[-1] if times else win.get("f")
        f = win.get("f")
        if f is not None and (last is None or f > last):
            last = f
        if last is not None and (due is None or last > due):
            due = last
    return None if due is None else due + width + 1


def newest(win: Window) -> int | None:
    """Time of the newest entry, None if empty."""
    times = win["t"]
    return times[-1] if times else None


# --- local time (Asia/Shanghai) -------------------------------------------------------------


def local_day(t: int) -> int:
    """Days since 1970-01-01 in local time."""
    return (t + LOCAL_OFFSET_MS) // DAY_MS


def local_day_start(day: int) -> int:
    """Epoch ms of local midnight starting `day`."""
    return day * DAY_MS - LOCAL_OFFSET_MS


def local_minute_of_day(t: int) -> int:
    """Minutes since local midnight, 0..1439."""
    return ((t + LOCAL_OFFSET_MS) % DAY_MS) // MINUTE_MS


def local_weekday(t: int) -> int:
    """Local weekday, Monday = 0 … Sunday = 6 (1970-01-01 was a Thursday)."""
    return (local_day(t) + 3) % 7


_CST = timedelta(milliseconds=LOCAL_OFFSET_MS)


def fmt_local(t: int) -> str:
    """`YYYY-MM-DD HH:MM` local time, for explanations."""
    return (datetime.fromtimestamp(t / 1000, UTC) + _CST).strftime("%Y-%m-%d %H:%M")
