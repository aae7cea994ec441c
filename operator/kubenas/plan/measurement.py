"""Which succeeded trials to measure again, and when (``spec.costMeasurement``).

A trial's latency measured beside other trials can stay disturbed (the trial flags it
``noisyMetrics: [latency_ms]``). Such a value is told to the search as it is (interference
only makes latency look worse), but it may not enter the best trial, the Pareto front or the
export until a later measurement, from the trial's saved model, comes out quiet. Those
re-measurements wait until no trial of the experiment is running and go one at a time, so
they do not disturb each other or the training they would otherwise share the node with.
With ``remeasure: Front`` the Pareto front's edge is confirmed as well: a trusted trial that is
on the front, or would join it were its latency ``REPRODUCED_WITHIN`` times lower, is measured
once more the same way. A neighbour busy through a whole measurement slows every timed run
alike, so the spread stays small and the trial does not flag it; such a value can push a
true member off the front, or (for a member) let a trial it dominates onto it.
With ``remeasure: Always`` every succeeded trial is measured once as soon as it succeeds
(typically on another node type, the deployment target), then like the above while noisy.

The experiment does not complete while a measurement is due: the front it ends with rests
on measurements that were given their chance.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubenas import api, objective
from kubenas.plan.actions import MeasureCost
from kubenas.results import REPRODUCED_WITHIN

LATENCY = "latency_ms"


def _wanted(spec: api.ExperimentSpec, trial: api.Trial, edge: frozenset[str]) -> MeasureCost | None:
    """The measurement ``trial`` still needs, if any (``edge``: the trials to confirm, see ``front_edge``)."""
    policy = spec.cost_measurement
    done = trial.status.cost_measurements or 0
    if policy.remeasure == api.Remeasure.NEVER or trial.phase != api.TrialPhase.SUCCEEDED or done >= policy.attempts:
        return None
    if objective.awaits_first_measurement(policy, trial) or not objective.is_trusted(spec.objective, trial):
        return MeasureCost(trial.name, done + 1)
    if done == 0 and trial.name in edge:
        return MeasureCost(trial.name, 1)
    return None


def front_edge(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> frozenset[str]:
    """Under ``remeasure: Front``, the trials whose latency decides the front: its members, and the trials
    that would join it were their ``latency_ms`` ``REPRODUCED_WITHIN`` times lower."""
    obj = spec.objective
    goals = {m.name: m.goal for m in obj.objective_metrics()}
    if spec.cost_measurement.remeasure != api.Remeasure.FRONT or not obj.is_pareto:
        return frozenset()
    if goals.get(LATENCY) != api.Goal.MINIMIZE:
        return frozenset()
    front = objective.pareto_front(obj, trials)
    members = frozenset(t.name for t in front)
    near = set()
    for trial in trials:
        latency = trial.status.metrics.get(LATENCY)
        if trial.name in members or trial.phase != api.TrialPhase.SUCCEEDED or latency is None:
            continue
        faster = trial.status.model_copy(
            update={"metrics": {**trial.status.metrics, LATENCY: latency / REPRODUCED_WITHIN}}
        )
        lowered = trial.model_copy(update={"status": faster})
        if any(t.name == trial.name for t in objective.pareto_front(obj, [*front, lowered])):
            near.add(trial.name)
    return members | near


def measurements_due(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> tuple[MeasureCost, ...]:
    """The measurements to start now, in trial order: every first one of ``Always``; the next noisy one when idle."""
    always_first: list[MeasureCost] = []
    noisy: list[MeasureCost] = []
    edge = front_edge(spec, trials)
    for trial in sorted(trials, key=lambda t: (t.spec.index, t.name)):
        wanted = _wanted(spec, trial, edge)
        if wanted is not None:
            first = wanted.attempt == 1 and spec.cost_measurement.remeasure == api.Remeasure.ALWAYS
            (always_first if first else noisy).append(wanted)
    idle = all(t.phase.is_finished for t in trials)
    return (*always_first, *noisy[:1]) if idle else tuple(always_first)


def pending(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> bool:
    """Whether a measurement is still to come, now or once the running trials end."""
    edge = front_edge(spec, trials)
    return any(_wanted(spec, t, edge) is not None for t in trials)
