"""The online models of issue 4, one family per module: institution series, peers, doctor
profiles and a per-settlement anomaly score. Plain Python over plain-data state, like the rules.
"""

from __future__ import annotations

from models.online.institution_series import CostGrowth
from models.online.peers import PeerDeviation

MODEL_CLASSES = (CostGrowth, PeerDeviation)
"""Appended to `models.detectors.DETECTOR_CLASSES`: the worker and backtests run them too."""

__all__ = ["MODEL_CLASSES", "CostGrowth", "PeerDeviation"]
