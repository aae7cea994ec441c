"""Drive kubenas's own search code on a table, with batch asks of ``parallel`` trials.

The path is ``kubenas.search.Suggester`` fed ``api.Trial`` objects, exactly as the operator
does: ``ask`` a batch, evaluate it on the table, ``sync`` the finished trials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from kubenas import api
from kubenas.search import Suggester

from .tables import Table

Evaluate = Callable[[str], float]


def experiment_spec(
    table: Table, algorithm: str, budget: int, parallel: int, seed: int, objective: dict[str, Any] | None = None
) -> api.ExperimentSpec:
    return api.ExperimentSpec.model_validate(
        {
            "objective": objective or {"metric": "score", "goal": "maximize" if table.maximize else "minimize"},
            "parameters": table.parameters,
            "algorithm": {"name": algorithm, "seed": seed},
            "budget": {"maxTrials": budget, "parallelTrials": parallel},
            "trialTemplate": {"spec": {"containers": [{"name": "trial", "image": "none"}]}},
        }
    )


def make_trial(name: str, index: int, parameters: Mapping[str, Any], metrics: Mapping[str, float] | None) -> api.Trial:
    status: dict[str, Any] = {"phase": "Running"}
    if metrics is not None:
        status = {"phase": "Succeeded", "reason": "Completed", "metrics": dict(metrics)}
    return api.Trial.model_validate(
        {
            "metadata": {"name": name},
            "spec": {"experiment": "bench", "index": index, "parameters": dict(parameters)},
            "status": status,
        }
    )


def run_kubenas(
    table: Table,
    algorithm: str,
    budget: int,
    evaluate: Evaluate,
    seed: int,
    parallel: int = 1,
    restart_every: int | None = None,
) -> list[str]:
    """Evaluated keys in order. ``restart_every``: rebuild the Suggester from history every n trials."""
    spec = experiment_spec(table, algorithm, budget, parallel, seed)
    suggester = Suggester(spec)
    trials: list[api.Trial] = []
    seen: list[str] = []
    last_rebuild = 0
    while len(seen) < budget:
        if restart_every and len(seen) - last_rebuild >= restart_every:
            suggester = Suggester(spec)
            suggester.sync(trials)
            last_rebuild = len(seen)
        configs = suggester.ask(min(parallel, budget - len(seen)))
        if not configs:
            break
        batch = []
        for config in configs:
            key = table.key(config)
            value = evaluate(key)
            seen.append(key)
            batch.append(make_trial(f"bench-{len(trials)}", len(trials), config, {"score": value}))
            trials.append(batch[-1])
        suggester.sync(trials)
    return seen


def run_metrics_sequentially(
    table: Table, spec: api.ExperimentSpec, budget: int, evaluate: Callable[[str], Mapping[str, float]]
) -> list[str]:
    """Evaluated keys in order: one trial at a time through the Suggester, each told all its metrics."""
    suggester = Suggester(spec)
    trials: list[api.Trial] = []
    seen: list[str] = []
    while len(seen) < budget:
        configs = suggester.ask(1)
        if not configs:
            break
        key = table.key(configs[0])
        seen.append(key)
        trials.append(make_trial(f"bench-{len(trials)}", len(trials), configs[0], evaluate(key)))
        suggester.sync(trials)
    return seen


def random_keys(table: Table, budget: int, evaluate: Callable[[str], object], seed: int) -> list[str]:
    """``budget`` distinct configurations drawn uniformly, each evaluated (random-search baseline)."""
    rng = np.random.default_rng(seed)
    keys = list(table.means)
    chosen = [keys[i] for i in rng.choice(len(keys), size=budget, replace=False)]
    for key in chosen:
        evaluate(key)
    return chosen
