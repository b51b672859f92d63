"""The rule detectors, one module per family (what they look at), one class per catalogue id.

The online models (`cost_growth`, `peer_deviation`, ...) live in `models/online/` and are
appended to `DETECTOR_CLASSES`, so configurations, the worker and backtests run them too.
"""

from __future__ import annotations

from models.detectors.billing import (
    DuplicateBilling,
    MaintenanceWindow,
    OddHourSales,
    SplitCharging,
)
from models.detectors.drugs import DrugSwap, TraceCodeResale
from models.detectors.frequency import CardBurst, CrossInstitutionFrequency
from models.detectors.groups import GroupVisit, PharmacyBasketRing
from models.detectors.identity import FenceBreach, Impersonation, ImpossibleTravel
from models.detectors.inpatient import HangingBed, SplitHospitalization
from models.detectors.licence import LicenceLending
from models.detectors.supply import DrugOverSupply, PharmacyHopping, RepeatedExam
from models.online import MODEL_CLASSES

DETECTOR_CLASSES = (
    CrossInstitutionFrequency,
    DrugOverSupply,
    DuplicateBilling,
    SplitCharging,
    DrugSwap,
    TraceCodeResale,
    Impersonation,
    ImpossibleTravel,
    HangingBed,
    SplitHospitalization,
    LicenceLending,
    FenceBreach,
    PharmacyBasketRing,
    PharmacyHopping,
    OddHourSales,
    MaintenanceWindow,
    CardBurst,
    RepeatedExam,
    GroupVisit,
    *MODEL_CLASSES,
)
"""In the order of models/catalogue.py, then the online models."""

__all__ = [
    "DETECTOR_CLASSES",
    "CardBurst",
    "CrossInstitutionFrequency",
    "DrugOverSupply",
    "DrugSwap",
    "DuplicateBilling",
    "FenceBreach",
    "GroupVisit",
    "HangingBed",
    "Impersonation",
    "ImpossibleTravel",
    "LicenceLending",
    "MaintenanceWindow",
    "OddHourSales",
    "PharmacyBasketRing",
    "PharmacyHopping",
    "RepeatedExam",
    "SplitCharging",
    "SplitHospitalization",
    "TraceCodeResale",
]
