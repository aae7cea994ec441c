"""Constrained search on NB201: maximise accuracy subject to latency <= a threshold.

Scores: the share of infeasible proposals per window of evaluations (it should fall as the
search learns where the constraint bites), and the evaluations until a configuration in the top
1% of the *feasible* configurations (by mean accuracy) is evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import runner
from .tables import Table

Evaluate = Callable[[str], dict[str, float]]
WINDOWS = ((1, 25), (26, 50), (51, 100))


class FeasibleTop:
    def __init__(self, table: Table, cost: str, limit: float) -> None:
        self.table, self.cost, self.limit = table, cost, limit
        feasible = sorted((m for k, m in table.means.items() if table.extra[k][cost] <= limit), reverse=True)
        self.share_feasible = len(feasible) / len(table.means)
        self.top1 = feasible[max(0, len(feasible) // 100 - 1)]

    def feasible(self, key: str) -> bool:
        return self.table.extra[key][self.cost] <= self.limit

    def score(self, keys: list[str]) -> dict[str, float]:
        out = {}
        for lo, hi in WINDOWS:
            window = keys[lo - 1 : hi]
            out[f"infeasible {lo}-{hi}"] = (
                float(np.mean([not self.feasible(k) for k in window])) if window else math.nan
            )
        hits = [i + 1 for i, k in enumerate(keys) if self.feasible(k) and self.table.means[k] >= self.top1]
        out["evals"] = float(hits[0]) if hits else math.inf
        return out


def kubenas_constrained(
    table: Table, budget: int, evaluate: Evaluate, seed: int, cost: str, limit: float, algorithm: str
) -> list[str]:
    objective = {"metric": "acc", "goal": "maximize", "constraints": [{"metric": cost, "max": limit}]}
    spec = runner.experiment_spec(table, algorithm, budget, 1, seed, objective)
    return runner.run_metrics_sequentially(table, spec, budget, evaluate)


def random_constrained(table: Table, budget: int, evaluate: Evaluate, seed: int) -> list[str]:
    return runner.random_keys(table, budget, evaluate, seed)
