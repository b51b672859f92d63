"""The sink's alert ranker: scores alerts as they are stored, learns from reviews once stored.

- An alert record gets `confirm_score` = `Ranker.predict_proba` of its features when the sink
  maps it to a row; its features are kept in a bounded LRU (the review usually comes days later).
- A review record is queued; after its batch is stored (`after_store`, before the offsets are
  committed) the reviewed alert's features are taken from the LRU, else read from the `alerts`
  table, and the ranker learns the outcome. Reviews of alerts found nowhere are stored but not
  learnt (counted as `unlearned`).
- The checkpoint (`<data_dir>/models/ranker.pkl`, written atomically, mode 0600) is saved
  after every batch that learnt something, before that batch's offsets are committed. It
  records the next offset learnt per reviews partition, so a batch re-read after a crash is
  not learnt twice, and a committed batch is never lost to the model.

Ranking never stops storage: any failure here is logged and the alert is stored without a score.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter, OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from models.ranker import CheckpointError, Ranker, alert_features
from streams.config import Settings
from streams.sink.rows import Rows
from streams.store.client import Store

log = logging.getLogger(__name__)

LRU_SIZE = 50_000  # recent alerts' feature columns (~300 bytes each)
_FEATURE_COLUMNS = (
    "alert_id", "detector_id", "kind", "severity", "score", "entity_type", "institution_id",
    "event_time", "amount_at_risk_fen",
)  # fmt: skip


def checkpoint_path(settings: Settings) -> Path:
    return settings.data_dir / "models" / "ranker.pkl"


class SinkRanking:
    """The ranker of one sink, with its feature cache and checkpoint."""

    def __init__(
        self, settings: Settings, store: Store, path: Path | None = None, lru_size: int = LRU_SIZE
    ) -> None:
        self.store = store
        self.path = path or checkpoint_path(settings)
        self.lru_size = lru_size
        self.counts: Counter[str] = Counter()  # scored, learned, unlearned, relearn_skipped
        self._recent: OrderedDict[str, tuple[Any, ...]] = OrderedDict()  # alert id -> columns
        self._queued: list[tuple[dict[str, Any], str, int, int]] = []
        self.ranker, self.offsets = self._load()

    # -- per record (sink thread) ------------------------------------------------------------
    def on_record(
        self, role: str, record: dict[str, Any], rows: Rows, topic: str, partition: int, offset: int
    ) -> Rows:
        """Rows of an alert get their confirm_score; a review is queued for `after_store`."""
        try:
            if role == "reviews":
                self._queued.append((record, topic, partition, offset))
                return rows
            self._remember(record)
            score = self.ranker.predict_proba(alert_features(record))
            self.counts["scored"] += 1
            return [(t, (*r[:-1], score) if t == "alerts" else r) for t, r in rows]
        except Exception:  # ranking must never stop storage
            log.exception("ranker failed on a %s record; stored without it", role)
            return rows

    def after_store(self) -> None:
        """Learn the queued reviews (their batch is stored), then checkpoint if anything was."""
        queued, self._queued = self._queued, []
        if not queued:
            return
        try:
            learned = self._learn(queued)
        except Exception:
            log.exception("ranker could not learn %d reviews; they stay stored", len(queued))
            return
        if learned:
            self.save()

    # -- learning ------------------------------------------------------------------------------
    def _learn(self, queued: list[tuple[dict[str, Any], str, int, int]]) -> int:
        fresh = []
        for record, topic, partition, offset in queued:
            if offset < self.offsets.get(f"{topic}:{partition}", 0):
                self.counts["relearn_skipped"] += 1  # already in the checkpointed model
            else:
                fresh.append((record, topic, partition, offset))
        missing = {r["alert_id"] for r, *_ in fresh if r["alert_id"] not in self._recent}
        found = self._lookup(missing) if missing else {}
        learned = 0
        for record, topic, partition, offset in fresh:
            columns = self._recent.get(record["alert_id"]) or found.get(record["alert_id"])
            if columns is None:
                self.counts["unlearned"] += 1
                log.warning("review of unknown alert %s stored, not learnt", record["alert_id"])
            else:
                features = alert_features(dict(zip(_FEATURE_COLUMNS, columns, strict=True)))
                self.ranker.learn_one(features, record["outcome"] == "confirmed")
                self.counts["learned"] += 1
                learned += 1
            self.offsets[f"{topic}:{partition}"] = offset + 1
        return learned

    def _lookup(self, alert_ids: Iterable[str]) -> dict[str, tuple[Any, ...]]:
        """Feature columns of alerts no longer (or never) in the LRU, from the alerts table."""
        rows = self.store.query_rows(
            f"SELECT {', '.join(_FEATURE_COLUMNS)} FROM `{self.store.database}`.alerts "
            "WHERE alert_id IN {ids:Array(String)} LIMIT 1 BY alert_id",
            {"ids": sorted(alert_ids)},
        )
        return {row[0]: tuple(row) for row in rows}

    def _remember(self, record: dict[str, Any]) -> None:
        alert_id = record["alert_id"]
        self._recent[alert_id] = tuple(
            sys.intern(v) if isinstance(v, str) and c != "alert_id" else v
            for c, v in ((c, record.get(c)) for c in _FEATURE_COLUMNS)
        )
        self._recent.move_to_end(alert_id)
        if len(self._recent) > self.lru_size:
            self._recent.popitem(last=False)

    # -- checkpoint ----------------------------------------------------------------------------
    def _load(self) -> tuple[Ranker, dict[str, int]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Ranker(), {}
        try:
            ranker, extra = Ranker.from_bytes(data)
        except CheckpointError as exc:
            log.warning(
                "ranker checkpoint %s not used (%s): starting from the priors", self.path, exc
            )
            return Ranker(), {}
        log.info("ranker %s loaded from %s", ranker.version, self.path)
        return ranker, dict(extra.get("offsets", {}))

    def save(self) -> None:
        """Write the checkpoint atomically (a crash leaves the old one or the new one)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.ranker.to_bytes({"offsets": self.offsets}))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError:
            log.exception("could not write the ranker checkpoint %s", self.path)
            return
        log.info("ranker %s checkpointed to %s", self.ranker.version, self.path)
