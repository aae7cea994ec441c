"""What a trial's metrics are worth: objective value, feasibility, losses, best trial, Pareto front.

The objective value is in the user's direction (``direction``): the metric itself for a single
objective, ``sum(weight * value)`` (minimised metrics with their sign flipped, so larger is
better) for a weighted one, and the first metric for a Pareto objective, which only uses it to
name a "best" trial. Losses are the minimisation form Nevergrad wants: one per metric for a
Pareto objective, one otherwise.

Ties are broken by trial index (then name), so every answer is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from kubenas import api


def _finite(metrics: Mapping[str, float], name: str) -> float | None:
    value = metrics.get(name)
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def direction(objective: api.Objective) -> api.Goal:
    """Whether a larger (maximize) or smaller (minimize) ``scalar_value`` is better."""
    if objective.strategy == api.Strategy.WEIGHTED and objective.metrics:
        return api.Goal.MAXIMIZE
    metrics = objective.objective_metrics()
    return metrics[0].goal if metrics else api.Goal.MAXIMIZE


def scalar_value(objective: api.Objective, metrics: Mapping[str, float]) -> float | None:
    """The objective value of ``metrics`` in the user's direction; None when a needed metric is missing."""
    wanted = objective.objective_metrics()
    if not wanted:
        return None
    if objective.strategy == api.Strategy.WEIGHTED and objective.metrics:
        total = 0.0
        for m in wanted:
            value = _finite(metrics, m.name)
            if value is None:
                return None
            sign = 1.0 if m.goal == api.Goal.MAXIMIZE else -1.0
            total += (1.0 if m.weight is None else m.weight) * sign * value
        return total if math.isfinite(total) else None
    return _finite(metrics, wanted[0].name)


def violations(objective: api.Objective, metrics: Mapping[str, float]) -> list[float]:
    """How far each constraint is violated (0 when met; ``inf`` when its metric is missing)."""
    return [max(0.0, m) for m in _signed_margins(objective, metrics)]


def stop_early_metrics(objective: api.Objective) -> frozenset[str]:
    """The metrics whose constraints stop a running trial as soon as a reported value breaks them."""
    return frozenset(c.metric for c in objective.constraints if c.stop_early)


def reported_violation(objective: api.Objective, reported: Mapping[str, float]) -> str | None:
    """Why a running trial is already infeasible: the first ``stopEarly`` constraint a reported value breaks."""
    for c in objective.constraints:
        value = _finite(reported, c.metric) if c.stop_early else None
        if value is None:
            continue
        if c.min is not None and value < c.min:
            return f"{c.metric} = {value:.6g} reported while running, below the constraint's min {c.min:g}"
        if c.max is not None and value > c.max:
            return f"{c.metric} = {value:.6g} reported while running, above the constraint's max {c.max:g}"
    return None


def constraint_margins(objective: api.Objective, metrics: Mapping[str, float]) -> list[float]:
    """Each constraint's signed margin in units of its bound: > 0 violated by that much, <= 0 met
    with that much room; ``inf`` when its metric is missing. What a feasibility model learns from.
    """
    scales = [max(abs(b) for b in (c.min, c.max) if b is not None) or 1.0 for c in objective.constraints]
    return [m / scale for m, scale in zip(_signed_margins(objective, metrics), scales, strict=True)]


def _signed_margins(objective: api.Objective, metrics: Mapping[str, float]) -> list[float]:
    """Per constraint, how far the metric is beyond its nearer bound (negative inside; ``inf`` if missing)."""
    out: list[float] = []
    for c in objective.constraints:
        value = _finite(metrics, c.metric)
        below = (c.min - value) if c.min is not None and value is not None else -math.inf
        above = (value - c.max) if c.max is not None and value is not None else -math.inf
        out.append(math.inf if value is None else max(below, above))
    return out


def curve_metric(spec: api.ExperimentSpec) -> str | None:
    """The metric whose learning curve early stopping judges: earlyStopping.metric, else the first objective metric."""
    if spec.early_stopping.metric:
        return spec.early_stopping.metric
    metrics = spec.objective.objective_metrics()
    return metrics[0].name if metrics else None


def is_feasible(objective: api.Objective, metrics: Mapping[str, float]) -> bool:
    """Whether ``metrics`` meet every constraint (bounds inclusive; a missing metric fails)."""
    return all(v == 0.0 for v in violations(objective, metrics))


def loss_vector(objective: api.Objective, metrics: Mapping[str, float]) -> list[float] | None:
    """The losses Nevergrad minimises: one per metric (Pareto) or one; None when a metric is missing."""
    if objective.is_pareto:
        front = _front_losses(objective, metrics)
        return None if front is None else list(front)
    value = scalar_value(objective, metrics)
    if value is None:
        return None
    return [-value if direction(objective) == api.Goal.MAXIMIZE else value]


def _order(trial: api.Trial) -> tuple[int, str]:
    return (trial.spec.index, trial.name)


def is_trusted(objective: api.Objective, trial: api.Trial) -> bool:
    """Whether none of the trial's objective metrics was flagged noisy by the trial (``status.noisyMetrics``).

    An untrusted trial is still told to the search with its value, but is never the best trial,
    on the Pareto front or exported: a disturbed latency measurement once put a trial on the
    front at 176x its real latency.
    """
    flagged = set(trial.status.noisy_metrics)
    return not flagged or not any(m.name in flagged for m in objective.objective_metrics())


def awaits_first_measurement(policy: api.CostMeasurement, trial: api.Trial) -> bool:
    """A succeeded trial whose latency ``remeasure: Always`` has not measured yet: its result is not complete."""
    return (policy.remeasure == api.Remeasure.ALWAYS and trial.status.phase == api.TrialPhase.SUCCEEDED
            and not trial.status.cost_measurements)


def _eligible(objective: api.Objective, trial: api.Trial) -> bool:
    """Succeeded, feasible and trusted: a candidate for the best trial and the Pareto front."""
    return (trial.status.phase == api.TrialPhase.SUCCEEDED and is_feasible(objective, trial.status.metrics)
            and is_trusted(objective, trial))


def _scored(objective: api.Objective, trials: Sequence[api.Trial]) -> list[tuple[api.Trial, float]]:
    """Eligible trials with their objective value."""
    out = []
    for t in trials:
        if not _eligible(objective, t):
            continue
        value = scalar_value(objective, t.status.metrics)
        if value is not None:
            out.append((t, value))
    return out


def best_trial(objective: api.Objective, trials: Sequence[api.Trial]) -> api.Trial | None:
    """The feasible, trusted Succeeded trial with the best objective value (the earliest on a tie)."""
    scored = _scored(objective, trials)
    if not scored:
        return None
    sign = -1.0 if direction(objective) == api.Goal.MAXIMIZE else 1.0
    return min(scored, key=lambda tv: (sign * tv[1], _order(tv[0])))[0]


def reached_target(objective: api.Objective, trials: Sequence[api.Trial]) -> api.Trial | None:
    """The best trial when it reaches ``targetValue`` (>= when maximising, <= when minimising), else None."""
    target = objective.target_value
    if target is None:
        return None
    best = best_trial(objective, trials)
    if best is None:
        return None
    value = scalar_value(objective, best.status.metrics)
    assert value is not None  # best_trial only returns scored trials
    reached = value >= target if direction(objective) == api.Goal.MAXIMIZE else value <= target
    return best if reached else None


def pareto_front(
    objective: api.Objective, trials: Sequence[api.Trial], limit: int = api.MAX_PARETO_FRONT
) -> list[api.Trial]:
    """The non-dominated feasible, trusted Succeeded trials, at most ``limit`` of them.

    Ordered by the first objective metric, best first. Trials with identical losses appear
    once (the earliest). When the front is larger than ``limit``, evenly spaced members along
    that order are kept, both ends included.
    """
    rows = []
    for t in trials:
        if not _eligible(objective, t):
            continue
        losses = _front_losses(objective, t.status.metrics)
        if losses is not None:
            rows.append((losses, _order(t), t))
    if not rows or limit <= 0:
        return []
    rows.sort(key=lambda r: (r[0], r[1]))
    front: list[api.Trial] = []
    kept = np.empty((len(rows), len(rows[0][0])))
    # In lexicographic order no later point can dominate an earlier one: one pass suffices.
    for losses, _, trial in rows:
        point = np.asarray(losses)
        if front and bool(np.any(np.all(kept[: len(front)] <= point, axis=1))):
            continue  # dominated by (or equal to) a kept point
        kept[len(front)] = point
        front.append(trial)
    if len(front) <= limit:
        return front
    if limit == 1:
        return front[:1]
    picks = sorted({round(i * (len(front) - 1) / (limit - 1)) for i in range(limit)})
    return [front[i] for i in picks]


def _front_losses(objective: api.Objective, metrics: Mapping[str, float]) -> tuple[float, ...] | None:
    """Losses per objective metric (the Pareto view, whatever the strategy)."""
    losses = []
    for m in objective.objective_metrics():
        value = _finite(metrics, m.name)
        if value is None:
            return None
        losses.append(-value if m.goal == api.Goal.MAXIMIZE else value)
    return tuple(losses) if losses else None
