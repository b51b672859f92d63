"""Hourly aggregates per institution: the figures analysts roll up to regions and days.

The aggregator has the detector contract's shape (`keys`, `process`, `expire`, plain-data state
with a `due` timer, no clock but an injected one for `computed_at`), so the worker drives it on
the same keyed stream, watermark and state store; it returns `InstitutionHour` records (plain
dicts for the Avro codec, topic `aggregates`, keyed by institution_id) instead of alerts.

Why the state looks as it does:

- An hour is emitted once, complete, when the watermark passes its end (revision 0). The store
  keeps the highest revision of (institution, hour) (ReplacingMergeTree(revision)), so a late
  event must re-emit the *whole* hour with revision + 1. A closed hour therefore keeps its
  counters and id sets for `grace_ms` after its end; after that it is dropped and later events
  for it are ignored (the settlements table still has them).
- Distinct counts are exact: the hour keeps the sorted person and doctor ids. Person ids stay in
  the worker's state (RocksDB and its changelog), never in an output record.
- Event ids are kept too, so a re-delivered settlement (at-least-once input) is not counted twice.
- Reversals (reversal_of set, negative amounts) are counted in `reversals` and their amounts are
  added; they do not count as a person's or a doctor's visit.

Hours are aligned on epoch hours: Asia/Shanghai is UTC+8, so local and UTC hours coincide.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from models.detector import DUE, SETTLEMENT, Event, State
from models.runner import wall_clock_ms
from models.window import HOUR_MS

Record = dict[str, Any]
Output = tuple[Sequence[Record], State | None]

DEFAULT_GRACE_MS = 2 * HOUR_MS
"""How long after its end an hour still takes corrections."""

NO_RECORDS: tuple[Record, ...] = ()
"""The empty result, shared (most settlements emit nothing)."""

_HOURS = "hours"
_INST = "inst"
_REV = "rev"


def hour_start(t: int) -> int:
    """Start of the hour holding event time `t` (the same instant in UTC and in UTC+8)."""
    return t - t % HOUR_MS


def _insert(ids: list[str], value: str) -> bool:
    """Insert into a sorted list; False if already there."""
    i = bisect_left(ids, value)
    if i < len(ids) and ids[i] == value:
        return False
    ids.insert(i, value)
    return True


def _new_bucket() -> dict[str, Any]:
    return {"n": 0, "r": 0, "amt": 0, "fund": 0, "self": 0, "p": [], "d": [], "e": []}


class InstitutionHourAggregator:
    """Settlements, money, distinct persons and doctors per institution and hour.

    State per institution: `{"inst": [type, level, region], "hours": {"<hour_start>": bucket},
    "due": ms}`; a bucket holds the counters, the sorted person / doctor / event ids, and once
    emitted `"rev"`, the last revision sent. `due` is the earliest of the open hours' ends and the
    closed hours' ends + grace, so the state disappears once the institution is idle.
    """

    id: ClassVar[str] = "institution_hour"
    version: ClassVar[str] = "1"
    record_name: ClassVar[str] = "InstitutionHour"
    topics: ClassVar[frozenset[str]] = frozenset({SETTLEMENT})
    stateful: ClassVar[bool] = True

    def __init__(
        self, grace_ms: int = DEFAULT_GRACE_MS, now_ms: Callable[[], int] = wall_clock_ms
    ) -> None:
        if grace_ms < 0:
            raise ValueError("grace_ms must be >= 0")
        self.grace_ms = grace_ms
        self._now = now_ms

    def keys(self, event: Event) -> list[str]:
        return [event["institution_id"]]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Output:
        """Add a settlement to its hour; a closed hour is re-emitted at once, corrected."""
        start = hour_start(event["event_time"])
        end = start + HOUR_MS
        if end + self.grace_ms <= watermark_ms:
            return NO_RECORDS, state  # past correction: the hour's row stays as emitted
        if state is None:
            state = {_HOURS: {}}
        hours: dict[str, dict[str, Any]] = state[_HOURS]
        bucket = hours.get(str(start))
        if bucket is None:
            bucket = hours[str(start)] = _new_bucket()
        if not _add(bucket, event):
            return NO_RECORDS, state  # re-delivered
        state[_INST] = [event["institution_type"], event["institution_level"], event["region_code"]]
        out: Sequence[Record] = NO_RECORDS
        if _REV in bucket:
            bucket[_REV] += 1
            out = [self._record(key, start, bucket, state)]
        elif end <= watermark_ms:  # the hour's first event is already late: it closes at once
            bucket[_REV] = 0
            out = [self._record(key, start, bucket, state)]
        state[DUE] = self._due(hours)
        return out, state

    def expire(self, state: State, watermark_ms: int, key: str) -> Output:
        """Emit the hours the watermark has closed; drop closed hours past their grace."""
        hours: dict[str, dict[str, Any]] = state[_HOURS]
        out: list[Record] = []
        for k in sorted(hours, key=int):
            start = int(k)
            end = start + HOUR_MS
            bucket = hours[k]
            if _REV not in bucket and end <= watermark_ms:
                bucket[_REV] = 0
                out.append(self._record(key, start, bucket, state))
            if _REV in bucket and end + self.grace_ms <= watermark_ms:
                del hours[k]
        if not hours:
            return out, None
        state[DUE] = self._due(hours)
        return out, state

    def _due(self, hours: dict[str, dict[str, Any]]) -> int:
        return min(int(k) + HOUR_MS + (self.grace_ms if _REV in b else 0) for k, b in hours.items())

    def _record(self, key: str, start: int, bucket: dict[str, Any], state: State) -> Record:
        inst_type, level, region = state[_INST]
        return {
            "institution_id": key,
            "institution_type": inst_type,
            "institution_level": level,
            "region_code": region,
            "hour_start": start,
            "settlements": bucket["n"],
            "reversals": bucket["r"],
            "amount_fen": bucket["amt"],
            "fund_paid_fen": bucket["fund"],
            "self_paid_fen": bucket["self"],
            "distinct_persons": len(bucket["p"]),
            "doctors": len(bucket["d"]),
            "revision": bucket[_REV],
            "computed_at": self._now(),
        }


def _add(bucket: dict[str, Any], event: Event) -> bool:
    """Count a settlement in its hour; False if that event id is already counted."""
    if not _insert(bucket["e"], event["event_id"]):
        return False
    if event.get("reversal_of") is not None:
        bucket["r"] += 1
    else:
        bucket["n"] += 1
        _insert(bucket["p"], event["person_id"])
        doctor = event.get("doctor_id")
        if doctor is not None:
            _insert(bucket["d"], doctor)
    bucket["amt"] += event["total_fen"]
    bucket["fund"] += event["fund_paid_fen"]
    bucket["self"] += event["self_paid_fen"]
    return True
