"""The catalogue of violations FundWatch looks for: one entry per row of the domain's table.

This is the shared vocabulary of the simulator (which injects each scenario and labels it with
the detector expected to catch it), the detectors (whose ids alerts carry) and the backtest
(which joins the two). Ids are stable contracts: analysts filter on them in ClickHouse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["violation", "suspicious"]
EntityType = Literal["person", "institution", "doctor", "pharmacist", "trace_code", "group"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A kind of fraud or waste: what it is called, who commits it and what should catch it."""

    id: str
    name_zh: str
    detector_id: str
    kind: Kind
    entity_type: EntityType
    signal: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "cross_institution_frequency",
        "跨机构超频",
        "cross_institution_frequency",
        "suspicious",
        "person",
        "distinct institutions per person in a sliding window",
    ),
    Scenario(
        "drug_over_supply",
        "超量开药",
        "drug_over_supply",
        "suspicious",
        "person",
        "days of supply per person and generic group vs window length",
    ),
    Scenario(
        "duplicate_billing",
        "重复收费/重复结算",
        "duplicate_billing",
        "violation",
        "institution",
        "identical settlement or items for one person within minutes",
    ),
    Scenario(
        "split_charging",
        "分解收费",
        "split_charging",
        "violation",
        "institution",
        "sub-items of a packaged item billed together (rule library)",
    ),
    Scenario(
        "drug_swap",
        "串换药品",
        "drug_swap",
        "violation",
        "institution",
        "scanned product differs from billed drug, or no sale scan",
    ),
    Scenario(
        "trace_code_resale",
        "追溯码重复",
        "trace_code_resale",
        "violation",
        "trace_code",
        "a sale scan of a trace code already sold",
    ),
    Scenario(
        "impersonation",
        "冒名就医",
        "impersonation",
        "suspicious",
        "person",
        "failed, low-score, liveness-failed or missing face check",
    ),
    Scenario(
        "impossible_travel",
        "就医时空极限",
        "impossible_travel",
        "suspicious",
        "person",
        "implied speed between consecutive events of one person",
    ),
    Scenario(
        "hanging_bed",
        "挂床住院",
        "hanging_bed",
        "suspicious",
        "person",
        "no bedside checks for days, or settlements elsewhere during a stay",
    ),
    Scenario(
        "split_hospitalization",
        "分解住院",
        "split_hospitalization",
        "suspicious",
        "person",
        "readmission within 15 days, same institution, same diagnosis",
    ),
    Scenario(
        "licence_lending",
        "挂证",
        "licence_lending",
        "suspicious",
        "doctor",
        "prescriptions without a clock-in that day; clock-ins at two places",
    ),
    Scenario(
        "fence_breach",
        "电子围栏越界",
        "fence_breach",
        "suspicious",
        "institution",
        "face check from a device outside the institution's fence",
    ),
    Scenario(
        "pharmacy_basket_ring",
        "药店刷卡套现(同质购药)",
        "pharmacy_basket_ring",
        "suspicious",
        "institution",
        "many persons buying near-identical baskets at one pharmacy",
    ),
    Scenario(
        "pharmacy_hopping",
        "药店刷卡套现(轮换药店)",
        "pharmacy_hopping",
        "suspicious",
        "person",
        "one person buying the same drugs at several pharmacies",
    ),
    Scenario(
        "odd_hour_sales",
        "药店刷卡套现(异常时段)",
        "odd_hour_sales",
        "suspicious",
        "institution",
        "pharmacy sales in the small hours",
    ),
    Scenario(
        "maintenance_window",
        "系统维护时段交易",
        "maintenance_window",
        "violation",
        "institution",
        "settlements inside a configured maintenance window",
    ),
    Scenario(
        "card_burst",
        "同卡高频刷卡",
        "card_burst",
        "suspicious",
        "person",
        "a burst of settlements on one card within minutes",
    ),
    Scenario(
        "repeated_exam",
        "过度检查",
        "repeated_exam",
        "suspicious",
        "person",
        "the same examination repeated at short intervals",
    ),
    Scenario(
        "group_visit",
        "异常聚集就医",
        "group_visit",
        "suspicious",
        "group",
        "many persons with the same institution, time and basket",
    ),
    Scenario(
        "cost_growth",
        "费用异常增长",
        "cost_growth",
        "suspicious",
        "institution",
        "institution hourly series vs its own seasonal history",
    ),
    Scenario(
        "peer_deviation",
        "同行偏离",
        "peer_deviation",
        "suspicious",
        "institution",
        "institution metric vs peer mean: +20/50/100% = levels 1/2/3",
    ),
)

MODELS: tuple[Scenario, ...] = (
    Scenario(
        "settlement_anomaly",
        "结算异常评分",
        "settlement_anomaly",
        "suspicious",
        "person",
        "multivariate online anomaly score of a settlement and its person's recent history",
    ),
    Scenario(
        "doctor_profile",
        "医师画像",
        "doctor_profile",
        "suspicious",
        "doctor",
        "a doctor's daily profile vs doctors of the same institution type and level",
    ),
)
"""Online models (models/online) that no simulator scenario injects: detector ids, no labels."""

BY_ID: dict[str, Scenario] = {s.id: s for s in (*SCENARIOS, *MODELS)}
DETECTOR_IDS: frozenset[str] = frozenset(s.detector_id for s in (*SCENARIOS, *MODELS))
