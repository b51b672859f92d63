"""The detector contract: `process(event, state) -> (alerts, state)`, like River's `learn_one`.

A detector is a plain object: no faust, Kafka, ClickHouse or clock. The live worker, the backtest
replay and the tests all drive it through `models.runner.DetectorSet`, which owns the state store,
the watermark and the timers. Events are dicts as decoded from Avro plus `_topic`.

State is a plain dict per (detector, key) (JSON/msgpack-safe: str keys, lists, ints, floats,
strings). A detector with a pending deadline puts it in `state["due"]` (event-time ms): the runner
indexes it and calls `expire` once the watermark reaches it. Every stateful detector sets a due
date at which its state is stale, so state per key is bounded and dropped when the entity is idle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

from models.alerts import Alert
from models.catalogue import BY_ID
from models.reference import Registry

Event = Mapping[str, Any]
State = dict[str, Any]
Result = tuple[Sequence[Alert], State | None]

SETTLEMENT = "settlement"
TRACE_SCAN = "trace_scan"
FACE_VERIFY = "face_verify"
TOPICS = frozenset({SETTLEMENT, TRACE_SCAN, FACE_VERIFY})

P = TypeVar("P", bound="Params")

DUE = "due"
"""State key of the event-time deadline the runner's timer index follows."""

NO_ALERTS: tuple[Alert, ...] = ()
"""The empty result, shared: most events raise nothing and should allocate nothing."""


@runtime_checkable
class Detector(Protocol):
    """What the runner needs from a detector.

    `keys(event)` names the state keys the event concerns (empty: not interested). `process` and
    `expire` receive the key too, because one event can concern several keys of one detector
    (a settlement's doctor and pharmacist) and timer alerts must name their entity.
    `stateful = False` lets the runner skip the state store entirely.
    """

    id: str
    version: str
    kind: str
    entity_type: str
    topics: frozenset[str]
    stateful: bool

    def keys(self, event: Event) -> list[str]: ...

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result: ...

    def expire(self, state: State, watermark_ms: int, key: str) -> Result: ...


@dataclass(kw_only=True)
class Params:
    """Parameters shared by every detector; subclasses add thresholds and windows.

    Plain data (numbers, strings, tuples) so they can be loaded from TOML/YAML later.
    `severity_steps`: ratio observed/threshold from which severity is 2, then 3 (like the
    warning lines +50 % / +100 %).
    """

    severity_steps: tuple[float, float] = (1.5, 2.0)


class BaseDetector:
    """Common plumbing: catalogue metadata, parameters, and a default expiry.

    The default `expire` assumes the detector set `due` to the time after which all of its state
    is stale, so it simply drops the key.
    """

    id: ClassVar[str]
    version: ClassVar[str] = "1"
    topics: ClassVar[frozenset[str]]
    stateful: ClassVar[bool] = True
    params_class: ClassVar[type[Params]] = Params
    config_version: str | None = None

    def __init__(self, params: Params | Mapping[str, Any] | None = None) -> None:
        scenario = BY_ID[self.id]
        self.kind: str = scenario.kind
        self.entity_type: str = scenario.entity_type
        self.params = build_params(self.params_class, params)

    @classmethod
    def create(cls, registry: Registry, params: Params | Mapping[str, Any] | None = None) -> Self:
        """Build from reference data; detectors that need the registry override this."""
        return cls(params)

    def keys(self, event: Event) -> list[str]:  # pragma: no cover - every detector overrides
        raise NotImplementedError

    def process(self, event: Event, state: State | None, watermark_ms: int, key: str) -> Result:
        raise NotImplementedError  # pragma: no cover

    def expire(self, state: State, watermark_ms: int, key: str) -> Result:
        due = state.get(DUE)
        if due is None or due <= watermark_ms:
            return NO_ALERTS, None
        return NO_ALERTS, state

    def severity(self, ratio: float) -> int:
        """1/2/3 by how far the observation is over its threshold."""
        s2, s3 = self.params.severity_steps
        return 3 if ratio >= s3 else 2 if ratio >= s2 else 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


def build_params(cls: type[P], value: P | Mapping[str, Any] | None) -> P:
    """Defaults, a ready dataclass, or a mapping of overrides (unknown names are an error)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        names = {f.name for f in fields(cls)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown parameters {sorted(unknown)}")
        coerced = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return replace(cls(), **coerced)
    raise TypeError(f"{cls.__name__}: expected {cls.__name__} or a mapping, got {type(value)}")


def fund_share(event: Event, amount_fen: int) -> int:
    """The fund-paid part of a line amount, pro rata to the settlement's fund share."""
    total = event["total_fen"]
    if total <= 0:
        return 0
    return amount_fen * event["fund_paid_fen"] // total


def digest(parts: Iterable[str]) -> str:
    """A short stable signature (16 hex chars) of a basket; `hash()` is salted per process."""
    return hashlib.blake2b("|".join(parts).encode("utf-8"), digest_size=8).hexdigest()


def yuan(fen: int) -> str:
    """Fen as yuan with two decimals, for explanations."""
    return f"{fen / 100:.2f}"


def trigger(event_id: str, event_time: int) -> dict[str, Any]:
    """A minimal trigger for alerts raised from state (timers), where no event dict is at hand."""
    return {"event_id": event_id, "event_time": event_time}
