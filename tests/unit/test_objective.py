"""kubenas.objective: objective values, feasibility, losses, best trial and Pareto front."""

from __future__ import annotations

import math
from typing import Any

import pytest
from kubenas import api, objective

S = api.TrialPhase


def trial(index: int, metrics: dict[str, float], phase: api.TrialPhase = S.SUCCEEDED) -> api.Trial:
    return api.Trial(
        metadata=api.ObjectMeta(name=f"exp-{index}"),
        spec=api.TrialSpec(experiment="exp", index=index, parameters={"x": index}),
        status=api.TrialStatus(phase=phase, metrics=metrics),
    )


def single(goal: str = "maximize", **kw: Any) -> api.Objective:
    return api.Objective(metric="acc", goal=goal, **kw)


def multi(strategy: str, **kw: Any) -> api.Objective:
    metrics = [
        api.ObjectiveMetric(name="acc", goal="maximize", weight=2.0 if strategy == "weighted" else None),
        api.ObjectiveMetric(name="latency", goal="minimize", weight=0.5 if strategy == "weighted" else None),
    ]
    return api.Objective(metrics=metrics, strategy=strategy, **kw)


def test_single_value_and_loss_follow_the_goal() -> None:
    assert objective.scalar_value(single(), {"acc": 0.9}) == 0.9
    assert objective.loss_vector(single(), {"acc": 0.9}) == [-0.9]
    assert objective.loss_vector(single("minimize"), {"acc": 0.9}) == [0.9]
    assert objective.direction(single("minimize")) == api.Goal.MINIMIZE


@pytest.mark.parametrize("metrics", [{}, {"acc": math.nan}, {"acc": math.inf}, {"other": 1.0}])
def test_missing_or_non_finite_metrics_have_no_value(metrics: dict[str, float]) -> None:
    assert objective.scalar_value(single(), metrics) is None
    assert objective.loss_vector(single(), metrics) is None


def test_weighted_value_flips_minimised_metrics() -> None:
    obj = multi("weighted")
    assert objective.direction(obj) == api.Goal.MAXIMIZE
    assert objective.scalar_value(obj, {"acc": 0.9, "latency": 4.0}) == pytest.approx(2.0 * 0.9 - 0.5 * 4.0)
    assert objective.loss_vector(obj, {"acc": 0.9, "latency": 4.0}) == [pytest.approx(-(1.8 - 2.0))]
    assert objective.scalar_value(obj, {"acc": 0.9}) is None


def test_pareto_loss_has_one_entry_per_metric() -> None:
    obj = multi("pareto")
    assert objective.loss_vector(obj, {"acc": 0.9, "latency": 4.0}) == [-0.9, 4.0]
    assert objective.loss_vector(obj, {"acc": 0.9}) is None


def test_constraints_bound_feasibility_inclusively() -> None:
    obj = single(constraints=[api.Constraint(metric="params", max=200_000), api.Constraint(metric="lat", min=1)])
    assert objective.is_feasible(obj, {"acc": 1, "params": 200_000, "lat": 1})
    assert not objective.is_feasible(obj, {"acc": 1, "params": 200_001, "lat": 1})
    assert not objective.is_feasible(obj, {"acc": 1, "params": 10, "lat": 0.5})
    assert not objective.is_feasible(obj, {"acc": 1, "lat": 2})  # a missing constrained metric fails
    assert objective.violations(obj, {"params": 200_100, "lat": 0.5}) == [100, 0.5]


def test_constraint_margins_are_signed_and_relative_to_the_bound() -> None:
    obj = single(constraints=[api.Constraint(metric="params", max=200_000), api.Constraint(metric="lat", min=2)])
    assert objective.constraint_margins(obj, {"params": 250_000, "lat": 3}) == [0.25, -0.5]
    assert objective.constraint_margins(obj, {"params": 200_000, "lat": 2}) == [0.0, 0.0]  # on the bound: met
    assert objective.constraint_margins(obj, {"lat": 1}) == [math.inf, 0.5]


def test_reported_violation_only_for_stop_early_constraints() -> None:
    obj = single(
        constraints=[
            api.Constraint(metric="params", max=200_000, stop_early=True),
            api.Constraint(metric="flops", min=10, stop_early=True),
            api.Constraint(metric="latency", max=5),  # measured at the end: never judged while running
        ]
    )
    assert objective.stop_early_metrics(obj) == {"params", "flops"}
    assert objective.reported_violation(obj, {"params": 200_000, "flops": 10, "latency": 99}) is None
    assert objective.reported_violation(obj, {"params": 250_000}) == (
        "params = 250000 reported while running, above the constraint's max 200000"
    )
    assert "below the constraint's min 10" in (objective.reported_violation(obj, {"flops": 3}) or "")
    assert objective.reported_violation(obj, {}) is None


def test_best_trial_skips_infeasible_failed_and_valueless_trials() -> None:
    obj = single(constraints=[api.Constraint(metric="params", max=100)])
    trials = [
        trial(0, {"acc": 0.7, "params": 50}),
        trial(1, {"acc": 0.99, "params": 500}),  # infeasible
        trial(2, {"acc": 0.95, "params": 50}, S.FAILED),
        trial(3, {"params": 50}),  # no objective
        trial(4, {"acc": 0.8, "params": 60}),
        trial(5, {"acc": 0.8, "params": 10}),  # ties with 4: the earlier wins
    ]
    assert objective.best_trial(obj, trials).name == "exp-4"  # type: ignore[union-attr]
    assert objective.best_trial(obj, trials[1:4]) is None
    assert objective.best_trial(single("minimize"), trials).name == "exp-0"  # type: ignore[union-attr]


def test_reached_target_in_both_directions() -> None:
    trials = [trial(0, {"acc": 0.7}), trial(1, {"acc": 0.92})]
    assert objective.reached_target(single(target_value=0.9), trials).name == "exp-1"  # type: ignore[union-attr]
    assert objective.reached_target(single(target_value=0.95), trials) is None
    assert objective.reached_target(single(), trials) is None
    assert objective.reached_target(single("minimize", target_value=0.75), trials).name == "exp-0"  # type: ignore[union-attr]


def test_pareto_front_is_non_dominated_and_ordered() -> None:
    obj = multi("pareto")
    trials = [
        trial(0, {"acc": 0.90, "latency": 10}),
        trial(1, {"acc": 0.80, "latency": 2}),
        trial(2, {"acc": 0.85, "latency": 12}),  # dominated by 0
        trial(3, {"acc": 0.95, "latency": 30}),
        trial(4, {"acc": 0.90, "latency": 10}),  # duplicate of 0: shown once
        trial(5, {"acc": 0.99, "latency": 1}, S.FAILED),
    ]
    assert [t.name for t in objective.pareto_front(obj, trials)] == ["exp-3", "exp-0", "exp-1"]
    assert [t.name for t in objective.pareto_front(obj, list(reversed(trials)))] == ["exp-3", "exp-0", "exp-1"]


def test_pareto_front_is_bounded_and_keeps_both_ends() -> None:
    obj = multi("pareto")
    trials = [trial(i, {"acc": i / 100, "latency": float(i)}) for i in range(100)]  # all non-dominated
    front = objective.pareto_front(obj, trials, limit=10)
    assert len(front) == 10
    assert front[0].name == "exp-99" and front[-1].name == "exp-0"
    assert len(objective.pareto_front(obj, trials)) == api.MAX_PARETO_FRONT


def test_pareto_front_respects_constraints() -> None:
    obj = multi("pareto", constraints=[api.Constraint(metric="latency", max=5)])
    trials = [trial(0, {"acc": 0.9, "latency": 10}), trial(1, {"acc": 0.8, "latency": 2})]
    assert [t.name for t in objective.pareto_front(obj, trials)] == ["exp-1"]


def _noisy(index: int, metrics: dict[str, float], noisy: list[str]) -> api.Trial:
    t = trial(index, metrics)
    return t.model_copy(update={"status": t.status.model_copy(update={"noisy_metrics": noisy})})


def test_a_noisy_objective_metric_keeps_a_trial_off_the_front_and_from_best() -> None:
    obj = multi("pareto")
    honest = trial(0, {"acc": 0.90, "latency": 1.0})
    disturbed = _noisy(1, {"acc": 0.95, "latency": 176.0}, ["latency"])
    assert objective.pareto_front(obj, [honest, disturbed]) == [honest]
    assert not objective.is_trusted(obj, disturbed)
    weighted = multi("weighted")
    assert objective.best_trial(weighted, [honest, _noisy(1, {"acc": 2.0, "latency": 0.1}, ["latency"])]) == honest


def test_a_noisy_metric_outside_the_objective_changes_nothing() -> None:
    flagged = _noisy(0, {"acc": 0.9, "latency": 176.0}, ["latency"])
    assert objective.is_trusted(single(), flagged)
    assert objective.best_trial(single(), [flagged]) == flagged
