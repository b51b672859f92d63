"""Half-space trees: the compiled walk (models.online.hst) against a plain restatement."""

from __future__ import annotations

import random
from typing import Any

from models.online.hst import Forest


def reference_learn(forest: Forest, model: dict[str, Any], x: list[float]) -> dict[str, Any]:
    """The original copy-on-write learn: walk each tree's nodes in a loop."""
    latest = []
    for tree in range(forest.n_trees):
        counts = list(model["l"][tree])
        node = 0
        counts[0] += 1
        while node < forest.internal:
            f, v = forest.split_feature[tree][node], forest.split_value[tree][node]
            node = 2 * node + 1 if x[f] < v else 2 * node + 2
            counts[node] += 1
        latest.append(counts)
    n = model["n"] + 1
    if n >= forest.window_size:
        zeros = [0] * forest.nodes
        return {"r": latest, "l": [list(zeros) for _ in latest], "n": 0, "w": model["w"] + 1}
    return {"r": model["r"], "l": latest, "n": n, "w": model["w"]}


def reference_score(forest: Forest, model: dict[str, Any], x: list[float]) -> float:
    if model["w"] == 0:
        return 0.0
    total = 0.0
    for tree in range(forest.n_trees):
        r, node, depth = model["r"][tree], 0, 0
        while True:
            mass = r[node]
            total += mass * 2**depth
            if mass < forest.limit or node >= forest.internal:
                break
            f, v = forest.split_feature[tree][node], forest.split_value[tree][node]
            node = 2 * node + 1 if x[f] < v else 2 * node + 2
            depth += 1
    return 1.0 - total / forest.max_score


def test_score_learn_in_place_equals_the_plain_walk() -> None:
    rng = random.Random(5)
    for n_trees, height, window, seed in ((10, 6, 32, 42), (3, 2, 8, 7), (5, 4, 50, 1)):
        forest = Forest(11, n_trees, height, window, seed=seed)
        fast, slow = forest.new_state(), forest.new_state()
        for i in range(300):
            x = [rng.random() ** (1 + i % 3) for _ in range(11)]
            if i % 17 == 0:
                x[rng.randrange(11)] = forest.split_value[0][0]  # exactly on a split
            expected = reference_score(forest, slow, x)
            assert forest.score(fast, x) == expected
            assert forest.score_learn(fast, x) == expected
            slow = reference_learn(forest, slow, x)
            assert fast == slow
        assert fast["w"] > 0
        assert forest.learn(fast, x) is fast
