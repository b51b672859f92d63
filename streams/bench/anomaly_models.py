"""Compare online anomaly models on the simulator's labelled world (settlement_anomaly's choice).

Every settlement of a simulated world, in event-time order, gets the features of
`models.online.settlement_score` (with its person's earlier settlements), is scored by each
model *before* the model learns it (progressive validation), and the scores after a warm-up are
compared with the simulator's labels: a settlement is positive when a label lists it.

    python -m streams.bench.anomaly_models --preset tiny --days 28 --seed 7

Prints per model: ROC AUC over all labelled settlements, precision and recall in the top 1 %,
the time per settlement, and the AUC per scenario (scenarios with at least 5 settlements).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from models.online.hst import Forest
from models.online.settlement_score import N_FEATURES, person_features, settlement_features
from models.window import DAY_MS
from streams.simulator import SimConfig, Simulation
from streams.simulator.config import parse_start

Scorer = tuple[Callable[[list[float]], float], Callable[[list[float]], None]]


def world(preset: str, days: int, seed: int) -> tuple[list[list[float]], list[str | None]]:
    """Features and label (scenario or None) of every settlement, in event-time order."""
    sim = Simulation(
        SimConfig(preset=preset, seed=seed, start_ms=parse_start("2026-11-02"), days=days)
    )
    settlements, scenario_of = [], {}
    for rec in sim.records():
        if rec.topic == "settlement" and rec.record["reversal_of"] is None:
            settlements.append(rec.record)
        elif rec.topic == "sim_labels":
            for eid in rec.record["event_ids"]:
                scenario_of.setdefault(eid, rec.record["scenario"])
    settlements.sort(key=lambda e: e["event_time"])
    history: dict[str, list[list[Any]]] = defaultdict(list)
    xs, ys = [], []
    for e in settlements:
        t = e["event_time"]
        past = [w for w in history[e["person_id"]] if w[0] >= t - 30 * DAY_MS]
        xs.append(settlement_features(e) + person_features(past, t))
        ys.append(scenario_of.get(e["event_id"]))
        past.append([t, e["total_fen"], e["institution_id"], e["event_id"]])
        history[e["person_id"]] = past[-64:]
    return xs, ys


def auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    if not pos or not neg:
        return math.nan
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + j + 1) / 2
        rank_sum += mid * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def models(seed: int) -> Iterator[tuple[str, Scorer]]:
    """(name, (score, learn)) of each candidate."""
    from river import anomaly, preprocessing

    forest = Forest(N_FEATURES, 10, 6, 128, seed=seed)
    box = {"m": forest.new_state()}

    def fw_learn(x: list[float]) -> None:
        box["m"] = forest.learn(box["m"], x)

    yield "fundwatch hst (plain data)", (lambda x: forest.score(box["m"], x), fw_learn)

    def river_model(m: Any) -> Scorer:
        def as_dict(x: list[float]) -> dict[int, float]:
            return dict(enumerate(x))

        return (lambda x: m.score_one(as_dict(x)), lambda x: m.learn_one(as_dict(x)))

    yield (
        "river HalfSpaceTrees",
        river_model(anomaly.HalfSpaceTrees(n_trees=10, height=6, window_size=128, seed=seed)),
    )
    yield (
        "river OneClassSVM",
        river_model(preprocessing.StandardScaler() | anomaly.OneClassSVM(nu=0.2)),
    )
    yield "river LocalOutlierFactor", river_model(anomaly.LocalOutlierFactor(n_neighbors=20))
    gauss = anomaly.GaussianScorer(grace_period=50)
    yield (
        "river GaussianScorer (amount)",
        (lambda x: gauss.score_one(None, x[0]), lambda x: gauss.learn_one(None, x[0])),
    )


def evaluate(xs: list[list[float]], ys: list[str | None], warmup: int, seed: int) -> None:
    n = len(xs) - warmup
    print(f"{len(xs)} settlements, {sum(1 for y in ys[warmup:] if y)} labelled after warm-up")
    scenarios = sorted({y for y in ys[warmup:] if y})
    for name, (score, learn) in models(seed):
        started = time.perf_counter()
        scores = []
        for x in xs:
            scores.append(score(x))
            learn(x)
        per = (time.perf_counter() - started) / len(xs) * 1e6
        s, y = scores[warmup:], ys[warmup:]
        neg = [v for v, lab in zip(s, y, strict=True) if lab is None]
        top = sorted(range(n), key=lambda i: -s[i])[: max(1, n // 100)]
        hits = sum(1 for i in top if y[i])
        positives = sum(1 for lab in y if lab)
        print(
            f"\n{name}: AUC {auc([v for v, lab in zip(s, y, strict=True) if lab], neg):.3f}, "
            f"top 1 %: precision {hits / len(top):.2f} recall {hits / max(1, positives):.2f}, "
            f"{per:.0f} µs/settlement"
        )
        for sc in scenarios:
            pos = [v for v, lab in zip(s, y, strict=True) if lab == sc]
            if len(pos) >= 5:
                print(f"    {sc:28s} n={len(pos):4d} AUC {auc(pos, neg):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=256)
    args = parser.parse_args()
    xs, ys = world(args.preset, args.days, args.seed)
    evaluate(xs, ys, args.warmup, args.seed)


if __name__ == "__main__":
    main()
