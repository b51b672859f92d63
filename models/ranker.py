"""Rank alerts by the chance an analyst will confirm them, learnt online from review outcomes.

Plain Python, no I/O. An alert becomes a small dict of features (`alert_features`); reviews are
learnt one at a time (`Ranker.learn_one`) and `Ranker.predict_proba` gives the probability that
a new alert will be confirmed. Two parts, added in logit space:

- the detector's confirmed rate, smoothed towards a prior: (confirmed + W * prior(kind)) /
  (reviews + W) with W = PRIOR_WEIGHT pseudo-reviews. Which rule raised an alert is the
  strongest signal of whether it holds up, and counts do not depend on the order reviews arrive
  in (analysts often work through one rule's queue at a time, which would make a plain online
  model forget the other rules);
- a river logistic regression over the other features (kind, severity, score, money at risk,
  institution type, hour of day...) with the detector's logit as offset: what makes an alert
  more or less likely to hold up than its rule's rate.

The prior follows the alert kind (docs/reviews.md): a definite violation (明确违规) is raised
automatically and is usually upheld (0.8); a suspicious pattern (可疑) is only a prompt for review,
and only part of what is flagged gets confirmed (Linyou: 61 of 126, both kinds), so 0.4.
Before any feedback every alert of a kind gets exactly its prior. The model is deterministic:
the same feedback sequence gives the same scores.

`Ranker.to_bytes` / `Ranker.from_bytes` are the checkpoint (a versioned pickle envelope);
`FEATURES_VERSION` changes whenever the features do, and an old checkpoint is then refused.
"""

from __future__ import annotations

import math
import pickle
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from river import linear_model, optim

FEATURES_VERSION = 1
"""Bumped when `alert_features` changes: weights learnt on other features are meaningless."""
CHECKPOINT_FORMAT = 1
PRIORS: dict[str, float] = {"violation": 0.8, "suspicious": 0.4}
DEFAULT_PRIOR = 0.5
PRIOR_WEIGHT = 5.0
"""How many reviews the prior is worth: after that many a detector's own rate has half the say."""
CST_OFFSET_MS = 8 * 3600 * 1000  # Asia/Shanghai, no daylight saving

Features = dict[str, float]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, another format or feature version)."""


def _ms(value: Any) -> int:
    """Epoch milliseconds from an int (Avro records) or a datetime (store rows)."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def alert_features(alert: Mapping[str, Any]) -> Features:
    """The features of an alert record (Avro `Alert` fields, or an `alerts` row).

    detector id, kind and entity type one-hot; severity centred; the detector's score and the
    money at risk on log scales; the institution type from its code prefix (H hospital,
    P pharmacy); the local hour of the triggering event (sin/cos) and a night flag
    (22:00-06:00, when pharmacy cash-outs and maintenance-window swipes happen).
    """
    hour = ((_ms(alert["event_time"]) + CST_OFFSET_MS) // 3_600_000) % 24
    institution = alert.get("institution_id") or ""
    prefix = institution[:1] if institution[:1] in ("H", "P") else "none"
    score = float(alert.get("score") or 0.0)
    amount_yuan = max(int(alert.get("amount_at_risk_fen") or 0), 0) / 100
    return {
        f"detector={alert['detector_id']}": 1.0,
        f"kind={alert['kind']}": 1.0,
        f"entity={alert.get('entity_type') or 'none'}": 1.0,
        f"institution={prefix}": 1.0,
        "severity": float(int(alert.get("severity") or 2) - 2),
        "log_score": math.log1p(max(score, 0.0)) if math.isfinite(score) else 0.0,
        "log_amount": math.log10(1.0 + amount_yuan) / 3.0,
        "hour_sin": math.sin(2 * math.pi * hour / 24),
        "hour_cos": math.cos(2 * math.pi * hour / 24),
        "night": 1.0 if hour >= 22 or hour < 6 else 0.0,
    }


def _detector(features: Features) -> str:
    return next((k for k in features if k.startswith("detector=")), "detector=")


def _rest(features: Features) -> Features:
    """The regression's inputs: all but the detector (its rate is the offset)."""
    return {k: v for k, v in features.items() if not k.startswith("detector=")}


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def prior(kind: str) -> float:
    """The confirmation probability of an alert kind before any review."""
    return PRIORS.get(kind, DEFAULT_PRIOR)


class Ranker:
    """Per-detector smoothed confirmed rates plus an online logistic regression on the rest."""

    def __init__(self, learning_rate: float = 0.05, l2: float = 1e-4) -> None:
        self.features_version = FEATURES_VERSION
        self.n_learned = 0  # reviews learnt: also the model's version number
        self.reviews: Counter[str] = Counter()  # per detector
        self.confirmed: Counter[str] = Counter()
        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2, intercept_lr=learning_rate
        )

    @property
    def version(self) -> str:
        """`f<features version>.n<reviews learnt>`: which model scored an alert."""
        return f"f{self.features_version}.n{self.n_learned}"

    @property
    def n_confirmed(self) -> int:
        return sum(self.confirmed.values())

    def detector_rate(self, features: Features) -> float:
        """The smoothed confirmed rate of the alert's detector (its kind's prior at first)."""
        detector = _detector(features)
        p0 = prior(next((k[5:] for k in features if k.startswith("kind=")), ""))
        return (self.confirmed[detector] + PRIOR_WEIGHT * p0) / (
            self.reviews[detector] + PRIOR_WEIGHT
        )

    def learn_one(self, features: Features, confirmed: bool) -> None:
        """Learn one review outcome of an alert with these features."""
        offset = _logit(self.detector_rate(features))
        self._with_offset(offset, lambda: self.model.learn_one(_rest(features), bool(confirmed)))
        detector = _detector(features)
        self.reviews[detector] += 1
        self.confirmed[detector] += bool(confirmed)
        self.n_learned += 1

    def predict_proba(self, features: Features) -> float:
        """Probability that an alert with these features will be confirmed, in [0, 1]."""
        rate = self.detector_rate(features)
        if self.n_learned == 0:
            return rate
        x = _rest(features)
        proba = self._with_offset(_logit(rate), lambda: self.model.predict_proba_one(x))
        return proba[True]

    def _with_offset(self, offset: float, fn: Any) -> Any:
        """Run fn with the regression's intercept shifted by offset (river has no offsets)."""
        self.model.intercept += offset
        try:
            return fn()
        finally:
            self.model.intercept -= offset

    # -- checkpoint --------------------------------------------------------------------------
    def to_bytes(self, extra: Mapping[str, Any] | None = None) -> bytes:
        """A checkpoint: format, feature version, this ranker and caller data (e.g. offsets)."""
        envelope = {
            "format": CHECKPOINT_FORMAT,
            "features_version": self.features_version,
            "version": self.version,
            "ranker": self,
            "extra": dict(extra or {}),
        }
        return pickle.dumps(envelope, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[Ranker, dict[str, Any]]:
        """Load a checkpoint written by `to_bytes` (only from a trusted file: it is a pickle)."""
        try:
            envelope = pickle.loads(data)
        except Exception as exc:  # unpickling fails in many ways
            raise CheckpointError(f"unreadable ranker checkpoint: {exc!r}") from exc
        if not isinstance(envelope, dict) or envelope.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("not a ranker checkpoint of format 1")
        if envelope.get("features_version") != FEATURES_VERSION:
            raise CheckpointError(
                f"checkpoint has features v{envelope.get('features_version')}, "
                f"this code v{FEATURES_VERSION}"
            )
        ranker = envelope["ranker"]
        if not isinstance(ranker, cls):
            raise CheckpointError("checkpoint does not hold a Ranker")
        return ranker, envelope.get("extra", {})
