"""Half-space trees (Tan, Ting & Liu 2011) over plain data: river's `HalfSpaceTrees`, restated.

The trees' structure (split feature and split value of every node) is drawn from a seed, so it
is rebuilt identically in every process and never stored; the learned part is two mass
counters per node (`r`: the reference window, `l`: the window being filled) and a counter, all
lists of ints that JSON round-trips. Scoring and learning follow `river.anomaly.HalfSpaceTrees`
(version 0.26): walk each tree from the root, adding `reference mass x 2^depth` per node, and
stop after a node whose mass is under `size_limit x window_size`; the score is
`1 - total / max`, so 1 is anomalous (0 before the first window is full, as river). Features
must lie in [0, 1] (callers clip and scale); trees are drawn as river draws them (feature
weighted by its range, split in the middle 70 %), from Python's `random.Random(seed)`.

`learn` counts `x` **in place** (the model's lists are mutated and the same model returned):
the runner writes back every state a detector returns and the worker's tables hold them
serialized, so no copy is needed (`models/online/common.py`). `score_learn` does both in one
walk of each tree, the settlement model's per-event call.

>>> trees = Forest(n_features=2, n_trees=5, height=4, window_size=50, seed=1)
>>> model = trees.new_state()
>>> for i in range(200):
...     model = trees.learn(model, [0.5 + (i % 10) / 100, 0.5])
>>> trees.score(model, [0.52, 0.5]) < trees.score(model, [0.05, 0.95])
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

Model = dict[str, Any]


class Forest:
    """The fixed structure of `n_trees` complete trees of `height`, drawn from `seed`."""

    def __init__(
        self,
        n_features: int,
        n_trees: int = 10,
        height: int = 6,
        window_size: int = 250,
        size_limit: float = 0.1,
        seed: int = 42,
    ) -> None:
        self.n_features = n_features
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.limit = size_limit * window_size
        self.internal = 2**height - 1
        self.nodes = 2 ** (height + 1) - 1
        rng = random.Random(seed)
        self.split_feature: list[list[int]] = []
        self.split_value: list[list[float]] = []
        for _ in range(n_trees):
            feats, values = [0] * self.internal, [0.0] * self.internal
            lo = [[0.0] * n_features for _ in range(self.nodes)]
            hi = [[1.0] * n_features for _ in range(self.nodes)]
            for node in range(self.internal):  # as river: feature by width, 15 % padding
                widths = [hi[node][i] - lo[node][i] for i in range(n_features)]
                f = rng.choices(range(n_features), weights=widths)[0]
                a, b = lo[node][f], hi[node][f]
                v = rng.uniform(a + 0.15 * (b - a), b - 0.15 * (b - a))
                feats[node], values[node] = f, v
                left, right = 2 * node + 1, 2 * node + 2
                lo[left], hi[left] = list(lo[node]), list(hi[node])
                lo[right], hi[right] = list(lo[node]), list(hi[node])
                hi[left][f] = v
                lo[right][f] = v
            self.split_feature.append(feats)
            self.split_value.append(values)
        self.max_score = float(n_trees * window_size * (2 ** (height + 1) - 1))

    def new_state(self) -> Model:
        """An empty model: no reference window yet (every score is 0.0 until one is full)."""
        zeros = [0] * self.nodes
        return {
            "r": [list(zeros) for _ in range(self.n_trees)],
            "l": [list(zeros) for _ in range(self.n_trees)],
            "n": 0,
            "w": 0,
        }

    def score(self, model: Model, x: Sequence[float]) -> float:
        """Anomaly score in [0, 1] (1: nothing of the reference window lies near `x`)."""
        if model["w"] == 0:
            return 0.0
        # masses and depth weights are ints, so the total is exact whatever the order
        total = 0
        limit, internal = self.limit, self.internal
        for r, feats, values in zip(model["r"], self.split_feature, self.split_value, strict=True):
            node = depth = 0
            while True:
                mass = r[node]
                total += mass << depth
                if mass < limit or node >= internal:
                    break
                node = 2 * node + 2 - (x[feats[node]] < values[node])
                depth += 1
        return 1.0 - total / self.max_score

    def learn(self, model: Model, x: Sequence[float]) -> Model:
        """Count `x` in `model`, in place; returns `model`."""
        internal = self.internal
        for counts, feats, values in zip(
            model["l"], self.split_feature, self.split_value, strict=True
        ):
            node = 0
            counts[0] += 1
            while node < internal:
                node = 2 * node + 2 - (x[feats[node]] < values[node])
                counts[node] += 1
        self._rotate(model)
        return model

    def score_learn(self, model: Model, x: Sequence[float]) -> float:
        """`score(model, x)`, then `learn(model, x)`: one walk of each tree for both."""
        if model["w"] == 0:
            self.learn(model, x)
            return 0.0
        total = 0
        limit, internal = self.limit, self.internal
        for r, counts, feats, values in zip(
            model["r"], model["l"], self.split_feature, self.split_value, strict=True
        ):
            node = depth = 0
            counts[0] += 1
            mass = r[0]
            total += mass
            scoring = mass >= limit
            while node < internal:
                node = 2 * node + 2 - (x[feats[node]] < values[node])
                counts[node] += 1
                if scoring:
                    depth += 1
                    mass = r[node]
                    total += mass << depth
                    scoring = mass >= limit
        self._rotate(model)
        return 1.0 - total / self.max_score

    def _rotate(self, model: Model) -> None:
        """One more learnt; a filled window becomes the reference, a fresh one is opened."""
        n = model["n"] + 1
        if n >= self.window_size:
            model["r"] = model["l"]
            model["l"] = [[0] * self.nodes for _ in range(self.n_trees)]
            model["n"] = 0
            model["w"] += 1
        else:
            model["n"] = n
