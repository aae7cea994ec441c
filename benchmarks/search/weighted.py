"""Weighted objective on NB201: 1.0·accuracy − β·log10(cost), the seed's α·accuracy + β·cost.

The weighted problem is posed as a derived table whose recorded runs are each run's weighted
value (cost is deterministic per architecture, so only accuracy is noisy). Its mean is the true
weighted value, so the usual scores (incumbent @k, evaluations to the top 1% and to the
optimum) apply unchanged, and the scalar baselines optimise the same noisy weighted value.
kubenas gets the two metrics separately and combines them with its own ``strategy: weighted``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from . import runner
from .tables import Table

Evaluate = Callable[[str], float]

# β in accuracy points per 10× cost. The smallest round values at which the accuracy optimum
# drops out of the weighted top 1% of NB201 CIFAR-10 (latency: rank 288 of 15,625; model size:
# rank 276), so a search that only finds accuracy does not solve the weighted problem. The
# weighted optimum then gives up 0.72 pp (latency, 31% faster) or 0.89 pp (model size, 3.1×
# smaller) of accuracy.
DEFAULT_BETA = {"latency": 12.0, "model_size": 3.0}


def cost_metric(cost: str) -> str:
    return f"log10_{cost}"


def weighted_table(table: Table, cost: str, beta: float) -> Table:
    """``table`` with every recorded run replaced by run − β·log10(cost); maximised."""
    metric = cost_metric(cost)
    extra = {k: {**table.extra[k], metric: math.log10(table.extra[k][cost])} for k in table.runs}
    runs = {k: [float(a) - beta * extra[k][metric] for a in v] for k, v in table.runs.items()}
    name = f"{table.name} weighted acc - {beta:g}*log10({cost})"
    return Table(name, table.dimensions, runs, maximize=True, extra=extra)


def objective(cost: str, beta: float) -> dict[str, Any]:
    """kubenas's weighted objective: sum(weight·value), minimised metrics with their sign flipped."""
    return {
        "strategy": "weighted",
        "metrics": [
            {"name": "acc", "goal": "maximize", "weight": 1.0},
            {"name": cost_metric(cost), "goal": "minimize", "weight": beta},
        ],
    }


def kubenas_weighted(
    table: Table, budget: int, evaluate: Evaluate, seed: int, cost: str, beta: float, algorithm: str
) -> list[str]:
    """The Suggester with ``objective(cost, beta)``; each trial reports ``acc`` and ``log10_<cost>``.

    ``evaluate`` returns the noisy weighted value of a ``weighted_table``; the trial's accuracy
    is recovered from it (value + β·log10 cost), so every method sees the same recorded run.
    """
    metric = cost_metric(cost)
    spec = runner.experiment_spec(table, algorithm, budget, 1, seed, objective(cost, beta))

    def metrics(key: str) -> dict[str, float]:
        log_cost = table.extra[key][metric]
        return {"acc": evaluate(key) + beta * log_cost, metric: log_cost}

    return runner.run_metrics_sequentially(table, spec, budget, metrics)
