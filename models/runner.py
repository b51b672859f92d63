"""Drives a set of detectors over an event stream: routing, state, watermark, timers.

The one detector code path: the faust worker gives `DetectorSet` a `StateStore` over its tables,
the backtest replay and the tests give it `InMemoryStateStore`. Everything here runs on event
time; the only wall-clock value is `detected_at`, stamped from the injected `now_ms`.

Determinism: the same events in the same order give the same alerts with the same ids, whatever
the batch sizes, because timers fire as soon as the watermark passes them (after each event), in
(due, detector id, key) order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from heapq import heappop, heappush
from typing import Any, Protocol

from models.alerts import Alert
from models.detector import DUE, Detector, Event, Params, State
from models.reference import Registry

DEFAULT_LATENESS_MS = 10 * 60_000
"""Allowed lateness: events up to this far behind the newest event are on time."""

_NEVER = -(2**62)
_END = 2**62


class StateStore(Protocol):
    """Per-(detector, key) state. `put(..., None)` deletes the key.

    A store whose states are nothing but a dict keyed `(detector id, key)` may expose that dict
    as `objects` (`streams.worker.processor.ObjectStates`, a replay's): `DetectorSet` then reads
    and writes it directly, without a call per state."""

    def get(self, detector_id: str, key: str) -> State | None: ...

    def put(self, detector_id: str, key: str, state: State | None) -> None: ...


class InMemoryStateStore:
    """Dict-backed store for tests and backtests. States are kept by reference (no copies)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: dict[str, dict[str, State]] = {}

    def get(self, detector_id: str, key: str) -> State | None:
        d = self.data.get(detector_id)
        return d.get(key) if d is not None else None

    def put(self, detector_id: str, key: str, state: State | None) -> None:
        if state is None:
            d = self.data.get(detector_id)
            if d is not None:
                d.pop(key, None)
        else:
            d = self.data.get(detector_id)
            if d is None:
                d = self.data[detector_id] = {}
            d[key] = state

    def items(self) -> Iterator[tuple[str, str, State]]:
        """(detector id, key, state) of every stored key, e.g. to rebuild the timer index."""
        for did, d in self.data.items():
            for key, state in d.items():
                yield did, key, state

    def count(self, detector_id: str | None = None) -> int:
        """Number of stored keys, of one detector or of all."""
        if detector_id is not None:
            return len(self.data.get(detector_id, ()))
        return sum(len(d) for d in self.data.values())


def wall_clock_ms() -> int:
    """The one wall clock of the detection path (only for `detected_at`)."""
    return time.time_ns() // 1_000_000


class DetectorSet:
    """Routes each event to the detectors of its topic, for each key they name.

    `watermark_ms` = newest event time seen − allowed lateness (or a later value given to
    `advance`). An event behind the watermark is processed all the same; its alerts get
    `late=True`. Timers (`state["due"]`) sit in a heap with lazy invalidation, so expiry touches
    only keys that are due.
    """

    def __init__(
        self,
        detectors: Iterable[Detector],
        store: StateStore | None = None,
        allowed_lateness_ms: int = DEFAULT_LATENESS_MS,
        now_ms: Callable[[], int] = wall_clock_ms,
        profile: bool = False,
        external_watermark: bool = False,
    ) -> None:
        self.detectors: tuple[Detector, ...] = tuple(detectors)
        self.by_id: dict[str, Detector] = {}
        for det in self.detectors:
            if det.id in self.by_id:
                raise ValueError(f"duplicate detector id {det.id}")
            self.by_id[det.id] = det
        routes: dict[str, list[Detector]] = {}
        for det in self.detectors:
            for topic in det.topics:
                routes.setdefault(topic, []).append(det)
        self._routes = {topic: tuple(dets) for topic, dets in routes.items()}
        # per topic, what the event loop needs of each detector, looked up once here rather
        # than per event and detector: (id, stateful, keys, process)
        self._calls = {
            topic: tuple((d.id, d.stateful, d.keys, d.process) for d in dets)
            for topic, dets in self._routes.items()
        }
        self.store: StateStore = store if store is not None else InMemoryStateStore()
        self._objects: dict[tuple[str, str], State] | None = getattr(self.store, "objects", None)
        self.allowed_lateness_ms = allowed_lateness_ms
        self._now = now_ms
        self._max_time = _NEVER
        self._wm = _NEVER
        self._heap: list[tuple[int, str, str]] = []
        self._due: dict[tuple[str, str], int] = {}
        self._sched: dict[tuple[str, str], int] = {}
        self.events = 0
        self.late_events = 0
        self.profile = profile
        self.external_watermark = external_watermark
        self.timings: dict[str, float] = {det.id: 0.0 for det in self.detectors}

    # --- watermark and timers --------------------------------------------------------------

    @property
    def watermark_ms(self) -> int:
        """Newest event time − allowed lateness (or a later `advance`), never moving back."""
        return self._wm

    @property
    def pending_timers(self) -> int:
        """Keys with a deadline (live state); over `objects`, keys with a timer scheduled."""
        return len(self._due) if self._objects is None else len(self._sched)

    def advance(self, watermark_ms: int) -> list[Alert]:
        """Move the watermark forward without an event (idle partitions), firing due timers."""
        if watermark_ms > self._wm:
            self._wm = watermark_ms
        heap = self._heap
        if not heap or heap[0][0] > self._wm:
            return []  # nothing due (the common case: the stages advance before each event)
        return self._stamp(self._run_timers(self._wm), False)

    def flush(self) -> list[Alert]:
        """End of a replay: fire every pending timer (the watermark jumps to the end of time)."""
        self._wm = _END
        return self._stamp(self._run_timers(_END), False)

    def reindex(self, entries: Iterable[tuple[str, str, State]]) -> None:
        """Rebuild the timer index from stored states, e.g. after a worker restarts."""
        for did, key, state in entries:
            if did in self.by_id:
                self._index(did, key, state)

    def _index(self, did: str, key: str, state: State | None) -> None:
        k = (did, key)
        due = state.get(DUE) if state is not None else None
        if due is None:
            self._due.pop(k, None)
            return
        self._due[k] = due
        s = self._sched.get(k)
        if s is None or due < s:
            self._sched[k] = due
            heappush(self._heap, (due, did, key))

    def _run_timers(self, wm: int) -> list[Alert]:
        """Fire the timers due by `wm`, in (due, detector id, key) order."""
        if self._objects is not None:
            return self._run_timers_on_objects(wm, self._objects)
        out: list[Alert] = []
        heap, sched, dues, by_id = self._heap, self._sched, self._due, self.by_id
        get, put = self.store.get, self.store.put
        while heap and heap[0][0] <= wm:
            d, did, key = heappop(heap)
            k = (did, key)
            if sched.get(k) != d:
                continue  # superseded by an earlier deadline pushed later
            del sched[k]
            cur = dues.get(k)
            if cur is None:
                continue
            if cur > wm:  # deadline moved later since it was pushed
                sched[k] = cur
                heappush(heap, (cur, did, key))
                continue
            state = get(did, key)
            if state is None:
                del dues[k]
                continue
            alerts, new = by_id[did].expire(state, wm, key)
            put(did, key, new)
            # the timer index (`_index`), inlined: nearly every key ends in a timer
            due = new.get(DUE) if new is not None else None
            if due is None:
                del dues[k]
            else:
                if due <= wm:  # a detector that did not move its deadline must not loop
                    new[DUE] = due = wm + 1
                dues[k] = due
                sched[k] = due
                heappush(heap, (due, did, key))
            if alerts:
                out.extend(alerts)
        return out

    def _run_timers_on_objects(self, wm: int, objects: dict[tuple[str, str], State]) -> list[Alert]:
        """`_run_timers` over a store that is a dict of the states themselves: a key's deadline
        is read from its state (no `_due` index), so a timer touches two dicts, not three (the
        keys are cold by the time they are due: every lookup is a cache miss)."""
        out: list[Alert] = []
        heap, sched, by_id = self._heap, self._sched, self.by_id
        while heap and heap[0][0] <= wm:
            d, did, key = heappop(heap)
            k = (did, key)
            if sched.get(k) != d:
                continue  # superseded by an earlier deadline pushed later
            state = objects.get(k)
            cur = state.get(DUE) if state is not None else None
            if cur is None:  # deleted, or no deadline any more
                del sched[k]
                continue
            if cur > wm:  # deadline moved later since it was pushed
                sched[k] = cur
                heappush(heap, (cur, did, key))
                continue
            alerts, new = by_id[did].expire(state, wm, key)
            due = new.get(DUE) if new is not None else None
            if new is None:
                del objects[k]
            else:
                objects[k] = new
            if due is None:
                del sched[k]
            else:
                if due <= wm:  # a detector that did not move its deadline must not loop
                    new[DUE] = due = wm + 1
                sched[k] = due
                heappush(heap, (due, did, key))
            if alerts:
                out.extend(alerts)
        return out

    # --- events ----------------------------------------------------------------------------

    def process(self, event: Event) -> list[Alert]:
        """Run one event through every interested detector, then fire due timers."""
        t = event["event_time"]
        late = t < self._wm
        self.events += 1
        if late:
            self.late_events += 1
        if t > self._max_time:
            self._max_time = t
            if not self.external_watermark:
                wm = t - self.allowed_lateness_ms
                if wm > self._wm:
                    self._wm = wm
        wm = self._wm
        out: list[Alert] = []
        get, put, objects = self.store.get, self.store.put, self._objects
        dues, sched, heap = self._due, self._sched, self._heap
        prof = self.profile
        calls = self._calls.get(event.get("_topic"), ())  # type: ignore[arg-type]
        for did, stateful, keys_of, judge in calls:
            t0 = time.perf_counter() if prof else 0.0
            keys = keys_of(event)
            if keys:
                if stateful and objects is not None:  # states read and written in place
                    for key in keys:
                        k = (did, key)
                        state = objects.get(k)
                        alerts, new = judge(event, state, wm, key)
                        if new is not None:
                            objects[k] = new
                            due = new.get(DUE)
                            if due is not None:  # scheduled unless an earlier deadline is
                                s = sched.get(k)
                                if s is None or due < s:
                                    sched[k] = due
                                    heappush(heap, (due, did, key))
                        elif state is not None:
                            del objects[k]
                        if alerts:
                            out.extend(alerts)
                elif stateful:
                    for key in keys:
                        state = get(did, key)
                        alerts, new = judge(event, state, wm, key)
                        if new is not None or state is not None:
                            put(did, key, new)
                            # the timer index, inlined: this runs for almost every event
                            k = (did, key)
                            due = new.get(DUE) if new is not None else None
                            if due is None:
                                dues.pop(k, None)
                            elif dues.get(k) != due:
                                dues[k] = due
                                s = sched.get(k)
                                if s is None or due < s:
                                    sched[k] = due
                                    heappush(heap, (due, did, key))
                        if alerts:
                            out.extend(alerts)
                else:
                    for key in keys:
                        alerts, _ = judge(event, None, wm, key)
                        if alerts:
                            out.extend(alerts)
            if prof:
                self.timings[did] += time.perf_counter() - t0
        if out:
            self._stamp(out, late)
        if heap and heap[0][0] <= wm:
            out.extend(self._stamp(self._run_timers(wm), False))
        return out

    def process_batch(self, events: Iterable[Event]) -> list[Alert]:
        """Process events in order; the alerts of all of them, in the order raised."""
        out: list[Alert] = []
        for event in events:
            alerts = self.process(event)
            if alerts:
                out.extend(alerts)
        return out

    def _stamp(self, alerts: list[Alert], late: bool) -> list[Alert]:
        if alerts:
            now = self._now()
            for a in alerts:
                if isinstance(a, Alert):  # aggregators share the contract but emit plain records
                    a.detected_at = now
                    if late:
                        a.late = True
        return alerts


def default_detectors(
    registry: Registry | None = None,
    params: Mapping[str, Params | Mapping[str, Any]] | None = None,
) -> list[Detector]:
    """Every rule detector of docs/detection.md (not the online models), in catalogue order.

    `params` maps detector id to a parameter dataclass or a mapping of overrides.
    """
    from models.detectors import DETECTOR_CLASSES

    params = dict(params or {})
    unknown = set(params) - {cls.id for cls in DETECTOR_CLASSES}
    if unknown:
        raise ValueError(f"parameters for unknown detectors: {sorted(unknown)}")
    registry = registry if registry is not None else Registry()
    out: list[Detector] = []
    for cls in DETECTOR_CLASSES:
        out.append(cls.create(registry, params.get(cls.id)))
    return out
