"""Rank alerts by the chance an analyst will confirm them, learnt online from review outcomes.

Plain Python, no I/O. An alert becomes a small dict of features (`alert_features`); a river
logistic regression learns `confirmed` / `rejected` outcomes one review at a time
(`Ranker.learn_one`), and `Ranker.predict_proba` gives the probability that a new alert will be
confirmed. Labels arrive late (days after the alert) and are few, so the prediction is shrunk
towards a prior: with n reviews learnt,

    p = (PRIOR_WEIGHT * prior(kind) + n * p_model) / (PRIOR_WEIGHT + n)

The prior follows the alert kind (docs/reviews.md): a definite violation (明确违规) is raised
automatically and is usually upheld (0.8); a suspicious pattern (可疑) is only a prompt for review,
and only part of what is flagged gets confirmed (Linyou: 61 of 126, both kinds), so 0.4.
Before any feedback every alert of a kind gets the same score. The model is deterministic: the same
feedback sequence gives the same scores.

`Ranker.to_bytes` / `Ranker.from_bytes` are the checkpoint (a versioned pickle envelope);
`FEATURES_VERSION` changes whenever the features do, and an old checkpoint is then refused.
"""

from __future__ import annotations

import math
import pickle
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
"""How many reviews the prior is worth: after that many the learnt model has half the say."""
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


def prior(kind: str) -> float:
    """The confirmation probability of an alert kind before any review."""
    return PRIORS.get(kind, DEFAULT_PRIOR)


class Ranker:
    """Online logistic regression over `alert_features`, shrunk towards a per-kind prior."""

    def __init__(self, learning_rate: float = 0.1, l2: float = 1e-4) -> None:
        self.features_version = FEATURES_VERSION
        self.n_learned = 0  # reviews learnt: also the model's version number
        self.n_confirmed = 0
        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2, intercept_lr=learning_rate
        )

    @property
    def version(self) -> str:
        """`f<features version>.n<reviews learnt>`: which model scored an alert."""
        return f"f{self.features_version}.n{self.n_learned}"

    def learn_one(self, features: Features, confirmed: bool) -> None:
        """Learn one review outcome of an alert with these features."""
        self.model.learn_one(features, bool(confirmed))
        self.n_learned += 1
        self.n_confirmed += bool(confirmed)

    def predict_proba(self, features: Features) -> float:
        """Probability that an alert with these features will be confirmed, in [0, 1]."""
        kind = next((k[5:] for k in features if k.startswith("kind=")), "")
        p0 = prior(kind)
        if self.n_learned == 0:
            return p0
        p_model = self.model.predict_proba_one(features)[True]
        n = self.n_learned
        return (PRIOR_WEIGHT * p0 + n * p_model) / (PRIOR_WEIGHT + n)

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
