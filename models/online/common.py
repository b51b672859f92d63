"""What the online models share: their base class, the peer warning levels, local days.

Model detectors follow the rule detectors' contract (`models.detector.BaseDetector`), with two
differences: every model alert is `suspicious` (a model prompts a review, it never proves a
violation), and two of them (`settlement_anomaly`, `doctor_profile`) are not simulator
scenarios, so their metadata is declared here instead of coming from `models/catalogue.py`.

States are plain JSON data, and `process` updates the state it is given **in place** (and
returns it), as the rule detectors' windows do: the runner puts back every state a detector
returns, so the worker's write-back cache marks it changed and writes it at the end of the
batch; the worker's tables hold states serialized (RocksDB, or JSON restored from the
changelog after an aborted transaction), so a crash in a later batch cannot reach a state
already written. A store that kept states by reference across a simulated crash would see
the crashed batch's changes (tests/worker/test_restart.py serializes its table for that
reason). `expire` may still return a new state.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from typing import Any, ClassVar

from models.catalogue import BY_ID
from models.detector import BaseDetector, Params, build_params
from models.window import DAY_MS, LOCAL_OFFSET_MS

PEER_LEVELS: tuple[float, float, float] = (0.2, 0.5, 1.0)
"""Warning lines of the abnormal-behaviour index over the peer mean: +20 % / +50 % / +100 %."""


def peer_level(ratio: float, lines: tuple[float, float, float] = PEER_LEVELS) -> int:
    """Warning level 0..3 of `ratio` = member / peer mean (levels at >= +20 / 50 / 100 %).

    The boundaries belong to the higher level; the comparison is made on the excess with a
    tolerance of 1e-9 so that 1.2 (float) is exactly level 1.

    >>> [peer_level(r) for r in (1.0, 1.1999, 1.2, 1.4999, 1.5, 1.9999, 2.0, 3.0)]
    [0, 0, 1, 1, 2, 2, 3, 3]
    """
    excess = ratio - 1.0 + 1e-9
    return 3 if excess >= lines[2] else 2 if excess >= lines[1] else 1 if excess >= lines[0] else 0


LEVEL_ZH = {1: "一级预警", 2: "二级预警", 3: "三级预警"}


def local_day_of(t: int) -> int:
    """Days since 1970-01-01 in Asia/Shanghai."""
    return (t + LOCAL_OFFSET_MS) // DAY_MS


def day_end(day: int) -> int:
    """Epoch ms of the local midnight that ends `day`."""
    return (day + 1) * DAY_MS - LOCAL_OFFSET_MS


def city_of(region_code: str | None, institution_id: str) -> str:
    """Province + city (4 digits): the region code's, else the institution id's digits."""
    if region_code and len(region_code) >= 4:
        return region_code[:4]
    return institution_id[1:5]


def institution_group(event: Mapping[str, Any]) -> tuple[str, int]:
    """(type, level) of the settlement's institution; the id prefix when the type is missing."""
    inst_type = event.get("institution_type")
    if not inst_type:
        inst_type = "PHARMACY" if str(event["institution_id"]).startswith("P") else "HOSPITAL"
    return str(inst_type), int(event.get("institution_level") or 0)


class ModelDetector(BaseDetector):
    """Base of the online models: kind `suspicious`, metadata for ids outside the catalogue."""

    entity: ClassVar[str] = "institution"
    """Entity type of the alerts when the id is not a catalogue scenario."""

    def __init__(self, params: Params | Mapping[str, Any] | None = None) -> None:
        scenario = BY_ID.get(self.id)
        self.kind: str = "suspicious"
        self.entity_type: str = scenario.entity_type if scenario is not None else self.entity
        self.params = build_params(self.params_class, params)


def add_event_id(ids: list[str], event_id: str) -> bool:
    """Insert `event_id` into the sorted list `ids`; False if it is there already (a re-delivered
    event, which the caller counts once)."""
    at = bisect_left(ids, event_id)
    if at < len(ids) and ids[at] == event_id:
        return False
    ids.insert(at, event_id)
    return True
