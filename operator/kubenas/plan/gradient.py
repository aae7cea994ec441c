"""The stages of a gradient-based cell search (``spec.gradientSearch``), decided from its Trials alone.

1. *CellSearch*: ``budget.maxTrials`` trials in mode ``gradient-search``, each with the settings
   the search algorithm proposes for the searched parameters (and ``search``'s). Each derives
   a NAS-Bench-201 cell and reports it as ``cell_op_<edge>`` metrics beside its ``accuracy``
   (the search network's), which the algorithm learns from.
2. *Retraining*: the cells of the most accurate searches, ``topK`` distinct ones, retrained
   from scratch as ordinary trials (parameter ``cell``) with their search's settings but the
   search-only ones, and ``retrain``'s. Only these trials can be the best trial or be exported.

A trial's stage is its ``mode`` parameter, so a backend that restarts at any point plans
the same next step: nothing is repeated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kubenas import api
from kubenas.api.gradient import CELL, SEARCH_MODE, SEARCH_ONLY, cell_of
from kubenas.plan.actions import CreateTrial, Suggester
from kubenas.plan.staging import MODE, RETRAIN, RETRAINING, Next, TrialNamer, by_mode, mode_of, modes_of, retrain_key

CELL_SEARCH = "CellSearch"
SEED = "seed"
STAGES = (CELL_SEARCH, RETRAINING)


def searched_trials(trials: Sequence[api.Trial]) -> list[api.Trial]:
    """The search trials: the algorithm learns each one's settings and accuracy."""
    return [t for t in trials if mode_of(t) == SEARCH_MODE]


def retrained(trials: Sequence[api.Trial]) -> list[api.Trial]:
    return [t for t in trials if mode_of(t) == RETRAIN]


def planned_trials(spec: api.ExperimentSpec, trials: Sequence[api.Trial] = ()) -> int:
    """Trials a gradient search runs when nothing fails: maxTrials searches + topK retrainings, or fewer
    retrainings once the searches are done and derived fewer distinct cells."""
    assert spec.gradient_search is not None
    retrainings = spec.gradient_search.top_k
    if stage(trials) == RETRAINING:
        retrainings = len(best_cells(spec, trials))
    return spec.budget.max_trials + retrainings


def finished_message(spec: api.ExperimentSpec) -> str:
    assert spec.gradient_search is not None
    top = spec.gradient_search.top_k
    return f"the {top} best derived cells were retrained" if top > 1 else "the best derived cell was retrained"


def stage(trials: Sequence[api.Trial], creates: Sequence[CreateTrial] = ()) -> str:
    return RETRAINING if RETRAIN in modes_of(trials, creates) else CELL_SEARCH


def retrain_parameters(spec: api.ExperimentSpec, search: api.Trial, cell: str) -> dict[str, api.ParameterValue]:
    """The retraining trial of ``cell``: its search's settings but the search-only ones, then ``retrain``'s."""
    assert spec.gradient_search is not None
    kept = {k: v for k, v in search.spec.parameters.items() if k not in SEARCH_ONLY and k != MODE}
    return {**kept, **spec.gradient_search.retrain, CELL: cell, MODE: RETRAIN}


def best_cells(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> list[dict[str, api.ParameterValue]]:
    """The retraining trials' parameters: the ``topK`` distinct derived cells, most accurate search first.

    Distinct: differing in more than the seed (the same cell from two seeds is retrained once, with the
    more accurate search's seed).
    """
    assert spec.gradient_search is not None
    searches = [
        t
        for t in searched_trials(trials)
        if t.phase == api.TrialPhase.SUCCEEDED and "accuracy" in t.status.metrics and cell_of(t.status.metrics)
    ]
    searches.sort(key=lambda t: (-t.status.metrics["accuracy"], t.spec.index))
    picked: dict[str, dict[str, api.ParameterValue]] = {}
    for search in searches:
        cell = cell_of(search.status.metrics)
        assert cell is not None
        parameters = retrain_parameters(spec, search, cell)
        picked.setdefault(_key(parameters), parameters)
        if len(picked) == spec.gradient_search.top_k:
            break
    return list(picked.values())


def next_trials(
    spec: api.ExperimentSpec, experiment: str, trials: Sequence[api.Trial], suggester: Suggester, slots: int
) -> Next:
    """The trials to create now (at most ``slots``), stage by stage.

    ``suggester`` must be synced with ``searched_trials(trials)``.
    """
    assert spec.gradient_search is not None
    create = TrialNamer(experiment, trials).create
    modes = by_mode(trials)
    searches = modes.get(SEARCH_MODE, [])
    wanted = min(slots, spec.budget.max_trials - len(searches))
    configs = suggester.ask(wanted) if wanted > 0 else []
    creates = [create({**spec.gradient_search.search, **config, MODE: SEARCH_MODE}) for config in configs]
    searching = len(searches) + len(creates) < spec.budget.max_trials and not suggester.exhausted
    if creates or searching or any(not t.phase.is_finished for t in searches):
        return Next(creates)

    picks = best_cells(spec, trials)
    if not picks:
        return Next(done=True, problem="no search trial succeeded with a derived cell to retrain")
    retraining = modes.get(RETRAIN, [])
    done = {_key(t.spec.parameters) for t in retraining}
    missing = [p for p in picks if _key(p) not in done]
    creates = [create(p) for p in missing[:slots]]
    return Next(creates, done=not missing and all(t.phase.is_finished for t in retraining))


def _key(parameters: Mapping[str, api.ParameterValue]) -> str:
    """What makes two retrainings the same model: every parameter but the seed (a replicate is no new model)."""
    return retrain_key(parameters, sorted(k for k in parameters if k != SEED))
