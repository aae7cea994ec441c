"""Drive kubenas's own search code on a table, with batch asks of ``parallel`` trials.

The real path is ``kubenas.search.Suggester`` fed ``api.Trial`` objects, exactly as the
operator does. Until that module exists, a minimal stand-in with the same contract is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import nevergrad as ng
import numpy as np
from kubenas import algorithms, api

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


class _StandInSuggester:
    """docs/contracts.md's Suggester reduced to what the benchmark uses (until search.py lands)."""

    def __init__(self, spec: api.ExperimentSpec) -> None:
        params: dict[str, ng.p.Parameter] = {}
        for p in spec.parameters:
            if p.type == "categorical":
                params[p.name] = ng.p.Choice(list(p.values or []))
            else:
                lo, hi = float(p.min or 0.0), float(p.max or 1.0)
                leaf = ng.p.Log(lower=lo, upper=hi) if p.scale == "log" else ng.p.Scalar(lower=lo, upper=hi)
                params[p.name] = leaf.set_integer_casting() if p.type == "int" else leaf
        self._param = ng.p.Dict(**params)
        self._param.random_state.seed(spec.algorithm.seed)
        budget = spec.algorithm.budget_hint or spec.budget.max_trials
        self._opt = algorithms.build_optimizer(spec.algorithm.name, self._param, budget, spec.budget.parallel_trials)
        self._names = [p.name for p in spec.parameters]
        self._maximize = spec.objective.goal == "maximize"
        self._metric = spec.objective.metric or "score"
        self._told: set[str] = set()
        self._known: dict[str, float | None] = {}
        self._candidates: dict[str, ng.p.Parameter] = {}

    def _key(self, values: Mapping[str, Any]) -> str:
        return repr(tuple(values[n] for n in self._names))

    def sync(self, trials: Sequence[api.Trial]) -> list[str]:
        told = []
        for t in trials:
            key = self._key(t.spec.parameters)
            if t.status is None or not t.status.phase.is_finished:
                self._known.setdefault(key, None)
                continue
            if t.metadata.name in self._told:
                continue
            value = t.status.metrics[self._metric]
            loss = -value if self._maximize else value
            cand = self._candidates.pop(key, None)
            if cand is None:
                cand = self._param.spawn_child(new_value=dict(t.spec.parameters))
            self._opt.tell(cand, loss)
            self._known[key] = loss
            self._told.add(t.metadata.name)
            told.append(t.metadata.name)
        return told

    def ask(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        attempts = 0
        while len(out) < n and attempts < 50 * n:
            attempts += 1
            cand = self._opt.ask()
            values = dict(cand.value)
            key = self._key(values)
            if key in self._known:
                loss = self._known[key]
                # A repeat of a finished config is told its result so the optimizer moves on.
                self._opt.tell(cand, loss if loss is not None else 0.0)
                continue
            self._known[key] = None
            self._candidates[key] = cand
            out.append(values)
        return out


def suggester_class() -> type:
    try:
        from kubenas.search import Suggester

        return Suggester
    except ImportError:
        return _StandInSuggester


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
    cls = suggester_class()
    spec = experiment_spec(table, algorithm, budget, parallel, seed)
    suggester = cls(spec)
    trials: list[api.Trial] = []
    seen: list[str] = []
    last_rebuild = 0
    while len(seen) < budget:
        if restart_every and len(seen) - last_rebuild >= restart_every:
            suggester = cls(spec)
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
    suggester = suggester_class()(spec)
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
