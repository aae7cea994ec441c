"""Early stopping: decide, from learning curves, whether a running trial should stop now.

Every rule has the pruner shape: one trial and the others in, one yes/no decision out
(``judge`` also says why). Rules are pure functions of the trials' ``status.curve``,
so the planner can re-ask on every reconcile and get the same answer.

- Median rule (percentile 50 of the percentile rule): at the trial's latest step ``s``,
  stop it when its best value so far is strictly worse than the median of the running
  averages up to ``s`` of the *succeeded* trials that reached ``s`` (Golovin et al., 2017).
  Judged only once ``s >= minEpochs`` and at least ``minTrials`` such trials exist.
- ASHA (asynchronous successive halving): rungs at ``minEpochs * reductionFactor**k``.
  A trial is judged once per rung, at the highest rung ``r`` it has reached: it continues
  (is *promoted*) when its value at ``r`` is among the best ``max(1, n // reductionFactor)``
  of the ``n`` trials (any phase, itself included) that have reached ``r`` so far; otherwise
  it stops. The promotion is recorded in the trial's ``status.rung``, so trials that reach
  ``r`` later never reopen the decision: a trial that passed its rung is not stopped
  half-way to the next one, nor while it finishes (Li et al., 2020; the first trial at a
  rung always passes, as in Ray Tune's and Optuna's ASHA).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kubenas import api

Curve = Sequence[api.CurvePoint]


@dataclass(frozen=True)
class _Prepared:
    """A curve sorted by step, with prefix sums: each question is a binary search."""

    steps: tuple[int, ...]
    values: tuple[float, ...]
    sums: tuple[float, ...]  # sums[k] = sum of the first k values

    @classmethod
    def of(cls, curve: Curve) -> _Prepared:
        points = sorted(curve, key=lambda p: p.step)
        sums = [0.0]
        for p in points:
            sums.append(sums[-1] + p.value)
        return cls(tuple(p.step for p in points), tuple(p.value for p in points), tuple(sums))

    @property
    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

    def reached(self, step: int) -> bool:
        """Reported at or before ``step`` and went on to ``step`` or beyond."""
        return bool(self.steps) and self.steps[0] <= step <= self.steps[-1]

    def average_to(self, step: int) -> float:
        k = bisect_right(self.steps, step)
        return self.sums[k] / k

    def value_at(self, step: int) -> float:
        """The value last reported at or before ``step`` (curves may be thinned out)."""
        return self.values[max(bisect_right(self.steps, step) - 1, 0)]

    def best(self, goal: api.Goal) -> float:
        return max(self.values) if goal == api.Goal.MAXIMIZE else min(self.values)


@dataclass(frozen=True)
class Verdicts:
    """What the rules decided for the running trials: who stops, and who passed an ASHA rung."""

    stops: dict[str, str] = field(default_factory=dict)  # trial name -> why
    promotions: dict[str, int] = field(default_factory=dict)  # trial name -> the rung it passed


def effective(spec: api.ExperimentSpec) -> api.EarlyStopping:
    """The early-stopping settings in force for ``spec``.

    An unset rule is the median rule for a single-metric objective: replayed on real trainer
    curves it saved 64% of trial-epochs at no regret (benchmarks/README.md, "Early stopping
    replay"). For a weighted or Pareto objective it is none: judging one metric's curve would
    stop exactly the trials that trade that metric for another. An unset ``minEpochs`` is 1 for
    the median rule and 2 for ASHA.
    """
    settings = spec.early_stopping
    rule = settings.rule
    if rule is None:
        rule = api.StoppingRule.NONE if spec.objective.is_multi else api.StoppingRule.MEDIAN
    return settings.model_copy(update={"rule": rule, "min_epochs": _min_epochs(settings, rule)})


# Picked from the replay of real trainer curves (benchmarks/README.md, "Early stopping replay"):
# the median rule at minEpochs 1, and ASHA at minEpochs 2 with reductionFactor 2, the only ASHA
# settings within 0.3 pp of regret.
_MIN_EPOCHS = {api.StoppingRule.MEDIAN: 1, api.StoppingRule.ASHA: 2}


def _min_epochs(settings: api.EarlyStopping, rule: api.StoppingRule | None) -> int:
    if settings.min_epochs is not None:
        return settings.min_epochs
    return _MIN_EPOCHS.get(rule, 1) if rule is not None else 1


def judge(rule: api.EarlyStopping, trial: api.Trial, others: Sequence[api.Trial], goal: api.Goal) -> str | None:
    """Why ``trial`` should stop now under ``rule``, or None when it should go on.

    Args:
        rule: the experiment's early-stopping settings.
        trial: the running trial to judge.
        others: every other trial of the experiment (any phase; the rule picks what it uses).
        goal: direction of the curve's metric.
    """
    everyone = [trial, *(o for o in others if o.name != trial.name)]
    return judge_all(rule, everyone, goal, names=[trial.name]).stops.get(trial.name)


def judge_all(
    rule: api.EarlyStopping, trials: Sequence[api.Trial], goal: api.Goal, names: Sequence[str] | None = None
) -> Verdicts:
    """``judge`` for each running trial of ``trials`` (or each one named), curves prepared once.

    Returns:
        The trials to stop, each with why, and (ASHA) the trials that passed a new rung.
    """
    if rule.rule in (None, api.StoppingRule.NONE):
        return Verdicts()
    unique = {t.name: t for t in trials}
    prepared = {name: _Prepared.of(t.status.curve) for name, t in unique.items()}
    judged = names if names is not None else [n for n, t in unique.items() if t.phase == api.TrialPhase.RUNNING]
    verdicts = Verdicts()
    min_epochs = _min_epochs(rule, rule.rule)
    for name in judged:
        if rule.rule == api.StoppingRule.MEDIAN:
            reference = [c for n, c in prepared.items() if n != name and unique[n].phase == api.TrialPhase.SUCCEEDED]
            why = _percentile(prepared[name], reference, goal, 50.0, min_epochs, rule.min_trials)
        else:
            others = [c for n, c in prepared.items() if n != name]
            rung, why = _asha(
                prepared[name], others, goal, min_epochs, rule.reduction_factor, unique[name].status.rung
            )
            if rung is not None and why is None:
                verdicts.promotions[name] = rung
        if why is not None:
            verdicts.stops[name] = why
    return verdicts


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
    return _percentile(
        _Prepared.of(curve), [_Prepared.of(c) for c in reference], goal, percentile, min_step, min_trials
    )


def _percentile(
    curve: _Prepared,
    reference: Sequence[_Prepared],
    goal: api.Goal,
    percentile: float,
    min_step: int,
    min_trials: int,
) -> str | None:
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {percentile}")
    if min_trials < 1:
        raise ValueError(f"min_trials must be at least 1, got {min_trials}")
    step = curve.last_step
    if step is None or step < min_step:
        return None
    averages = [c.average_to(step) for c in reference if c.reached(step)]
    if len(averages) < min_trials:
        return None
    best = curve.best(goal)
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
    curve: Curve,
    others: Sequence[Curve],
    goal: api.Goal,
    min_step: int,
    reduction_factor: int,
    passed: int | None = None,
) -> str | None:
    """Stop when the trial is not in the top 1/``reduction_factor`` at the highest rung it reached.

    ``passed`` is the highest rung the trial was already kept at (``status.rung``): it is
    not judged again there.

    Raises:
        ValueError: ``min_step`` < 1 or ``reduction_factor`` < 2.
    """
    return _asha(_Prepared.of(curve), [_Prepared.of(c) for c in others], goal, min_step, reduction_factor, passed)[1]


def _asha(
    curve: _Prepared,
    others: Sequence[_Prepared],
    goal: api.Goal,
    min_step: int,
    reduction_factor: int,
    passed: int | None,
) -> tuple[int | None, str | None]:
    """(the rung judged, why the trial stops there or None); (None, None) when there is nothing to judge."""
    if min_step < 1 or reduction_factor < 2:
        raise ValueError(f"ASHA needs min_step >= 1 and reduction_factor >= 2, got {min_step}, {reduction_factor}")
    step = curve.last_step
    if step is None or step < min_step:
        return None, None
    rung = highest_rung(step, min_step, reduction_factor)
    if passed is not None and passed >= rung:
        return None, None
    own = curve.value_at(rung)
    competitors = [own] + [o.value_at(rung) for o in others if o.last_step is not None and o.last_step >= rung]
    keep = max(1, len(competitors) // reduction_factor)
    ranked = sorted(competitors, reverse=goal == api.Goal.MAXIMIZE)
    cutoff = ranked[keep - 1]
    if not _worse(own, cutoff, goal):
        return rung, None
    return rung, (
        f"value {own:.6g} at rung {rung} is not in the top {keep} of {len(competitors)} trials "
        f"that reached it (cutoff {cutoff:.6g})"
    )


def highest_rung(step: int, min_step: int, reduction_factor: int) -> int:
    """The largest ``min_step * reduction_factor**k`` not above ``step`` (``step >= min_step``)."""
    rung = min_step
    while rung * reduction_factor <= step:
        rung *= reduction_factor
    return rung


def _worse(value: float, threshold: float, goal: api.Goal) -> bool:
    return value < threshold if goal == api.Goal.MAXIMIZE else value > threshold
