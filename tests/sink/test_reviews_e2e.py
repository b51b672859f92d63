"""Reviews through the real broker and chDB: the sink stores every review step, the
alert_outcomes view keeps the latest, the ranker learns from them (through its checkpoint, across
sink restarts, never twice) and alerts stored afterwards carry confirm_score in that order."""

from __future__ import annotations

import pytest

from models.ranker import PRIORS
from streams.review_cli import new_review, produce_review
from streams.sink.ranking import checkpoint_path
from streams.sink.service import Sink
from tests.kafka_helpers import drain, encoded, produce
from tests.records import T0, alert

pytestmark = pytest.mark.integration

ROLES = ("alerts", "reviews")
HOUR = 3_600_000


def _alerts(detector: str, n: int, start: int = 0) -> list[dict]:
    return [
        alert(alert_id=f"{detector[:4]}{i:028d}", detector_id=detector, kind="suspicious",
              entity_id=f"3601020000{i:010d}", event_time=T0 + i * HOUR)
        for i in range(start, start + n)
    ]  # fmt: skip


def _scores(store, ids: list[str]) -> dict[str, float | None]:
    rows = store.query_rows(
        f"SELECT alert_id, confirm_score FROM `{store.database}`.alerts FINAL "
        "WHERE alert_id IN {ids:Array(String)}",
        {"ids": ids},
    )
    return dict(rows)


def test_reviews_are_stored_and_teach_the_ranker(isolated_settings, store, tmp_path) -> None:
    settings = isolated_settings.model_copy(update={"data_dir": tmp_path})
    good, bad = _alerts("drug_swap_scan", 5), _alerts("night_pharmacy", 5)
    produce(settings, "alerts", encoded("Alert", good + bad, "entity_id"))
    first = Sink(settings, store, roles=ROLES)
    drain(first, settings, ROLES)
    before = _scores(store, [a["alert_id"] for a in good + bad])
    assert list(before.values()) == [pytest.approx(PRIORS["suspicious"])] * 10  # no feedback yet

    # drug_swap_scan alerts are confirmed, night_pharmacy ones rejected; the first
    # drug_swap_scan alert is rejected at first review and confirmed on appeal.
    t = T0 + 48 * HOUR
    reviews = [new_review(good[0]["alert_id"], "drug_swap_scan", "rejected", "a1", "", t)]
    reviews += [
        new_review(a["alert_id"], "drug_swap_scan", "confirmed", "a1", "核实", t + HOUR)
        for a in good
    ]
    reviews += [new_review(a["alert_id"], "night_pharmacy", "rejected", "a2", "", t) for a in bad]
    reviews.append(new_review("f" * 32, None, "confirmed", "a2", "unknown alert", t))
    for review in reviews:
        produce_review(settings, review)

    # A restarted sink: its feature cache is empty, so features come from the alerts table.
    second = Sink(settings, store, roles=ROLES)
    drain(second, settings, ROLES)
    db = store.database
    assert store.scalar(f"SELECT count() FROM `{db}`.reviews FINAL") == 12
    assert second.ranking.counts == {"learned": 11, "unlearned": 1}
    assert second.ranking.ranker.version == "f1.n11"
    assert checkpoint_path(settings).exists()
    outcomes = store.query_rows(
        f"SELECT alert_id, detector_id, outcome, first_outcome, reviews FROM `{db}`.alert_outcomes"
    )
    assert len(outcomes) == 11
    by_id = {row[0]: row[1:] for row in outcomes}
    assert by_id[good[0]["alert_id"]] == ("drug_swap_scan", "confirmed", "rejected", 2)
    assert by_id[bad[0]["alert_id"]] == ("night_pharmacy", "rejected", "rejected", 1)
    assert by_id["f" * 32] == (None, "confirmed", "confirmed", 1)

    # New alerts, stored by a third sink that starts from the checkpoint.
    new_good, new_bad = _alerts("drug_swap_scan", 1, 100), _alerts("night_pharmacy", 1, 100)
    produce(settings, "alerts", encoded("Alert", new_good + new_bad, "entity_id"))
    third = Sink(settings, store, roles=ROLES)
    assert third.ranking.ranker.version == "f1.n11"
    drain(third, settings, ROLES)
    after = _scores(store, [new_good[0]["alert_id"], new_bad[0]["alert_id"]])
    assert after[new_good[0]["alert_id"]] > PRIORS["suspicious"] > after[new_bad[0]["alert_id"]]
    kept = _scores(store, [good[1]["alert_id"]])  # a score is the one of its storage time
    assert kept[good[1]["alert_id"]] == pytest.approx(PRIORS["suspicious"])

    # Reviews re-read by another group (a replay) are stored once and not learnt again.
    replay = Sink(settings, store, roles=("reviews",), group_id=settings.consumer_group + "-re")
    drain(replay, settings, ("reviews",))
    assert replay.ranking.counts == {"relearn_skipped": 12}
    assert replay.ranking.ranker.version == "f1.n11"
    assert store.scalar(f"SELECT count() FROM `{db}`.reviews FINAL") == 12
