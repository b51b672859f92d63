"""The sink's ranker without a broker: scores alert rows, learns reviews from its feature cache
(the store only for alerts it no longer holds), checkpoints with offsets, never blocks storage."""

from __future__ import annotations

from typing import Any

from models.ranker import PRIORS
from streams.config import Settings
from streams.privacy import Pseudonymizer
from streams.sink.ranking import SinkRanking
from streams.sink.rows import HANDLERS, Lineage
from streams.store.tables import BY_NAME
from tests.records import alert, review

PSEUDO = Pseudonymizer(b"k")
COLUMNS = BY_NAME["alerts"].insert_columns


class _Store:
    """Answers the ranker's look-up from a dict of alert rows; counts the queries."""

    database = "fw"

    def __init__(self, alerts: list[dict[str, Any]] | None = None) -> None:
        self.alerts = {a["alert_id"]: a for a in alerts or []}
        self.queries = 0

    def query_rows(self, sql: str, parameters: dict[str, Any]) -> list[tuple]:
        self.queries += 1
        cols = sql.split("SELECT ", 1)[1].split(" FROM", 1)[0].split(", ")
        found = [self.alerts[i] for i in parameters["ids"] if i in self.alerts]
        return [tuple(a[c] for c in cols) for a in found]


def _ranking(tmp_path, store: _Store) -> SinkRanking:
    return SinkRanking(Settings(data_dir=tmp_path), store)  # type: ignore[arg-type]


def _store_alert(ranking: SinkRanking, record: dict[str, Any], offset: int) -> float:
    rows = HANDLERS["alerts"][1](record, Lineage(0, offset, 2, 0), PSEUDO)
    rows = ranking.on_record("alerts", record, rows, "alerts", 0, offset)
    return dict(zip(COLUMNS, rows[0][1], strict=True))["confirm_score"]


def _review(ranking: SinkRanking, record: dict[str, Any], offset: int) -> None:
    rows = HANDLERS["reviews"][1](record, Lineage(0, offset, 1, 0), PSEUDO)
    assert ranking.on_record("reviews", record, rows, "reviews", 0, offset) == rows


def test_alerts_are_scored_and_reviews_learnt_from_the_cache(tmp_path) -> None:
    store = _Store()
    ranking = _ranking(tmp_path, store)
    good = [alert(alert_id=f"g{i:031d}", detector_id="drug_swap_scan") for i in range(4)]
    bad = [alert(alert_id=f"b{i:031d}", detector_id="night_pharmacy") for i in range(4)]
    for i, a in enumerate(good + bad):
        assert _store_alert(ranking, a, i) == PRIORS["suspicious"]
    for i, a in enumerate(good):
        _review(ranking, review(review_id=f"rg{i}", alert_id=a["alert_id"]), 2 * i)
    for i, a in enumerate(bad):
        rejected = review(review_id=f"rb{i}", alert_id=a["alert_id"], outcome="rejected")
        _review(ranking, rejected, 2 * i + 1)
    ranking.after_store()
    assert store.queries == 0  # every reviewed alert was in the cache
    assert ranking.counts["learned"] == 8
    new_good = _store_alert(ranking, alert(alert_id="g" * 32, detector_id="drug_swap_scan"), 9)
    new_bad = _store_alert(ranking, alert(alert_id="b" * 32, detector_id="night_pharmacy"), 10)
    assert new_good > PRIORS["suspicious"] > new_bad

    # A restart loads the checkpoint; a re-read review is not learnt again; a review of an
    # alert the cache no longer holds is learnt from the store.
    old = alert(alert_id="o" * 32, detector_id="drug_swap_scan")
    restarted = _ranking(tmp_path, store := _Store([old]))
    assert restarted.ranker.version == "f1.n8"
    _review(restarted, review(review_id="again", alert_id=good[0]["alert_id"]), 0)
    _review(restarted, review(review_id="old", alert_id=old["alert_id"]), 8)
    _review(restarted, review(review_id="gone", alert_id="z" * 32), 9)
    restarted.after_store()
    assert restarted.counts == {"relearn_skipped": 1, "learned": 1, "unlearned": 1}
    assert store.queries == 1
    assert _ranking(tmp_path, store).ranker.version == "f1.n9"


def test_a_failing_ranker_stores_the_alert_without_a_score(tmp_path) -> None:
    ranking = _ranking(tmp_path, _Store())
    broken = alert(event_time="not a time")
    assert _store_alert(ranking, broken, 0) is None
    ranking.after_store()  # nothing queued: no checkpoint
    assert not (tmp_path / "models" / "ranker.pkl").exists()
