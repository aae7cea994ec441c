"""The local run report's charts (kubenas.local.report) mark the trial the run exports."""

from __future__ import annotations

from kubenas import api
from kubenas.local import report


def _spec() -> api.ExperimentSpec:
    return api.ExperimentSpec.model_validate(
        {
            "objective": {"metric": "acc", "goal": "maximize", "constraints": [{"metric": "params", "max": 1000}]},
            "parameters": [{"name": "width", "type": "int", "min": 1, "max": 64}],
            "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        }
    )


def _trial(index: int, acc: float, params: float) -> api.Trial:
    return api.Trial.model_validate(
        {
            "metadata": {"name": f"e-{index}"},
            "spec": {"experiment": "e", "index": index, "parameters": {"width": index + 1}},
            "status": {"phase": "Succeeded", "metrics": {"acc": acc, "params": params}},
        }
    )


def test_parameter_chart_stars_the_best_feasible_trial_not_the_highest_value() -> None:
    trials = [_trial(0, 0.7, 500), _trial(1, 0.99, 5000), _trial(2, 0.8, 900)]  # e-1 breaks the constraint
    figure = report.draw_parameters(_spec(), trials)
    assert figure is not None
    assert "★ best (e-2)" in figure.get_suptitle()


def test_parameter_chart_stars_nothing_when_no_trial_is_feasible() -> None:
    figure = report.draw_parameters(_spec(), [_trial(0, 0.99, 5000)])
    assert figure is not None and "★" not in figure.get_suptitle()


def _weighted_latency_spec() -> api.ExperimentSpec:
    return api.ExperimentSpec.model_validate(
        {
            "objective": {"strategy": "weighted", "metrics": [
                {"name": "acc", "goal": "maximize", "weight": 1.0},
                {"name": "latency_ms", "goal": "minimize", "weight": 0.01}]},
            "parameters": [{"name": "width", "type": "int", "min": 1, "max": 64}],
            "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        }
    )


def _latency_trial(index: int, latency: float, noisy: bool) -> api.Trial:
    return api.Trial.model_validate(
        {
            "metadata": {"name": f"e-{index}"},
            "spec": {"experiment": "e", "index": index, "parameters": {"width": 8}},
            "status": {"phase": "Succeeded", "metrics": {"acc": 0.9, "latency_ms": latency},
                       "noisyMetrics": ["latency_ms"] if noisy else []},
        }
    )


def test_trials_table_marks_noisy_values() -> None:
    table = report._trials_table(_weighted_latency_spec(), [_latency_trial(0, 1.0, False),
                                                            _latency_trial(1, 175.9, True)], None)
    quiet, noisy = table.split("<tr")[2:4]
    assert "latency_ms=175.9~ (noisy)" in noisy and "~" not in quiet
    assert "-0.859~</td>" in noisy  # the objective value rests on the noisy latency
