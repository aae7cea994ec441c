"""The stages of a one-shot Experiment (``spec.oneShot``), decided from its Trials alone.

1. *SupernetTraining*: one trial in mode ``supernet-train`` over the space the searched
   parameters span (a failed one is replaced while ``maxFailedTrials`` allows).
2. *SubnetSearch*: trials in mode ``supernet-eval``, each evaluating ``batchSize`` subnets the
   search proposes, from the checkpoint of the succeeded supernet trial; ``budget.maxTrials``
   subnets in all. The search sees every subnet as a trial of its own (``searched_trials``), so
   the algorithm, constraints and Pareto objective work as in black-box search.
3. *Retraining*: the ``topK`` best subnets retrained standalone (mode ``train``); only these
   trials can be the best trial or be exported.

A trial's stage is its ``mode`` parameter, so a backend that restarts at any point plans
the same next step: nothing is repeated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from kubenas import api, objective
from kubenas.api.oneshot import MAX_BATCH, SUBNETS, SUPERNET_SPACE, dimension_values
from kubenas.plan.actions import CreateTrial, Suggester
from kubenas.plan.staging import MODE, RETRAIN, RETRAINING, Next, TrialNamer, by_mode, mode_of, modes_of, retrain_key

SUPERNET_TRAIN = "supernet-train"
SUPERNET_EVAL = "supernet-eval"

SUPERNET_TRAINING = "SupernetTraining"
SUBNET_SEARCH = "SubnetSearch"
STAGES = (SUPERNET_TRAINING, SUBNET_SEARCH, RETRAINING)

# What a stage's result must report to succeed (its own result form, not the objective's).
_STAGE_METRIC = {SUPERNET_TRAIN: "accuracy", SUPERNET_EVAL: SUBNETS}
_MAX_SUBNETS_TEXT = 64 * 1024


def result_objective(spec: api.ExperimentSpec, trial: api.Trial) -> api.Objective:
    """The objective a finished trial's result is judged complete by: a stage-1 or stage-2 trial
    reports its own metrics (docs/trial.md), not the experiment's objective."""
    metric = _STAGE_METRIC.get(mode_of(trial) or "") if spec.one_shot is not None else None
    return spec.objective if metric is None else api.Objective(metric=metric, goal=api.Goal.MAXIMIZE)


def supernet_parameters(spec: api.ExperimentSpec) -> dict[str, api.ParameterValue]:
    """The stage-1 trial's parameters: the extra settings, the mode and the space of every searched dimension."""
    assert spec.one_shot is not None
    space = {p.name: dimension_values(p.type, p.min, p.max, p.values) for p in spec.parameters}
    return {**spec.one_shot.supernet, MODE: SUPERNET_TRAIN, SUPERNET_SPACE: json.dumps(space, sort_keys=True)}


def subnets_of(trial: api.Trial) -> list[dict[str, api.ParameterValue]]:
    """The subnets a stage-2 trial evaluates, in order ([] when unreadable)."""
    text = trial.spec.parameters.get(SUBNETS)
    if not isinstance(text, str) or len(text) > _MAX_SUBNETS_TEXT:
        return []
    try:
        value: Any = json.loads(text)
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [dict(s) for s in value[:MAX_BATCH] if isinstance(s, dict)]


def searched_trials(trials: Sequence[api.Trial]) -> list[api.Trial]:
    """Every subnet evaluated (or being evaluated) in stage 2, as a trial of its own.

    Subnet ``i`` of trial ``t`` is ``t.name/i`` with index ``t.index * 16 + i`` (trial order is
    kept), the batch trial's phase, and the ``<i>.<metric>`` values of its result as metrics.
    """
    out = []
    for trial in trials:
        if mode_of(trial) != SUPERNET_EVAL:
            continue
        for i, subnet in enumerate(subnets_of(trial)):
            prefix = f"{i}."
            metrics = {k[len(prefix) :]: v for k, v in trial.status.metrics.items() if k.startswith(prefix)}
            noisy = ["latency_ms"] if metrics.get("latency_noisy", 0.0) >= 0.5 and "latency_ms" in metrics else []
            status = trial.status.model_copy(update={"metrics": metrics, "noisy_metrics": noisy, "curve": []})
            out.append(
                trial.model_copy(
                    update={
                        "metadata": trial.metadata.model_copy(update={"name": f"{trial.name}/{i}"}),
                        "spec": trial.spec.model_copy(
                            update={"index": trial.spec.index * MAX_BATCH + i, "parameters": subnet}
                        ),
                        "status": status,
                    }
                )
            )
    return out


def retrained(trials: Sequence[api.Trial]) -> list[api.Trial]:
    """The stage-3 trials: the only ones that can be the experiment's result."""
    return [t for t in trials if mode_of(t) == RETRAIN]


def top_k(obj: api.Objective, subnets: Sequence[api.Trial], k: int) -> list[api.Trial]:
    """The ``k`` best feasible subnets: by objective value, or front by front for a Pareto objective."""
    remaining = list(subnets)
    picked: list[api.Trial] = []
    while len(picked) < k:
        if obj.is_pareto:
            layer = objective.pareto_front(obj, remaining, limit=k - len(picked))
        else:
            best = objective.best_trial(obj, remaining)
            layer = [] if best is None else [best]
        if not layer:
            break
        picked += layer
        names = {t.name for t in layer}
        remaining = [t for t in remaining if t.name not in names]
    return picked


def planned_trials(spec: api.ExperimentSpec, trials: Sequence[api.Trial] = ()) -> int:
    """Trials a one-shot experiment runs when nothing fails: 1 + the search's + topK."""
    assert spec.one_shot is not None
    return 1 + math.ceil(spec.budget.max_trials / spec.one_shot.batch_size) + spec.one_shot.top_k


def finished_message(spec: api.ExperimentSpec) -> str:
    assert spec.one_shot is not None
    top = spec.one_shot.top_k
    return f"the {top} best subnets were retrained" if top > 1 else "the best subnet was retrained"


def stage(trials: Sequence[api.Trial], creates: Sequence[CreateTrial] = ()) -> str:
    """The furthest stage the trials (and those about to be created) have reached."""
    modes = modes_of(trials, creates)
    if RETRAIN in modes:
        return RETRAINING
    return SUBNET_SEARCH if SUPERNET_EVAL in modes else SUPERNET_TRAINING


def next_trials(
    spec: api.ExperimentSpec, experiment: str, trials: Sequence[api.Trial], suggester: Suggester, slots: int
) -> Next:
    """The trials to create now (at most ``slots``), stage by stage.

    ``suggester`` must be synced with ``searched_trials(trials)``.
    """
    assert spec.one_shot is not None
    one = spec.one_shot
    create = TrialNamer(experiment, trials).create
    modes = by_mode(trials)
    supernets = modes.get(SUPERNET_TRAIN, [])
    trained = [t for t in supernets if t.phase == api.TrialPhase.SUCCEEDED]
    if not trained:
        if any(not t.phase.is_finished for t in supernets) or slots <= 0:
            return Next()
        return Next([create(supernet_parameters(spec))])
    supernet = max(trained, key=lambda t: t.spec.index).name

    searching = modes.get(SUPERNET_EVAL, [])
    evaluated = sum(len(subnets_of(t)) for t in searching)
    active = sum(not t.phase.is_finished for t in searching)
    creates: list[CreateTrial] = []
    while slots > len(creates) and evaluated < spec.budget.max_trials:
        configs = suggester.ask(min(one.batch_size, spec.budget.max_trials - evaluated))
        if not configs:
            break
        evaluated += len(configs)
        subnets = json.dumps([dict(c) for c in configs], sort_keys=True)
        creates.append(create({MODE: SUPERNET_EVAL, SUBNETS: subnets}, supernet=supernet))
    if creates or active or (evaluated < spec.budget.max_trials and not suggester.exhausted):
        return Next(creates)

    picks = top_k(spec.objective, searched_trials(trials), one.top_k)
    if not picks:
        return Next(done=True, problem="no subnet evaluated from the supernet succeeded with a feasible result")
    retraining = modes.get(RETRAIN, [])
    names = [p.name for p in spec.parameters]
    done = {retrain_key(t.spec.parameters, names) for t in retraining}
    for pick in picks:
        if len(creates) >= slots:
            break
        if retrain_key(pick.spec.parameters, names) not in done:
            creates.append(create({**one.retrain, **pick.spec.parameters, MODE: RETRAIN}))
    missing = sum(retrain_key(p.spec.parameters, names) not in done for p in picks)
    finished = missing == 0 and all(t.phase.is_finished for t in retraining)
    return Next(creates, done=finished)
