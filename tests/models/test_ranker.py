"""The review-trained ranker: priors before feedback, learning from outcomes, determinism and
its checkpoint."""

from __future__ import annotations

import pickle

import pytest

from models.ranker import PRIORS, CheckpointError, Ranker, alert_features
from tests.records import alert

A = alert_features(alert(detector_id="duplicate_billing", kind="suspicious", severity=2))
B = alert_features(alert(detector_id="odd_hours_pharmacy", kind="suspicious", severity=2))
V = alert_features(alert(detector_id="trace_code_resale", kind="violation", severity=3))


def _feedback(ranker: Ranker, rounds: int = 30) -> Ranker:
    for _ in range(rounds):  # detector A is always confirmed, B always rejected
        ranker.learn_one(A, True)
        ranker.learn_one(B, False)
    return ranker


def test_before_feedback_the_score_is_the_kind_prior() -> None:
    ranker = Ranker()
    assert ranker.predict_proba(A) == ranker.predict_proba(B) == PRIORS["suspicious"]
    assert ranker.predict_proba(V) == PRIORS["violation"]
    assert ranker.version == "f1.n0"


def test_confirmed_detectors_rank_above_rejected_ones_after_feedback() -> None:
    ranker = _feedback(Ranker())
    assert ranker.predict_proba(A) > PRIORS["suspicious"] > ranker.predict_proba(B)
    assert ranker.predict_proba(A) - ranker.predict_proba(B) > 0.3
    assert ranker.n_learned == 60 and ranker.n_confirmed == 30
    assert ranker.version == "f1.n60"


def test_reviews_in_blocks_rank_the_same_way() -> None:
    ranker = Ranker()  # one rule's queue after the other: the last block must not win
    for _ in range(10):
        ranker.learn_one(A, True)
    for _ in range(10):
        ranker.learn_one(B, False)
    other = alert_features(alert(detector_id="unreviewed", kind="suspicious", severity=2))
    assert ranker.predict_proba(A) > ranker.predict_proba(other) > ranker.predict_proba(B)
    assert ranker.predict_proba(A) > 0.5
    assert ranker.detector_rate(A) == (10 + 5 * 0.4) / (10 + 5)


def test_the_same_feedback_gives_the_same_scores() -> None:
    one, two = _feedback(Ranker()), _feedback(Ranker())
    for features in (A, B, V):
        assert one.predict_proba(features) == two.predict_proba(features)


def test_features_are_one_hot_and_bounded() -> None:
    at_23h = 1_795_000_000_000 // 86_400_000 * 86_400_000 + 15 * 3_600_000  # 15:00 UTC
    night = alert_features(alert(event_time=at_23h))
    assert night["night"] == 1.0 and night["hour_cos"] > 0.9
    assert alert_features(alert(event_time=at_23h + 12 * 3_600_000))["night"] == 0.0
    assert night["detector=cross_institution_frequency"] == 1.0
    assert night["institution=H"] == 1.0
    assert alert_features(alert(institution_id=None))["institution=none"] == 1.0
    huge = alert_features(alert(score=float("inf"), amount_at_risk_fen=10**12))
    assert huge["log_score"] == 0.0 and huge["log_amount"] < 5


def test_checkpoint_round_trips() -> None:
    ranker = _feedback(Ranker(), rounds=7)
    restored, extra = Ranker.from_bytes(ranker.to_bytes({"offsets": {"reviews:0": 14}}))
    assert extra == {"offsets": {"reviews:0": 14}}
    assert restored.version == ranker.version
    for features in (A, B, V):
        assert restored.predict_proba(features) == ranker.predict_proba(features)
    restored.learn_one(A, True)  # keeps learning where it stopped
    ranker.learn_one(A, True)
    assert restored.predict_proba(A) == ranker.predict_proba(A)


def test_a_bad_checkpoint_is_refused() -> None:
    with pytest.raises(CheckpointError):
        Ranker.from_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="features"):
        Ranker.from_bytes(pickle.dumps({"format": 1, "features_version": 0, "ranker": None}))
