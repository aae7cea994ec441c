"""kubenas.search: the Suggester's contract (distinct, idempotent, replayable) and its cache."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nevergrad as ng
import numpy as np
import pytest
from kubenas import algorithms, api, objective, search
from nevergrad.common import errors as ng_errors

P = api.TrialPhase

MIXED = [
    {"name": "lr", "type": "float", "min": 1e-5, "max": 0.1, "scale": "log"},
    {"name": "wd", "type": "float", "min": 0.0, "max": 0.1},
    {"name": "depth", "type": "int", "min": 1, "max": 8},
    {"name": "width", "type": "categorical", "values": [16, 32, 64, 128]},
    {"name": "act", "type": "categorical", "values": ["relu", "gelu", "silu"]},
    {"name": "skip", "type": "categorical", "values": [True, False]},
]
SMALL = [
    {"name": "a", "type": "categorical", "values": ["x", "y"]},
    {"name": "b", "type": "int", "min": 1, "max": 3},
]

DEFAULT = getattr(algorithms, "DEFAULT", "NGOpt")
ALGORITHMS = list(dict.fromkeys(["NGOpt", "RandomSearch", "TwoPointsDE", "CMA", DEFAULT]))


def make_spec(
    algorithm: str = "RandomSearch",
    parameters: Sequence[dict[str, Any]] = MIXED,
    objective_: dict[str, Any] | None = None,
    seed: int | None = 0,
    parallel: int = 4,
    max_trials: int = 200,
) -> api.ExperimentSpec:
    return api.ExperimentSpec.model_validate(
        {
            "objective": objective_ or {"metric": "acc", "goal": "maximize"},
            "parameters": list(parameters),
            "algorithm": {"name": algorithm, "seed": seed},
            "budget": {"maxTrials": max_trials, "parallelTrials": parallel},
            "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
        }
    )


def make_trial(
    index: int,
    parameters: dict[str, Any],
    phase: api.TrialPhase = P.SUCCEEDED,
    metrics: dict[str, float] | None = None,
    curve: Sequence[float] = (),
) -> api.Trial:
    return api.Trial(
        metadata=api.ObjectMeta(name=api.trial_name("exp", index)),
        spec=api.TrialSpec(experiment="exp", index=index, parameters=parameters),
        status=api.TrialStatus(
            phase=phase,
            metrics=metrics or {},
            curve=[api.CurvePoint(step=i + 1, value=v) for i, v in enumerate(curve)],
        ),
    )


def acc(config: dict[str, Any]) -> float:
    """A smooth toy accuracy over MIXED, best near lr=1e-3, depth=4, act!=gelu."""
    return (
        1.0
        - (math.log10(config["lr"]) + 3) ** 2 / 10
        - config["wd"]
        - abs(config["depth"] - 4) / 10
        - 0.1 * (config["act"] == "gelu")
    )


Outcome = Callable[[dict[str, Any]], tuple[api.TrialPhase, dict[str, float]]]


def succeed(config: dict[str, Any]) -> tuple[api.TrialPhase, dict[str, float]]:
    return P.SUCCEEDED, {"acc": acc(config)}


def drive(suggester: search.Suggester, n: int, batch: int = 4, outcome: Outcome = succeed) -> list[api.Trial]:
    """Run ``n`` more trials the way the planner does: sync, ask a batch, finish the batch."""
    trials: list[api.Trial] = []
    while len(trials) < n:
        suggester.sync(trials)
        configs = suggester.ask(min(batch, n - len(trials)))
        assert configs, "a continuous space never runs out"
        start = len(trials)
        for i, config in enumerate(configs):
            phase, metrics = outcome(config)
            trials.append(make_trial(start + i, config, phase, metrics))
    suggester.sync(trials)
    return trials


def keys(space: Any, trials: Sequence[api.Trial]) -> list[str]:
    return [space.key(t.spec.parameters) for t in trials]


# --------------------------------------------------------------------------- contract, every algorithm


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_batch_asks_are_distinct_and_never_repeat_used_configs(algorithm: str) -> None:
    suggester = search.Suggester(make_spec(algorithm, parallel=8))
    trials = drive(suggester, 24, batch=8)
    running = [make_trial(24 + i, c, P.RUNNING) for i, c in enumerate(suggester.ask(8))]
    assert len(running) == 8
    suggester.sync(trials + running)
    fresh = suggester.ask(8)
    used = set(keys(suggester.space, trials + running))
    fresh_keys = [suggester.space.key(c) for c in fresh]
    assert len(fresh) == 8 and len(set(fresh_keys)) == 8
    assert used.isdisjoint(fresh_keys)
    assert len(set(keys(suggester.space, trials))) == len(trials)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_seed_and_history_give_the_same_proposals(algorithm: str) -> None:
    first = drive(search.Suggester(make_spec(algorithm, seed=3)), 12)
    second = drive(search.Suggester(make_spec(algorithm, seed=3)), 12)
    assert [t.spec.parameters for t in first] == [t.spec.parameters for t in second]
    other = drive(search.Suggester(make_spec(algorithm, seed=4)), 12)
    assert [t.spec.parameters for t in first] != [t.spec.parameters for t in other]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rebuild_from_history_loses_nothing_and_repeats_nothing(algorithm: str) -> None:
    spec = make_spec(algorithm)
    original = search.Suggester(spec)

    def outcome(config: dict[str, Any]) -> tuple[api.TrialPhase, dict[str, float]]:
        return (P.FAILED, {}) if config["act"] == "silu" else succeed(config)

    trials = drive(original, 20, outcome=outcome)
    trials += [make_trial(20 + i, c, P.RUNNING) for i, c in enumerate(original.ask(3))]
    trials.append(make_trial(23, original.ask(1)[0], P.STOPPED))
    original.sync(trials)

    rebuilt = search.Suggester(spec, replay_batch=8)
    told = rebuilt.sync(trials)
    finished = [t.name for t in trials if t.phase.is_finished]
    assert told == finished  # every finished trial accounted for, in order
    assert rebuilt.told == original.told
    for _ in range(5):
        rebuilt.sync(trials)
    assert rebuilt.pending_replay == 0
    assert rebuilt.num_optimizer_tells == 20  # everything but the Stopped trial reached the optimizer
    used = set(keys(rebuilt.space, trials))
    assert rebuilt.used == len(used)
    proposals = [rebuilt.space.key(c) for c in rebuilt.ask(8)]
    assert used.isdisjoint(proposals) and len(set(proposals)) == 8


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sync_is_idempotent(algorithm: str) -> None:
    suggester = search.Suggester(make_spec(algorithm))
    trials = drive(suggester, 8)
    tells = suggester.num_optimizer_tells
    assert suggester.sync(trials) == []
    assert suggester.sync(list(reversed(trials))) == []
    assert suggester.num_optimizer_tells == tells == 8


# --------------------------------------------------------------------------- finite spaces


def test_small_discrete_space_is_exhausted() -> None:
    suggester = search.Suggester(make_spec("NGOpt", SMALL))
    first = suggester.ask(4)
    running = [make_trial(i, c, P.RUNNING) for i, c in enumerate(first)]
    suggester.sync(running)
    rest = suggester.ask(10)
    assert len(first) == 4 and len(rest) == 2
    assert suggester.exhausted
    everything = {suggester.space.key(c) for c in first + rest}
    assert everything == {suggester.space.key(c) for c in suggester.space.configurations()}
    assert suggester.ask(1) == []


def test_conditional_space_counts_only_active_configurations() -> None:
    params = [
        {"name": "model", "type": "categorical", "values": ["cnn", "mlp"]},
        {"name": "kernel", "type": "int", "min": 3, "max": 5, "when": {"model": ["cnn"]}},
    ]
    suggester = search.Suggester(make_spec("RandomSearch", params))
    configs = suggester.ask(10)
    assert len(configs) == 4 and suggester.exhausted
    assert {"model": "mlp"} in configs


def test_exhaustion_is_reached_through_finished_trials_after_a_rebuild() -> None:
    spec = make_spec("RandomSearch", SMALL)
    configs = search.Suggester(spec).ask(6)
    trials = [make_trial(i, c, P.SUCCEEDED, {"acc": i}) for i, c in enumerate(configs)]
    rebuilt = search.Suggester(spec)
    rebuilt.sync(trials)
    assert rebuilt.exhausted and rebuilt.ask(2) == []


# --------------------------------------------------------------------------- what is told


class Spy:
    """Builds a RandomSearch and records every (config, loss) the Suggester tells it."""

    def __init__(self, name: str = "RandomSearch") -> None:
        self.name = name
        self.told: list[tuple[dict[str, Any], Any]] = []
        self.space: Any = None

    def __call__(self, _: str, parametrization: ng.p.Parameter, budget: int | None, workers: int) -> Any:
        opt = ng.optimizers.registry[self.name](parametrization=parametrization, budget=budget, num_workers=workers)
        tell = opt.tell

        def spy(candidate: ng.p.Parameter, loss: Any, *args: Any, **kwargs: Any) -> None:
            self.told.append((candidate.value, loss))
            tell(candidate, loss, *args, **kwargs)

        opt.tell = spy
        return opt


def test_penalties_order_feasible_infeasible_failed_and_skip_stopped() -> None:
    spy = Spy()
    spec = make_spec(objective_={"metric": "acc", "goal": "maximize", "constraints": [{"metric": "ms", "max": 5}]})
    suggester = search.Suggester(spec, factory=spy)
    c = suggester.ask(7)
    trials = [
        make_trial(0, c[0], P.SUCCEEDED, {"acc": 0.9, "ms": 4}),
        make_trial(1, c[1], P.SUCCEEDED, {"acc": 0.5, "ms": 1}),
        make_trial(2, c[2], P.SUCCEEDED, {"acc": 0.95, "ms": 5.5}),  # slightly infeasible
        make_trial(3, c[3], P.SUCCEEDED, {"acc": 0.95, "ms": 50}),  # far infeasible
        make_trial(4, c[4], P.FAILED),
        make_trial(5, c[5], P.EARLY_STOPPED, curve=[0.3, 0.8]),
        make_trial(6, c[6], P.STOPPED),
    ]
    assert suggester.sync(trials) == [t.name for t in trials]
    losses = [loss for _, loss in spy.told]
    assert len(losses) == 6  # the Stopped trial is not told
    ok_good, ok_bad, slightly, far, failed, early = losses
    assert ok_good == -0.9 and ok_bad == -0.5
    assert max(ok_good, ok_bad) < slightly < far < failed
    assert early == pytest.approx(max(-0.8, float(np.median([-0.9, -0.5]))))  # never better than the median


def test_weighted_objective_tells_the_weighted_loss() -> None:
    spy = Spy()
    obj = {
        "metrics": [
            {"name": "acc", "goal": "maximize", "weight": 1.0},
            {"name": "ms", "goal": "minimize", "weight": 0.1},
        ],
        "strategy": "weighted",
    }
    suggester = search.Suggester(make_spec(objective_=obj), factory=spy)
    c = suggester.ask(1)[0]
    suggester.sync([make_trial(0, c, P.SUCCEEDED, {"acc": 0.9, "ms": 3.0})])
    assert spy.told == [(spy.told[0][0], pytest.approx(-(0.9 - 0.3)))]


PARETO = {"metrics": [{"name": "acc", "goal": "maximize"}, {"name": "ms", "goal": "minimize"}], "strategy": "pareto"}


def pareto_outcome(config: dict[str, Any]) -> tuple[api.TrialPhase, dict[str, float]]:
    size = config["depth"] * config["width"]
    return P.SUCCEEDED, {"acc": acc(config) + 0.3 * math.log2(size) / 10, "ms": float(size)}


@pytest.mark.parametrize("algorithm", ["NGOpt", "RandomSearch"])
def test_pareto_objective_uses_nevergrads_multiobjective_front(algorithm: str) -> None:
    spy = Spy(algorithm)
    suggester = search.Suggester(make_spec(algorithm, objective_=PARETO), factory=spy)
    trials = drive(suggester, 40, outcome=pareto_outcome)
    assert all(isinstance(loss, np.ndarray) and loss.shape == (2,) for _, loss in spy.told)
    assert suggester.optimizer.num_objectives == 2
    front = suggester.pareto_front()
    assert front
    true_front = {suggester.space.key(t.spec.parameters) for t in objective.pareto_front(spec_objective(), trials)}
    assert {suggester.space.key(c) for c in front} <= true_front


def spec_objective() -> api.Objective:
    return make_spec(objective_=PARETO).objective


def test_failures_steer_proposals_away() -> None:
    """Configurations with lr above 1e-2 crash: later proposals avoid them more than early ones."""

    def outcome(config: dict[str, Any]) -> tuple[api.TrialPhase, dict[str, float]]:
        return (P.FAILED, {}) if config["lr"] > 1e-2 else succeed(config)

    suggester = search.Suggester(make_spec("TwoPointsDE", seed=1))
    trials = drive(suggester, 80, outcome=outcome)
    failed = [t.phase == P.FAILED for t in trials]
    assert sum(failed[40:]) < sum(failed[:40])


def test_constraint_violations_steer_proposals_toward_feasibility() -> None:
    obj = {"metric": "acc", "goal": "maximize", "constraints": [{"metric": "params", "max": 96}]}

    def outcome(config: dict[str, Any]) -> tuple[api.TrialPhase, dict[str, float]]:
        # Bigger networks score better but break the budget: the optimum sits on the constraint.
        params = config["depth"] * config["width"]
        return P.SUCCEEDED, {"acc": acc(config) + params / 1000, "params": params}

    suggester = search.Suggester(make_spec("TwoPointsDE", seed=2, objective_=obj))
    trials = drive(suggester, 80, outcome=outcome)
    feasible = [objective.is_feasible(suggester.spec.objective, t.status.metrics) for t in trials]
    assert sum(feasible[40:]) > sum(feasible[:40])
    assert objective.best_trial(suggester.spec.objective, trials) is not None


# --------------------------------------------------------------------------- replay and bounds


def test_replay_is_paced_best_first_and_completes() -> None:
    spec = make_spec("RandomSearch")
    trials = drive(search.Suggester(spec), 50)
    rebuilt = search.Suggester(spec, replay_batch=10)
    assert len(rebuilt.sync(trials)) == 50
    assert rebuilt.num_optimizer_tells == 10 and rebuilt.pending_replay == 40
    best = objective.best_trial(spec.objective, trials)
    assert best is not None
    best_key = rebuilt.space.key(best.spec.parameters)
    archive = rebuilt.optimizer.archive.values()
    told_keys = {rebuilt.space.key(rebuilt.space.decode(mv.parameter.value)) for mv in archive}
    assert best_key in told_keys
    # Even mid-replay nothing finished is proposed again.
    assert {rebuilt.space.key(c) for c in rebuilt.ask(4)}.isdisjoint(keys(rebuilt.space, trials))
    for _ in range(4):
        rebuilt.sync(trials)
    assert rebuilt.pending_replay == 0 and rebuilt.num_optimizer_tells == 50


@pytest.mark.parametrize("algorithm", ["NGOpt", "TwoPointsDE", "CMA"])
def test_every_optimizer_archive_stays_bounded(algorithm: str) -> None:
    suggester = search.Suggester(make_spec(algorithm), archive_size=8)
    drive(suggester, 60)
    # Nevergrad's pruning keeps the best archive_size by each of three criteria: at most 3x.
    for opt in search._optimizers(suggester.optimizer):
        assert len(opt.archive) <= 3 * 8, type(opt).__name__


def test_optimizers_refusing_tell_not_asked_still_never_repeat() -> None:
    class Refusing(ng.optimizers.base.Optimizer):
        def _internal_ask_candidate(self) -> ng.p.Parameter:
            child = self.parametrization.spawn_child()
            child.mutate()
            return child

        def _internal_tell_not_asked(self, candidate: ng.p.Parameter, loss: float) -> None:
            raise ng_errors.TellNotAskedNotSupportedError

    spec = make_spec(parameters=SMALL)

    def factory(_: str, param: ng.p.Parameter, budget: int | None, workers: int) -> ng.optimizers.base.Optimizer:
        return Refusing(param, budget=budget, num_workers=workers)

    trials = [make_trial(i, c, P.SUCCEEDED, {"acc": i}) for i, c in enumerate(search.Suggester(spec).ask(3))]
    suggester = search.Suggester(spec, factory=factory)
    assert len(suggester.sync(trials)) == 3
    fresh = suggester.ask(5)
    assert len(fresh) == 3 and suggester.exhausted
    assert {suggester.space.key(c) for c in fresh}.isdisjoint(keys(suggester.space, trials))


def test_trials_outside_the_space_are_accounted_without_crashing() -> None:
    suggester = search.Suggester(make_spec(parameters=SMALL))
    trials = [make_trial(0, {"a": "zzz", "b": 1}), make_trial(1, {"a": "x", "b": 99}), make_trial(2, {"a": "x"})]
    assert suggester.sync(trials) == ["exp-0", "exp-1", "exp-2"]
    assert len(suggester.ask(6)) == 6


def test_ask_zero_and_unknown_algorithm() -> None:
    assert search.Suggester(make_spec()).ask(0) == []
    with pytest.raises(ValueError, match="unknown algorithm"):
        search.Suggester(make_spec("NoSuchOptimizer"))


# --------------------------------------------------------------------------- cache


def test_cache_keeps_recent_suggesters_and_rebuilds_stale_ones() -> None:
    built: list[api.ExperimentSpec] = []

    def factory(spec: api.ExperimentSpec) -> search.Suggester:
        built.append(spec)
        return search.Suggester(spec)

    cache = search.SuggesterCache(max_entries=2, factory=factory)
    a, b, c = make_spec(seed=1), make_spec(seed=2), make_spec(seed=3)
    sa = cache.get("a", a)
    assert cache.get("a", a) is sa
    cache.get("b", b)
    cache.get("a", a)  # a is now the most recent
    cache.get("c", c)  # evicts b
    assert "a" in cache and "b" not in cache and len(cache) == 2
    assert cache.get("a", a) is sa
    changed = make_spec(seed=1, max_trials=500)
    assert cache.get("a", changed) is not sa  # spec changed: rebuilt
    cache.discard("a")
    assert "a" not in cache
    assert len(built) == 4
    with pytest.raises(ValueError):
        search.SuggesterCache(max_entries=0)


def test_cache_releasing_memory_keeps_its_entries() -> None:
    cache = search.SuggesterCache(max_entries=4, trim_every=1)
    spec = make_spec(parameters=SMALL)
    first = cache.get("a", spec)
    assert cache.get("a", spec) is first and len(cache) == 1


# --------------------------------------------------------------------------- the overhead benchmark


def test_overhead_benchmark_runs_in_quick_mode(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "suggest_overhead.py"
    module_spec = importlib.util.spec_from_file_location("suggest_overhead", path)
    assert module_spec is not None and module_spec.loader is not None
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)
    results = bench.main(["--quick", "--in-process", "--algorithm", "RandomSearch"])
    assert [row["trials"] for row in results["scaling"]["rows"]] == [10, 30]
    assert results["scaling"]["rebuild"]["extra_syncs"] >= 0
    assert results["fleet"]["experiments"] == 3
    assert "| 30 |" in capsys.readouterr().out


def test_pareto_failures_and_violations_are_told_as_loss_vectors() -> None:
    spy = Spy()
    obj = {**PARETO, "constraints": [{"metric": "ms", "max": 100}]}
    suggester = search.Suggester(make_spec(objective_=obj), factory=spy)
    c = suggester.ask(3)
    suggester.sync(
        [
            make_trial(0, c[0], P.SUCCEEDED, {"acc": 0.9, "ms": 50}),
            make_trial(1, c[1], P.SUCCEEDED, {"acc": 0.95, "ms": 500}),
            make_trial(2, c[2], P.FAILED),
        ]
    )
    good, infeasible, failed = (np.asarray(loss) for _, loss in spy.told)
    assert good.tolist() == [-0.9, 50]
    assert (infeasible > good).all() and (failed > infeasible).all()


def test_unseeded_suggester_still_proposes_distinct_configs() -> None:
    suggester = search.Suggester(make_spec(seed=None))
    configs = suggester.ask(6)
    assert len({suggester.space.key(c) for c in configs}) == 6


WIDEST = api.spec.MAX_PARAMETER_BOUND


@pytest.mark.parametrize(
    "parameter",
    [
        {"name": "f", "type": "float", "min": -WIDEST, "max": WIDEST},
        {"name": "i", "type": "int", "min": -WIDEST, "max": WIDEST},
        {"name": "l", "type": "float", "min": 5e-324, "max": WIDEST, "scale": "log"},
        {"name": "n", "type": "int", "min": 1, "max": WIDEST, "scale": "log"},
    ],
    ids=lambda p: p["name"],
)
@pytest.mark.parametrize("algorithm", ["SurrogateLocalSearch", "NGOpt", "CMA"])
def test_the_widest_bounds_allowed_are_searched_without_overflow(parameter: dict[str, Any], algorithm: str) -> None:
    """Wider bounds (up to ±1e308 passed validation once) made the sampler overflow; the API refuses them now."""
    suggester = search.Suggester(make_spec(algorithm, [parameter]))
    proposals = suggester.ask(4)
    assert len(proposals) == 4
    for values in proposals:
        value = values[parameter["name"]]
        assert parameter["min"] <= value <= parameter["max"]
        assert isinstance(value, int) == (parameter["type"] == "int")
