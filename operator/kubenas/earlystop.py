"""Early stopping: decide, from learning curves, whether a running trial should stop now.

Every rule has the pruner shape: one trial and the others in, one yes/no decision out
(``judge`` also says why). Rules are pure functions of the trials' ``status.curve``,
so the planner can re-ask on every reconcile and get the same answer.

- Median rule (percentile 50 of the percentile rule): at the trial's latest step ``s``,
  stop it when its best value so far is strictly worse than the median of the running
  averages up to ``s`` of the *succeeded* trials that reached ``s`` (Golovin et al., 2017).
  Judged only once ``s >= minEpochs`` and at least ``minTrials`` such trials exist.
- ASHA (asynchronous successive halving): rungs at ``minEpochs * reductionFactor**k``.
  At the highest rung ``r`` the trial has reached, it continues only when its value at
  ``r`` is among the best ``max(1, n // reductionFactor)`` of the ``n`` trials (any phase,
  itself included) that reached ``r``; otherwise it stops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kubenas import api

Curve = Sequence[api.CurvePoint]


def judge(rule: api.EarlyStopping, trial: api.Trial, others: Sequence[api.Trial], goal: api.Goal) -> str | None:
    """Why ``trial`` should stop now under ``rule``, or None when it should go on.

    Args:
        rule: the experiment's early-stopping settings.
        trial: the running trial to judge.
        others: every other trial of the experiment (any phase; the rule picks what it uses).
        goal: direction of the curve's metric.
    """
    others = [o for o in others if o.name != trial.name]
    if rule.rule == api.StoppingRule.MEDIAN:
        reference = [o.status.curve for o in others if o.phase == api.TrialPhase.SUCCEEDED]
        return percentile_rule(trial.status.curve, reference, goal, 50.0, rule.min_epochs, rule.min_trials)
    if rule.rule == api.StoppingRule.ASHA:
        return asha_rule(
            trial.status.curve, [o.status.curve for o in others], goal, rule.min_epochs, rule.reduction_factor
        )
    return None


def should_stop(rule: api.EarlyStopping, trial: api.Trial, others: Sequence[api.Trial], goal: api.Goal) -> bool:
    """Whether ``trial`` should stop now under ``rule`` (see ``judge``)."""
    return judge(rule, trial, others, goal) is not None


def percentile_rule(
    curve: Curve,
    reference: Sequence[Curve],
    goal: api.Goal,
    percentile: float,
    min_step: int,
    min_trials: int,
) -> str | None:
    """Stop when the best value so far is worse than the ``percentile``-th best running average.

    ``percentile`` counts from the bad end: 50 is the median; 25 stops only trials in the
    worst quarter. Reference curves count when they reached the trial's latest step.

    Raises:
        ValueError: ``percentile`` is outside [0, 100] or ``min_trials`` < 1.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {percentile}")
    if min_trials < 1:
        raise ValueError(f"min_trials must be at least 1, got {min_trials}")
    points = _sorted(curve)
    if not points or points[-1].step < min_step:
        return None
    step = points[-1].step
    averages = [_running_average(c, step) for c in reference if _reached(c, step)]
    if len(averages) < min_trials:
        return None
    best = _best(points, goal)
    # For maximize the worst values are the low ones; for minimize, the high ones.
    q = percentile if goal == api.Goal.MAXIMIZE else 100.0 - percentile
    threshold = float(np.percentile(averages, q))
    if not _worse(best, threshold, goal):
        return None
    label = "median" if percentile == 50.0 else f"{percentile:g}th percentile"
    return (
        f"best {best:.6g} by step {step} is worse than the {label} {threshold:.6g} "
        f"of {len(averages)} finished trials' running averages"
    )


def asha_rule(
    curve: Curve, others: Sequence[Curve], goal: api.Goal, min_step: int, reduction_factor: int
) -> str | None:
    """Stop when the trial is not in the top 1/``reduction_factor`` at the highest rung it reached.

    Raises:
        ValueError: ``min_step`` < 1 or ``reduction_factor`` < 2.
    """
    if min_step < 1 or reduction_factor < 2:
        raise ValueError(f"ASHA needs min_step >= 1 and reduction_factor >= 2, got {min_step}, {reduction_factor}")
    points = _sorted(curve)
    if not points or points[-1].step < min_step:
        return None
    rung = highest_rung(points[-1].step, min_step, reduction_factor)
    own = _value_at(points, rung)
    competitors = [own]
    for other in others:
        other_points = _sorted(other)
        if other_points and other_points[-1].step >= rung:
            competitors.append(_value_at(other_points, rung))
    keep = max(1, len(competitors) // reduction_factor)
    ranked = sorted(competitors, reverse=goal == api.Goal.MAXIMIZE)
    cutoff = ranked[keep - 1]
    if not _worse(own, cutoff, goal):
        return None
    return (
        f"value {own:.6g} at rung {rung} is not in the top {keep} of {len(competitors)} trials "
        f"that reached it (cutoff {cutoff:.6g})"
    )


def highest_rung(step: int, min_step: int, reduction_factor: int) -> int:
    """The largest ``min_step * reduction_factor**k`` not above ``step`` (``step >= min_step``)."""
    rung = min_step
    while rung * reduction_factor <= step:
        rung *= reduction_factor
    return rung


def _sorted(curve: Curve) -> list[api.CurvePoint]:
    return sorted(curve, key=lambda p: p.step)


def _reached(curve: Curve, step: int) -> bool:
    steps = [p.step for p in curve]
    return bool(steps) and min(steps) <= step <= max(steps)


def _running_average(curve: Curve, step: int) -> float:
    values = [p.value for p in curve if p.step <= step]
    return sum(values) / len(values)


def _best(points: Sequence[api.CurvePoint], goal: api.Goal) -> float:
    values = [p.value for p in points]
    return max(values) if goal == api.Goal.MAXIMIZE else min(values)


def _value_at(points: Sequence[api.CurvePoint], step: int) -> float:
    """The value last reported at or before ``step`` (curves may be thinned out)."""
    value = points[0].value
    for point in points:
        if point.step > step:
            break
        value = point.value
    return value


def _worse(value: float, threshold: float, goal: api.Goal) -> bool:
    return value < threshold if goal == api.Goal.MAXIMIZE else value > threshold
