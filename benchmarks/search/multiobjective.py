"""Pareto search on NB201: accuracy (noisy, maximise) vs latency (minimise).

Score: the hypervolume of the evaluated architectures' true-mean (accuracy, latency) points,
divided by the hypervolume of the table's true Pareto front; reference point = (lowest mean
accuracy, highest latency) of the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import baselines, runner
from .tables import Table

Evaluate = Callable[[str], dict[str, float]]


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """2-D hypervolume of minimisation points dominated region up to ``reference``."""
    pts = points[np.all(points < reference, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    volume, best_y = 0.0, reference[1]
    for x, y in pts:
        if y < best_y:
            volume += (reference[0] - x) * (best_y - y)
            best_y = y
    return volume


class ParetoScore:
    def __init__(self, table: Table, cost: str = "latency") -> None:
        self.table, self.cost = table, cost
        keys = list(table.means)
        self.points = {k: np.array([-table.means[k], table.extra[k][cost]]) for k in keys}
        everything = np.array(list(self.points.values()))
        self.reference = everything.max(axis=0)
        self.optimum = hypervolume(everything, self.reference)

    def __call__(self, keys: Sequence[str]) -> float:
        return hypervolume(np.array([self.points[k] for k in keys]), self.reference) / self.optimum


def kubenas_pareto(table: Table, budget: int, evaluate: Evaluate, seed: int, cost: str, algorithm: str) -> list[str]:
    objective = {
        "metrics": [{"name": "acc", "goal": "maximize"}, {"name": cost, "goal": "minimize"}],
        "strategy": "pareto",
    }
    spec = runner.experiment_spec(table, algorithm, budget, 1, seed, objective)
    return runner.run_metrics_sequentially(table, spec, budget, evaluate)


def random_pareto(table: Table, budget: int, evaluate: Evaluate, seed: int) -> list[str]:
    return runner.random_keys(table, budget, evaluate, seed)


def optuna_pareto(table: Table, budget: int, evaluate: Evaluate, seed: int, cost: str, sampler_name: str) -> list[str]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = baselines.optuna_sampler(sampler_name, seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen: list[str] = []
    known: dict[str, dict[str, float]] = {}
    asks = 0
    while len(seen) < budget and asks < 50 * budget:
        asks += 1
        trial = study.ask()
        config = {d.name: trial.suggest_categorical(d.name, list(d.grid)) for d in table.dimensions}
        key = table.key(config)  # type: ignore[arg-type]
        if key not in known:
            known[key] = evaluate(key)
            seen.append(key)
        study.tell(trial, [known[key]["acc"], known[key][cost]])
    return seen
