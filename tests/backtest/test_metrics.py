"""The backtest's figures on crafted alerts: precision, recall, F1, precision at k, reviews
overriding labels, gained and lost alert ids, the default run id."""

from __future__ import annotations

import pytest

from streams.backtest.metrics import compare, figures, rank_key, totals
from streams.backtest.run import default_run_id, finding_key
from streams.backtest.sources import parse_time


def alert(aid: str, det: str = "card_burst", score: float = 1.0, amount: int = 100,
          evidence: tuple[str, ...] = ("e0",)) -> dict:  # fmt: skip
    return {"alert_id": aid, "detector_id": det, "score": score, "amount_at_risk_fen": amount,
            "evidence_event_ids": list(evidence), "event_time": 0, "entity_type": "person",
            "entity_id": "p_1"}  # fmt: skip


def label(det: str, *events: str) -> dict:
    return {"expected_detector": det, "event_ids": list(events)}


LABELS = [label("card_burst", "e1"), label("card_burst", "e2"), label("card_burst", "e9")]


def test_precision_recall_f1_from_labels() -> None:
    alerts = [
        alert("a", evidence=("e1",)),
        alert("b", evidence=("x", "e2")),
        alert("c", evidence=("e5",)),
        alert("d", evidence=("e1", "e7")),  # a second alert of one label: precise, no recall
    ]
    f = figures(alerts, LABELS, {})["card_burst"]
    assert (f.alerts, f.judged, f.true_positives) == (4, 4, 3)
    assert (f.labels, f.labels_found) == (3, 2)
    assert f.precision == pytest.approx(0.75)
    assert f.recall == pytest.approx(2 / 3)
    assert f.f1 == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))


def test_precision_at_k_ranks_by_score_then_amount() -> None:
    alerts = [
        alert("low", score=0.1, evidence=("e1",)),
        alert("top", score=0.9, amount=1, evidence=("e5",)),  # false, highest score
        alert("rich", score=0.5, amount=900, evidence=("e2",)),
        alert("poor", score=0.5, amount=10, evidence=("e6",)),
    ]
    assert [a["alert_id"] for a in sorted(alerts, key=rank_key)] == ["top", "rich", "poor", "low"]
    f = figures(alerts, LABELS, {}, k=2)["card_burst"]
    assert (f.k, f.precision_at_k) == (2, 0.5)
    f = figures(alerts, LABELS, {}, k=3)["card_burst"]
    assert f.precision_at_k == pytest.approx(1 / 3)


def test_reviews_override_labels_and_judge_without_labels() -> None:
    alerts = [alert("a", evidence=("e1",)), alert("b", evidence=("e5",)), alert("c")]
    reviews = {"a": "rejected", "b": "confirmed"}
    f = figures(alerts, LABELS, reviews)["card_burst"]
    assert (f.judged, f.true_positives) == (3, 1)  # a: rejected, b: confirmed, c: no label
    f = figures(alerts, [], reviews)["card_burst"]
    assert (f.judged, f.true_positives, f.precision) == (2, 1, 0.5)  # c is unjudged
    assert f.recall is None and f.f1 is None
    f = figures(alerts, [], {})["card_burst"]
    assert (f.judged, f.precision, f.precision_at_k, f.k) == (0, None, None, 0)


def test_gained_and_lost_by_alert_id_per_detector() -> None:
    base = [alert("a"), alert("b"), alert("c"), alert("x", det="drug_swap")]
    cand = [alert("a"), alert("d"), alert("x", det="drug_swap")]
    rows = {r.detector_id: r for r in compare(cand, base, LABELS)}
    assert (rows["card_burst"].gained, rows["card_burst"].lost) == (1, 2)
    assert (rows["drug_swap"].gained, rows["drug_swap"].lost) == (0, 0)
    assert rows["card_burst"].baseline is not None
    assert (rows["card_burst"].candidate.alerts, rows["card_burst"].baseline.alerts) == (2, 3)
    t = totals(list(rows.values()))
    assert (t["gained"], t["lost"], t["candidate_alerts"], t["baseline_alerts"]) == (1, 2, 3, 4)


def test_a_finding_raised_at_a_later_event_is_retriggered_not_new() -> None:
    base = [alert("a", evidence=("e1", "e2")), alert("b", evidence=("e7",))]
    cand = [alert("a2", evidence=("e1", "e2", "e3")), alert("n", evidence=("e9",))]
    (r,) = compare(cand, base, [])
    assert (r.gained, r.lost, r.retriggered) == (2, 2, 1)


def test_a_detector_that_lost_every_alert_keeps_its_labels() -> None:
    rows = compare([], [alert("a", evidence=("e1",))], LABELS)
    (r,) = rows
    assert (r.candidate.alerts, r.candidate.labels, r.candidate.recall) == (0, 3, 0.0)
    assert r.baseline is not None and r.baseline.labels_found == 1
    assert (r.gained, r.lost) == (0, 1)


def test_without_baseline_there_is_no_gain_or_loss() -> None:
    (r,) = compare([alert("a")], None, [])
    assert r.baseline is None and (r.gained, r.lost) == (0, 0)


def test_run_id_is_a_function_of_the_inputs() -> None:
    a = default_run_id("candidate@1", "default@1", "kafka", 1, 2)
    assert a == default_run_id("candidate@1", "default@1", "kafka", 1, 2)
    assert a.startswith("bt-") and len(a) == 19
    assert a != default_run_id("candidate@1", "default@1", "clickhouse", 1, 2)
    assert a != default_run_id("candidate@2", "default@1", "kafka", 1, 2)


def test_times_are_local_shanghai() -> None:
    assert parse_time("2026-11-02") == parse_time("2026-11-02T00:00:00+08:00")
    assert parse_time("2026-11-02T08:00") == parse_time("2026-11-02T00:00:00Z")
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_finding_key_ignores_the_alert_id() -> None:
    a, b = alert("a", evidence=("e1", "e2")), alert("b", evidence=("e1", "e2"))
    assert finding_key(a) == finding_key(b) == ("card_burst", "person", "p_1", "e2")
