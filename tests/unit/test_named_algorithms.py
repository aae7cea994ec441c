"""The search families users ask for by name: ``RegularizedEvolution`` and ``PolicyGradient`` (no timing).

Their behaviour on the optimizer (tournaments, aging, one-dimension mutations; the policy moving
towards rewarded choices and good values), and through the operator's Suggester: parallel
asks, replays of results never asked, constraints, seeds, and ``kubenas validate``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import nevergrad as ng
import numpy as np
import pytest
from invalid_manifests import SINGLE
from kubenas import algorithms, api, search, validation
from kubenas.algorithms import attachments
from kubenas.space import SearchSpace

NAMED = ("RegularizedEvolution", "PolicyGradient")

CATEGORICAL = [
    {"name": f"op{i}", "type": "categorical", "values": ["none", "skip", "conv1", "conv3"]} for i in range(6)
]
MIXED = [
    {"name": "lr", "type": "float", "min": 1e-5, "max": 0.1, "scale": "log"},
    {"name": "dropout", "type": "float", "min": 0.0, "max": 0.6},
    {"name": "units", "type": "int", "min": 16, "max": 512, "scale": "log"},
    {"name": "layers", "type": "int", "min": 1, "max": 4},
    {"name": "act", "type": "categorical", "values": ["relu", "tanh", "gelu"]},
    {"name": "batch", "type": "categorical", "values": [8, 16, 32, 64]},
]
CONDITIONAL = [
    {"name": "block", "type": "categorical", "values": ["plain", "residual"]},
    {"name": "skip_every", "type": "int", "min": 1, "max": 3, "when": {"block": ["residual"]}},
    {"name": "width", "type": "int", "min": 8, "max": 64},
]


def spec(
    parameters: Sequence[dict[str, Any]],
    name: str,
    parallel: int = 1,
    seed: int = 0,
    constraints: list[dict[str, Any]] | None = None,
) -> api.ExperimentSpec:
    objective: dict[str, Any] = {"metric": "acc", "goal": "maximize"}
    if constraints:
        objective["constraints"] = constraints
    return api.ExperimentSpec.model_validate(
        {
            "objective": objective,
            "parameters": list(parameters),
            "algorithm": {"name": name, "seed": seed},
            "budget": {"maxTrials": 500, "parallelTrials": parallel},
            "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
        }
    )


def accuracy(config: dict[str, Any]) -> float:
    if "op0" in config:
        return sum({"conv3": 1.0, "conv1": 0.6, "skip": 0.3, "none": 0.0}[str(config[f"op{i}"])] for i in range(6))
    if "lr" in config:
        return -((math.log10(float(config["lr"])) + 3.0) ** 2) - float(config["dropout"]) + (config["act"] == "relu")
    return float(config["width"]) / 64 + (0.5 if config.get("skip_every") == 2 else 0.0)


def trial(index: int, config: dict[str, Any], metrics: dict[str, float] | None = None) -> api.Trial:
    metrics = metrics if metrics is not None else {"acc": accuracy(config)}
    return api.Trial.model_validate(
        {
            "metadata": {"name": f"e-{index}"},
            "spec": {"experiment": "e", "index": index, "parameters": config},
            "status": {"phase": "Succeeded", "reason": "Completed", "metrics": metrics},
        }
    )


def run(
    suggester: search.Suggester,
    n_trials: int,
    batch: int,
    trials: list[api.Trial] | None = None,
    metrics: Callable[[dict[str, Any]], dict[str, float]] | None = None,
) -> list[api.Trial]:
    trials = trials if trials is not None else []
    while len(trials) < n_trials:
        configs = suggester.ask(batch)
        assert len(configs) == batch
        trials += [trial(len(trials) + i, c, metrics(c) if metrics else None) for i, c in enumerate(configs)]
        suggester.sync(trials)
    return trials


def drained(suggester: search.Suggester, trials: list[api.Trial]) -> search.Suggester:
    suggester.sync(trials)
    while suggester.pending_replay:
        suggester.sync(trials)
    return suggester


def in_space(space: SearchSpace, config: dict[str, Any]) -> bool:
    try:
        return space.normalise(config) == config
    except ValueError:
        return False


def optimizer(name: str, parametrization: ng.p.Parameter, seed: int = 0, **settings: Any) -> Any:
    parametrization.random_state = np.random.RandomState(seed)
    factory = algorithms.RegularizedEvolution if name == "RegularizedEvolution" else algorithms.PolicyGradient
    return factory(**settings)(parametrization, budget=None, num_workers=1)


def tell(opt: Any, value: dict[str, Any], loss: float, index: int | None = None) -> None:
    candidate = opt.parametrization.spawn_child(new_value=value)
    if index is not None:
        attachments.attach_trial_index(candidate, index)
    opt.tell(candidate, loss)


def differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in a if a[k] != b[k]]


# --------------------------------------------------------------------------- both, through the Suggester


def test_named_algorithms_are_registered_and_validate() -> None:
    names = algorithms.known_names()
    for name in NAMED:
        assert name in names
        manifest = copy.deepcopy(SINGLE)
        manifest["spec"]["algorithm"]["name"] = name
        assert validation.validate_document(manifest) == []
    manifest = copy.deepcopy(SINGLE)
    manifest["spec"]["algorithm"]["name"] = "PolicyGradiant"
    [problem] = validation.validate_document(manifest)
    assert problem.path == "spec.algorithm.name" and "PolicyGradient" in problem.message


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize(("parameters", "batch"), [(MIXED, 1), (MIXED, 4), (CATEGORICAL, 3), (CONDITIONAL, 2)])
def test_parallel_asks_are_distinct_and_in_the_space(name: str, parameters: list[dict[str, Any]], batch: int) -> None:
    suggester = search.Suggester(spec(parameters, name, parallel=batch))
    trials = run(suggester, 48, batch)
    keys = [suggester.space.key(t.spec.parameters) for t in trials]
    assert len(set(keys)) == len(keys)
    assert all(in_space(suggester.space, t.spec.parameters) for t in trials)


@pytest.mark.parametrize("name", NAMED)
def test_same_seed_same_proposals_other_seed_others(name: str) -> None:
    def proposals(seed: int) -> list[dict[str, Any]]:
        return [t.spec.parameters for t in run(search.Suggester(spec(MIXED, name, seed=seed)), 30, 2)]

    assert proposals(3) == proposals(3)
    assert proposals(3) != proposals(4)


@pytest.mark.parametrize("name", NAMED)
def test_a_rebuild_from_history_repeats_nothing_and_keeps_learning(name: str) -> None:
    first = search.Suggester(spec(CATEGORICAL, name, parallel=2))
    trials = run(first, 40, 2)
    rebuilt = drained(search.Suggester(spec(CATEGORICAL, name, parallel=2), replay_batch=7), trials)
    assert rebuilt.num_optimizer_tells == 40
    trials = run(rebuilt, 120, 2, trials)
    keys = [rebuilt.space.key(t.spec.parameters) for t in trials]
    assert len(set(keys)) == len(keys)
    scores = [accuracy(t.spec.parameters) for t in trials]
    assert np.mean(scores[40:80]) > 2.85 + 1.0  # it carries on from what it learnt: random proposals average 2.85


@pytest.mark.parametrize("name", NAMED)
def test_a_replay_best_first_rebuilds_the_state_the_search_had(name: str) -> None:
    """Results carry their trial index: a rebuild ends where the uninterrupted search was."""
    first = search.Suggester(spec(MIXED, name, parallel=3))
    trials = run(first, 45, 3)
    rebuilt = drained(search.Suggester(spec(MIXED, name, parallel=3), replay_batch=5), trials)
    if name == "RegularizedEvolution":
        # The same members (a configuration read back from a trial is its value to 12 digits).
        [before, after] = [o.optimizer.population for o in (first, rebuilt)]
        assert [loss for _, loss in after] == [loss for _, loss in before]
        np.testing.assert_allclose([g for g, _ in after], [g for g, _ in before], rtol=1e-9)
    else:
        for a, b in zip(first.optimizer.probabilities(), rebuilt.optimizer.probabilities(), strict=True):
            np.testing.assert_allclose(a, b)
        assert first.optimizer.baseline == pytest.approx(rebuilt.optimizer.baseline)


def state(suggester: search.Suggester) -> list[Any]:
    opt = suggester.optimizer
    if isinstance(opt, algorithms.evolution._RegularizedEvolution):
        return [*(g for g, _ in opt.population), [loss for _, loss in opt.population]]
    return [*opt.probabilities(), opt.baseline]


@pytest.mark.parametrize("name", NAMED)
def test_proposals_during_a_replay_leave_it_to_end_as_a_plain_replay(name: str) -> None:
    """A rebuilt search proposes while older results still wait to be told; a proposal that repeats one
    of them is told its known result with its trial's index, so nothing old comes back as new."""
    first = search.Suggester(spec(CATEGORICAL, name, parallel=3))
    trials = run(first, 60, 3)
    rebuilt = search.Suggester(spec(CATEGORICAL, name, parallel=3), replay_batch=4)
    rebuilt.sync(trials)
    trials = run(rebuilt, 90, 3, trials)
    replayed = drained(search.Suggester(spec(CATEGORICAL, name, parallel=3)), trials)
    for a, b in zip(state(drained(rebuilt, trials)), state(replayed), strict=True):
        np.testing.assert_allclose(a, b)


@pytest.mark.parametrize("name", NAMED)
def test_a_constrained_objective_moves_towards_feasible_results(name: str) -> None:
    """Violations reach these algorithms as penalised losses: they learn to avoid them."""
    parameters = [*CONDITIONAL[:2], {"name": "size", "type": "float", "min": 0.0, "max": 1.0}]
    constraints = [{"metric": "params", "max": 20.0}]  # size <= 0.2: a fifth of the space

    def metrics(config: dict[str, Any]) -> dict[str, float]:
        return {"acc": 0.5 if config.get("skip_every") == 2 else 0.0, "params": 100 * float(config["size"])}

    suggester = search.Suggester(spec(parameters, name, constraints=constraints))
    trials = run(suggester, 120, 1, metrics=metrics)
    feasible = [float(t.spec.parameters["size"]) <= 0.2 for t in trials]
    assert sum(feasible[80:]) >= 30  # of the last 40; random search: 8


# --------------------------------------------------------------------------- RegularizedEvolution


def choices(dims: int = 6, size: int = 5) -> ng.p.Dict:
    return ng.p.Dict(**{f"d{i}": ng.p.Choice(list(range(size))) for i in range(dims)})


def test_evolution_removes_the_oldest_not_the_worst() -> None:
    opt = optimizer("RegularizedEvolution", choices(), population=3, tournament=2)
    values = [{f"d{i}": v for i in range(6)} for v in range(4)]
    for index, (value, loss) in enumerate(zip(values, [0.0, 5.0, 3.0, 4.0], strict=True)):
        tell(opt, value, loss, index)
    # The best (loss 0) was the oldest: it is gone; the worst (loss 5) stays.
    assert sorted(loss for _, loss in opt.population) == [3.0, 4.0, 5.0]
    # A result older than every member arrives late (a replay): it had aged out already.
    tell(opt, {f"d{i}": 4 for i in range(6)}, -1.0, index=-1)
    assert sorted(loss for _, loss in opt.population) == [3.0, 4.0, 5.0]


def parent_of(child: dict[str, Any], members: list[dict[str, Any]]) -> int:
    [parent] = [i for i, m in enumerate(members) if len(differing(child, m)) == 1]
    return parent


def test_the_tournament_picks_the_best_of_its_sample() -> None:
    members = [{f"d{i}": v for i in range(8)} for v in range(4)]  # any two differ in every dimension
    losses = [2.0, 0.0, 3.0, 1.0]
    parents: dict[int, list[int]] = {}
    for tournament in (1, 2, 4):
        opt = optimizer("RegularizedEvolution", choices(8, 10), seed=tournament, population=4, tournament=tournament)
        for index, (value, loss) in enumerate(zip(members, losses, strict=True)):
            tell(opt, value, loss, index)
        parents[tournament] = [parent_of(opt.ask().value, members) for _ in range(48)]
    assert set(parents[4]) == {1}  # the whole population: always the best
    assert 2 not in parents[2] and set(parents[2]) == {0, 1, 3}  # the worst never wins a pair
    assert parents[2].count(1) > max(parents[2].count(3), parents[2].count(0))  # the best wins 3 pairs of 6
    assert set(parents[1]) == {0, 1, 2, 3}  # a sample of one: any member


def test_children_differ_from_their_parent_in_one_dimension_within_bounds() -> None:
    space = SearchSpace([api.Parameter.model_validate(p) for p in MIXED])
    opt = optimizer("RegularizedEvolution", space.parametrization(), population=5, tournament=5)
    first = [opt.ask() for _ in range(5)]  # the random start
    members = [space.decode(c.value) for c in first]
    for i, c in enumerate(first):
        opt.tell(c, float(i))
    best = members[0]
    changed: set[str] = set()
    for _ in range(80):
        child = space.decode(opt.ask().value)
        assert in_space(space, child)
        [dimension] = differing(child, best)
        changed.add(dimension)
    assert changed == {p["name"] for p in MIXED}  # every kind of dimension mutates


# --------------------------------------------------------------------------- PolicyGradient


def test_the_policy_moves_towards_a_rewarded_choice() -> None:
    opt = optimizer("PolicyGradient", choices(3))
    start = opt.probabilities()
    for _ in range(60):
        candidate = opt.ask()
        opt.tell(candidate, -float(sum(v == 2 for v in candidate.value.values())))
    for before, after in zip(start, opt.probabilities(), strict=True):
        assert before[2] == pytest.approx(0.2)
        assert after.argmax() == 2 and after[2] > 0.5


def best_found(name: str | None, seed: int, evaluations: int) -> float:
    """Best score found on a separable toy (8 choices of 4 values, one right value each, noisy)."""
    rng = np.random.default_rng(seed)
    right = rng.integers(4, size=8)

    def score(choices: np.ndarray) -> float:
        return float((choices == right).sum())

    if name is None:
        return max(score(rng.integers(4, size=8)) for _ in range(evaluations))
    param = ng.p.Dict(**{f"d{i}": ng.p.Choice(list(range(4))) for i in range(8)})
    opt = optimizer(name, param, seed=seed)
    best = 0.0
    for _ in range(evaluations):
        candidate = opt.ask()
        value = score(np.array([candidate.value[f"d{i}"] for i in range(8)]))
        best = max(best, value)
        opt.tell(candidate, -value + rng.normal() * 0.5)
    return best


def test_the_policy_beats_random_search_on_a_separable_toy() -> None:
    seeds = range(8)
    policy = np.mean([best_found("PolicyGradient", s, 80) for s in seeds])
    random = np.mean([best_found(None, s, 80) for s in seeds])
    assert policy >= random + 1.0  # of 8 right values, in 80 evaluations: random search finds 5, the policy 7


def test_the_baseline_is_a_moving_average_of_the_rank_rewards() -> None:
    opt = optimizer("PolicyGradient", choices(2), baseline_decay=0.5)
    tell(opt, {"d0": 0, "d1": 0}, 1.0, 0)  # alone: reward 0
    assert opt.baseline == 0.0
    tell(opt, {"d0": 1, "d1": 1}, 0.0, 1)  # best of 2: reward 0.5 - 0.5/2 = 0.25
    assert opt.baseline == pytest.approx(0.125)
    tell(opt, {"d0": 2, "d1": 2}, 2.0, 2)  # worst of 3: reward 0.5 - 2.5/3
    assert opt.baseline == pytest.approx(0.5 * 0.125 + 0.5 * (0.5 - 2.5 / 3))


def test_the_gaussian_mean_moves_towards_good_values_and_narrows() -> None:
    opt = optimizer("PolicyGradient", ng.p.Dict(x=ng.p.Scalar(lower=0.0, upper=10.0)))
    [(mean, std)] = opt.probabilities()
    assert (mean, std) == (pytest.approx(0.5), pytest.approx(0.3))
    for _ in range(80):
        candidate = opt.ask()
        opt.tell(candidate, (candidate.value["x"] - 8.5) ** 2)
    [(mean, std)] = opt.probabilities()
    assert mean == pytest.approx(0.85, abs=0.08) and std < 0.15


def test_results_never_asked_teach_the_policy() -> None:
    opt = optimizer("PolicyGradient", choices(2))
    rng = np.random.default_rng(0)
    for index in range(40):
        value = {"d0": int(rng.integers(5)), "d1": int(rng.integers(5))}
        tell(opt, value, 0.0 if value["d0"] == 3 else 1.0, index)
    assert opt.probabilities()[0].argmax() == 3
    assert opt.probabilities()[0][3] > 0.4


def test_the_policy_learns_results_in_trial_order_whatever_order_they_arrive_in() -> None:
    def learnt(order: Sequence[int]) -> list[Any]:
        opt = optimizer("PolicyGradient", ng.p.Dict(a=ng.p.Choice(list(range(4))), x=ng.p.Scalar(lower=0, upper=1)))
        asked = [opt.ask() for _ in range(70)]  # parallel asks: all outstanding at once
        for index in order:
            candidate = asked[index]
            attachments.attach_trial_index(candidate, index)
            opt.tell(candidate, -float(candidate.value["a"] == 1) + candidate.value["x"])
        return opt.probabilities()

    in_order = learnt(range(70))
    shuffled = learnt(np.random.default_rng(1).permutation(70).tolist())
    assert in_order[0].argmax() == 1
    for a, b in zip(in_order, shuffled, strict=True):
        np.testing.assert_allclose(a, b)
