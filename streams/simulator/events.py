"""What the simulator emits: records with their topic, key and event time, in event-time order.

`Timeline` is a heap keyed by (event time, creation sequence). Generators push events at any
time at or after the current simulation clock (a visit pushes its face check, settlement and
scans; an admission pushes a stay's bedside checks days ahead), and the engine pops everything
before the next planned activity. Ties keep creation order, so a label (created after the events
it cites) always follows them, and the merged stream is in event-time order by construction.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streams.simulator.world import mix

SETTLEMENT, TRACE_SCAN, FACE_VERIFY, SIM_LABELS = (
    "settlement",
    "trace_scan",
    "face_verify",
    "sim_labels",
)
EVENT_TOPICS = (SETTLEMENT, TRACE_SCAN, FACE_VERIFY)
SCHEMAS = {
    SETTLEMENT: "SettlementEvent",
    TRACE_SCAN: "TraceScanEvent",
    FACE_VERIFY: "FaceVerifyEvent",
    SIM_LABELS: "SimLabel",
}


@dataclass(slots=True)
class SimRecord:
    """One record for Kafka or a file.

    `topic` is the field name in `streams.config.Topics` (settlement, trace_scan, face_verify,
    sim_labels); `schema` the Avro record name; `record` a plain dict (times as int epoch ms).
    """

    topic: str
    key: str
    timestamp_ms: int
    schema: str
    record: dict[str, Any]


class IdGen:
    """Deterministic ids: prefix + 10-digit counter + 8 hex of a seeded hash (ST0000000001a2b3c4d5).

    The hash suffix makes ids of different seeds differ; a cheap multiplicative hash is enough.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.counters: dict[str, int] = {}
        self._salts: dict[str, int] = {}

    def next(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        salt = self._salts.get(prefix)
        if salt is None:
            salt = self._salts[prefix] = mix(self.seed, int.from_bytes(prefix.encode(), "big"))
        h = ((n ^ salt) * 0x9E3779B97F4A7C15 >> 32) & 0xFFFFFFFF
        return f"{prefix}{n:010d}{h:08x}"


class Timeline:
    """The heap of pending records."""

    __slots__ = ("_heap", "_seq", "clock")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, SimRecord]] = []
        self._seq = 0
        self.clock = 0  # nothing may be pushed before this time

    def push(self, record: SimRecord) -> None:
        if record.timestamp_ms < self.clock:
            raise AssertionError(
                f"{record.schema} at {record.timestamp_ms} pushed behind the clock {self.clock}"
            )
        self._seq += 1
        heapq.heappush(self._heap, (record.timestamp_ms, self._seq, record))

    def pop_before(self, t: int) -> Iterator[SimRecord]:
        """Pop every record with event time < t, in order, and advance the clock to t."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] < t:
            yield pop(heap)[2]
        if t > self.clock:
            self.clock = t

    def __len__(self) -> int:
        return len(self._heap)
