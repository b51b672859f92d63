"""Reference data the detectors judge against: the institution registry and the drug catalogue.

In production these come from the insurance platform's registries (定点机构库, 药品目录); here the
simulator writes them as JSON lines (`institutions.jsonl`, `drugs.jsonl`) next to its labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True, slots=True)
class Institution:
    """A designated institution with its electronic fence (centre and radius)."""

    institution_id: str
    name: str
    institution_type: str  # HOSPITAL, CLINIC, PHARMACY
    level: int  # 1-3 for hospitals, 0 otherwise
    region_code: str  # six digits: province, city, county
    lat: float
    lon: float
    fence_radius_m: float


@dataclass(frozen=True, slots=True)
class Drug:
    """A drug of the national catalogue and the trace-code product prefix of its boxes."""

    drug_code: str  # national code, 27 characters
    name: str
    generic_group: str
    product_code: str  # 7-digit prefix of its trace codes
    unit_price_fen: int
    days_per_box: int
    covered: bool = True


@dataclass(slots=True)
class Registry:
    """Institutions and drugs by id."""

    institutions: dict[str, Institution] = field(default_factory=dict)
    drugs: dict[str, Drug] = field(default_factory=dict)

    @classmethod
    def from_items(cls, institutions: Iterable[Institution], drugs: Iterable[Drug]) -> Registry:
        return cls({i.institution_id: i for i in institutions}, {d.drug_code: d for d in drugs})

    @classmethod
    def load(cls, directory: Path) -> Registry:
        """Read `institutions.jsonl` and `drugs.jsonl` from a directory."""
        directory = Path(directory)
        return cls.from_items(
            (Institution(**row) for row in _read_jsonl(directory / "institutions.jsonl")),
            (Drug(**row) for row in _read_jsonl(directory / "drugs.jsonl")),
        )

    def dump(self, directory: Path) -> None:
        """Write the registry as JSON lines into a directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _write_jsonl(
            directory / "institutions.jsonl", (asdict(i) for i in self.institutions.values())
        )
        _write_jsonl(directory / "drugs.jsonl", (asdict(d) for d in self.drugs.values()))


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _read_jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
