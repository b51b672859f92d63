"""Which detectors see which records, and which records are repartitioned, by source topic.

Detector state is kept per (stage, partition). A stage groups the detectors that key their
state on one kind of entity, and is fed by topics partitioned by that entity:

| stage       | entity         | fed by                                                   |
|-------------|----------------|----------------------------------------------------------|
| person      | person         | settlement, face-verify (both keyed by the person)       |
| doctor      | doctor/pharm.  | face-verify (staff checks), by-doctor (settlements)      |
| trace       | trace code     | trace-scan (keyed by the code)                           |
| institution | institution    | by-institution (settlements, sale scans, face checks)    |
| group       | peer group     | by-group (settlements, keyed by the institution's peers) |

The three repartition topics carry the original record bytes under a new key, so a record is
decoded again but never re-encoded. An input record goes only to the stages where a detector
keys it, whether directly or as a copy (`BatchProcessor`): a stock-in scan, which no detector
reads, goes nowhere (counted as unkeyed); a patient's face check skips the doctor stage.
Every topic has the same partition count, so partition p of each lands on one worker together
with partition p of the state changelog.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2

from models.detector import Detector, Event, Result, State
from models.online.peers import institution_peer_group

STAGE_OF_DETECTOR: dict[str, str] = {
    "cross_institution_frequency": "person",
    "card_burst": "person",
    "drug_over_supply": "person",
    "pharmacy_hopping": "person",
    "repeated_exam": "person",
    "duplicate_billing": "person",
    "impersonation": "person",
    "impossible_travel": "person",
    "hanging_bed": "person",
    "split_hospitalization": "person",
    "licence_lending": "doctor",
    "trace_code_resale": "trace",
    "split_charging": "institution",
    "maintenance_window": "institution",
    "odd_hour_sales": "institution",
    "pharmacy_basket_ring": "institution",
    "group_visit": "institution",
    "fence_breach": "institution",
    "drug_swap": "institution",
    "institution_hour": "institution",  # the aggregator, not a detector: same contract
    # online models (models/online)
    "cost_growth": "institution",
    "peer_deviation": "group",  # a whole peer group in one partition (models/online/peers.py)
    "settlement_anomaly": "person",
    "doctor_profile": "institution",  # keyed by peer group: the doctor stage has one key a record
}

# source topic role -> stages whose detectors process its records
STAGES_OF_ROLE: dict[str, tuple[str, ...]] = {
    "settlement": ("person",),
    "face_verify": ("person", "doctor"),
    "trace_scan": ("trace",),
    "by_institution": ("institution",),
    "by_doctor": ("doctor",),
    "by_group": ("group",),
}

# stage -> the source roles whose progress bounds its event time (the slowest one wins)
CHANNELS_OF_STAGE: dict[str, tuple[str, ...]] = {
    "person": ("settlement", "face_verify"),
    "doctor": ("face_verify", "by_doctor"),
    "trace": ("trace_scan",),
    "institution": ("by_institution",),
    "group": ("by_group",),
}

# Avro record name -> the `_topic` value detectors route on
TOPIC_OF_SCHEMA = {
    "SettlementEvent": "settlement",
    "TraceScanEvent": "trace_scan",
    "FaceVerifyEvent": "face_verify",
}
INPUT_ROLES = ("settlement", "face_verify", "trace_scan")
REPARTITION_ROLES = ("by_institution", "by_doctor", "by_group")
SOURCE_ROLES = INPUT_ROLES + REPARTITION_ROLES


@functools.lru_cache(maxsize=1 << 16)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition the worker's producer (aiokafka, murmur2 like the Java client) puts a key
    on. Cached: repartition keys (institutions, staff, peer groups) repeat, and aiokafka's
    murmur2 is pure Python (about 4 µs a call)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def repartition_keys(role: str, record: dict[str, Any]) -> list[tuple[str, str]]:
    """(repartition role, key) pairs an input record is forwarded under."""
    if role not in INPUT_ROLES:
        return []
    out = [("by_institution", record["institution_id"])]
    if role == "settlement":
        staff = {record["doctor_id"], record["pharmacist_id"]} - {None}
        out.extend(("by_doctor", s) for s in sorted(staff))
        if record["reversal_of"] is None:
            out.append(("by_group", institution_peer_group(record)))
    return out


@dataclass(frozen=True)
class RouteKeyFiltered:
    """A detector restricted to the key its record was routed under.

    A settlement reaches the doctor stage once per staff member (doctor, pharmacist), each copy
    on the partition of that person; each copy must only touch its own key's state.
    """

    inner: Detector

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def keys(self, event: Event) -> list[str]:
        route = event.get("_route")
        keys = self.inner.keys(event)
        return keys if route is None else [k for k in keys if k == route]

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        return self.inner.process(event, state, watermark_ms, key)

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        return self.inner.expire(state, watermark_ms, key)


def detectors_by_stage(detectors: Iterable[Detector]) -> dict[str, list[Detector]]:
    """Split the detectors into stages; every detector must belong to one."""
    out: dict[str, list[Detector]] = {stage: [] for stage in CHANNELS_OF_STAGE}
    for det in detectors:
        stage = STAGE_OF_DETECTOR.get(det.id)
        if stage is None:
            raise ValueError(f"detector {det.id} has no stage in streams/worker/routing.py")
        out[stage].append(RouteKeyFiltered(det) if stage == "doctor" else det)
    return out
