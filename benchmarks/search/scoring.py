"""Scores of a search run: the incumbent's true mean after k evaluations, evaluations to the top 1%."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .tables import Table


@dataclass(frozen=True)
class RunScore:
    incumbent: tuple[float, ...]  # true mean of the best-observed configuration after k evaluations
    evals_to_top: float  # first evaluation of a top-1% configuration (inf: never)
    evals_to_optimum: float  # first evaluation of the best configuration (inf: never)


def score_run(table: Table, keys: Sequence[str], observed: Sequence[float], budget: int) -> RunScore:
    """The incumbent is what a user would pick: the best observed value, not the best true mean."""
    trace: list[float] = []
    best_obs: float | None = None
    best_mean = math.nan
    first_top = first_optimum = math.inf
    for i, (key, obs) in enumerate(zip(keys, observed, strict=True)):
        if best_obs is None or table.better(obs, best_obs):
            best_obs, best_mean = obs, table.means[key]
        if math.isinf(first_top) and table.is_top(table.means[key]):
            first_top = i + 1
        if math.isinf(first_optimum) and table.means[key] == table.optimum:
            first_optimum = i + 1
        trace.append(best_mean)
    trace += [best_mean] * (budget - len(trace))
    return RunScore(tuple(trace[:budget]), first_top, first_optimum)


def summarise(scores: Sequence[RunScore], checkpoints: Sequence[int]) -> dict[str, float]:
    """Medians over runs."""
    out: dict[str, float] = {}
    for k in checkpoints:
        vals = [s.incumbent[k - 1] for s in scores if len(s.incumbent) >= k]
        out[f"@{k}"] = float(np.median(vals)) if vals else math.nan
    out["evals"] = float(np.median([s.evals_to_top for s in scores]))
    out["found"] = float(np.mean([not math.isinf(s.evals_to_top) for s in scores]))
    out["optimum"] = float(np.median([s.evals_to_optimum for s in scores]))
    return out
