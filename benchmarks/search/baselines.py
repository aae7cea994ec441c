"""Baseline searchers over a table: random, regularized evolution, local search, Optuna.

Each returns the evaluated grid keys in order; the caller scores them. Every searcher gets
the same noisy evaluation (one recorded run at random per evaluation).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .tables import Table

if TYPE_CHECKING:
    import optuna

Evaluate = Callable[[str], float]


def _random_indices(table: Table, rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(rng.integers(len(d.grid))) for d in table.dimensions)


def _neighbours(table: Table, x: tuple[int, ...]) -> list[tuple[int, ...]]:
    out = []
    for i, d in enumerate(table.dimensions):
        for v in range(len(d.grid)):
            if v != x[i]:
                out.append((*x[:i], v, *x[i + 1 :]))
    return out


def random_search(table: Table, budget: int, evaluate: Evaluate, rng: np.random.Generator) -> list[str]:
    seen: list[str] = []
    known: set[str] = set()
    while len(seen) < budget:
        key = table.key_of_indices(_random_indices(table, rng))
        if key not in known:
            known.add(key)
            evaluate(key)
            seen.append(key)
    return seen


def regularized_evolution(
    table: Table, budget: int, evaluate: Evaluate, rng: np.random.Generator, population: int = 10, sample: int = 3
) -> list[str]:
    """Real et al. 2019: tournament selection, one-dimension mutation, the oldest dies."""
    seen: list[str] = []
    known: set[str] = set()
    pop: collections.deque[tuple[tuple[int, ...], float]] = collections.deque()

    def run(x: tuple[int, ...]) -> None:
        key = table.key_of_indices(x)
        known.add(key)
        pop.append((x, evaluate(key)))
        seen.append(key)
        if len(pop) > population:
            pop.popleft()

    while len(seen) < budget:
        if len(seen) < population:
            x = _random_indices(table, rng)
        else:
            contenders = [pop[int(i)] for i in rng.choice(len(pop), size=sample, replace=False)]
            parent = max(contenders, key=lambda c: c[1] if table.maximize else -c[1])[0]
            options = [n for n in _neighbours(table, parent) if table.key_of_indices(n) not in known]
            x = options[int(rng.integers(len(options)))] if options else _random_indices(table, rng)
        if table.key_of_indices(x) not in known:
            run(x)
    return seen


def local_search(
    table: Table, budget: int, evaluate: Evaluate, rng: np.random.Generator, initial: int = 10
) -> list[str]:
    """White et al. 2021: from the best of a random start, evaluate the whole neighbourhood and
    move to its best member; at a local optimum restart from a random architecture."""
    seen: list[str] = []
    values: dict[str, float] = {}

    def run(x: tuple[int, ...]) -> float:
        key = table.key_of_indices(x)
        if key not in values:
            values[key] = evaluate(key)
            seen.append(key)
        return values[key]

    sign = 1.0 if table.maximize else -1.0
    start = [_random_indices(table, rng) for _ in range(initial)]
    scored = [(sign * run(x), x) for x in start]
    current_score, current = max(scored)
    while len(seen) < budget:
        neighbours = _neighbours(table, current)
        rng.shuffle(neighbours)  # type: ignore[arg-type]
        best_score, best = -np.inf, current
        for n in neighbours:
            if len(seen) >= budget:
                break
            score = sign * run(n)
            if score > best_score:
                best_score, best = score, n
        if best_score > current_score:
            current_score, current = best_score, best
        else:
            current = _random_indices(table, rng)
            current_score = sign * run(current)
    return seen[:budget]


def optuna_sampler(sampler_name: str, seed: int) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate), ``gp`` or ``nsga2``."""
    import optuna

    if sampler_name == "tpe":
        return optuna.samplers.TPESampler(multivariate=True, seed=seed)
    if sampler_name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if sampler_name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise KeyError(sampler_name)


def optuna_search(
    table: Table,
    budget: int,
    evaluate: Evaluate,
    seed: int,
    sampler_name: str = "tpe",
    constraint: Callable[[str], float] | None = None,
) -> list[str]:
    """Optuna over the same kubenas space (numeric parameters stay numeric, log where kubenas uses log).

    ``constraint``: a key's constraint value after its evaluation (<= 0 feasible), recorded with
    ``Trial.set_constraint``, Optuna 5's native constraint handling (it replaces the samplers'
    deprecated ``constraints_func``; TPE, NSGA-II and GP read it).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna_sampler(sampler_name, seed)
    study = optuna.create_study(direction="maximize" if table.maximize else "minimize", sampler=sampler)
    seen: list[str] = []
    known: dict[str, float] = {}
    # With numeric dimensions, distinct values that snap to one table cell are distinct runs (as
    # for the kubenas rows); on an all-categorical table a repeat is told its recorded value.
    numeric = any(d.kind != "categorical" for d in table.dimensions)
    asks = 0
    while len(seen) < budget and asks < 50 * budget:
        asks += 1
        trial = study.ask()
        config = {}
        for d in table.dimensions:
            if d.kind == "categorical":
                config[d.name] = trial.suggest_categorical(d.name, list(d.grid))  # type: ignore[arg-type]
            elif d.kind == "int":
                config[d.name] = trial.suggest_int(d.name, int(min(d.grid)), int(max(d.grid)), log=d.log)  # type: ignore[call-overload]
            else:
                config[d.name] = trial.suggest_float(d.name, float(min(d.grid)), float(max(d.grid)), log=d.log)  # type: ignore[arg-type]
        key = table.key(config)
        if key not in known or numeric:
            known[key] = evaluate(key)
            seen.append(key)
        # A repeat is told the recorded value: Optuna has no dedup of its own, and re-running
        # it would waste a trial the other searchers do not spend.
        if constraint is not None:
            trial.set_constraint("constraint", constraint(key))
        study.tell(trial, known[key])
    return seen
