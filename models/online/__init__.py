"""The online models of issue 4, one family per module: institution series, peers, doctor
profiles and a per-settlement anomaly score. Plain Python over plain-data state, like the rules.
"""

from __future__ import annotations

from models.online.doctor_profile import DoctorProfile
from models.online.institution_series import CostGrowth
from models.online.peers import PeerDeviation
from models.online.settlement_score import SettlementAnomaly

MODEL_CLASSES = (CostGrowth, PeerDeviation, SettlementAnomaly, DoctorProfile)
"""Appended to `models.detectors.DETECTOR_CLASSES`: the worker and backtests run them too."""

__all__ = ["MODEL_CLASSES", "CostGrowth", "DoctorProfile", "PeerDeviation", "SettlementAnomaly"]
