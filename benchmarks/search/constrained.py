"""Constrained search on NB201: maximise accuracy subject to latency <= a threshold.

Scores: the share of infeasible proposals per window of evaluations (it should fall as the
search learns where the constraint bites), and the evaluations until a configuration in the top
1% of the *feasible* configurations (by mean accuracy) is evaluated; for reference, the same
searcher run without the constraint and its evaluations to the whole table's top 1%.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import baselines, runner
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


def evals_to_top(table: Table, keys: list[str]) -> float:
    """First evaluation of a configuration in the whole table's top 1% (inf: never)."""
    hits = [i + 1 for i, k in enumerate(keys) if table.is_top(table.means[k])]
    return float(hits[0]) if hits else math.inf


# Each searcher below takes ``limit=None`` for its unconstrained run on the same table.


def kubenas_constrained(
    table: Table, budget: int, evaluate: Evaluate, seed: int, cost: str, limit: float | None, algorithm: str
) -> list[str]:
    constraints = [] if limit is None else [{"metric": cost, "max": limit}]
    objective = {"metric": "acc", "goal": "maximize", "constraints": constraints}
    spec = runner.experiment_spec(table, algorithm, budget, 1, seed, objective)
    return runner.run_metrics_sequentially(table, spec, budget, evaluate)


def random_constrained(
    table: Table, budget: int, evaluate: Evaluate, seed: int, cost: str, limit: float | None
) -> list[str]:
    return runner.random_keys(table, budget, evaluate, seed)


def optuna_constrained(
    table: Table, budget: int, evaluate: Evaluate, seed: int, cost: str, limit: float | None
) -> list[str]:
    """Optuna TPE (multivariate) on the noisy accuracy with its native constraint handling: each
    trial's reported ``cost − limit`` (<= 0 feasible) goes to ``Trial.set_constraint``."""
    reported: dict[str, float] = {}

    def accuracy(key: str) -> float:
        metrics = evaluate(key)
        if limit is not None:
            reported[key] = metrics[cost] - limit
        return metrics["acc"]

    constraint = None if limit is None else reported.__getitem__
    return baselines.optuna_search(table, budget, accuracy, seed, "tpe", constraint=constraint)
