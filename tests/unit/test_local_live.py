"""The live view and ``kubenas status`` mark values a trial flagged as noisy."""

from __future__ import annotations

from datetime import UTC, datetime

from kubenas import api
from kubenas.local import live
from rich.console import Console


def _experiment() -> api.Experiment:
    return api.Experiment.model_validate(
        {
            "metadata": {"name": "e"},
            "spec": {
                "objective": {"strategy": "weighted", "metrics": [
                    {"name": "acc", "goal": "maximize", "weight": 1.0},
                    {"name": "latency_ms", "goal": "minimize", "weight": 0.01}]},
                "parameters": [{"name": "width", "type": "int", "min": 1, "max": 64}],
                "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
            },
        }
    )


def _trial(index: int, noisy: bool) -> api.Trial:
    return api.Trial.model_validate(
        {
            "metadata": {"name": f"e-{index}"},
            "spec": {"experiment": "e", "index": index, "parameters": {"width": 8}},
            "status": {"phase": "Succeeded", "metrics": {"acc": 0.9, "latency_ms": 175.9 if noisy else 1.0},
                       "noisyMetrics": ["latency_ms"] if noisy else []},
        }
    )


def _rendered(trials: list[api.Trial]) -> list[str]:
    console = Console(width=200, record=True)
    console.print(live.experiment_view(_experiment(), trials, datetime.now(UTC)))
    return console.export_text().splitlines()


def test_status_table_marks_a_noisy_objective_value() -> None:
    lines = _rendered([_trial(0, False), _trial(1, True)])
    quiet = next(line for line in lines if line.lstrip().startswith("e-0"))
    noisy = next(line for line in lines if line.lstrip().startswith("e-1"))
    assert "-0.859~" in noisy and "(noisy: latency_ms)" in noisy
    assert "~" not in quiet and "noisy" not in quiet


def test_finished_line_names_the_noisy_metric() -> None:
    assert live._outcome(_trial(1, True), 0.5) == "value=0.5 (noisy: latency_ms)"
    assert live._outcome(_trial(0, False), 0.5) == "value=0.5"


def test_status_counts_queued_trials_apart_and_keeps_their_curve() -> None:
    queued = api.Trial.model_validate(
        {
            "metadata": {"name": "e-2"},
            "spec": {"experiment": "e", "index": 2, "parameters": {"width": 8}},
            "status": {"phase": "Queued", "step": 3, "curve": [{"step": 3, "value": 0.7}], "requeues": 1},
        }
    )
    running = queued.model_copy(
        update={"metadata": api.ObjectMeta(name="e-3"), "status": api.TrialStatus(phase=api.TrialPhase.RUNNING)}
    )
    lines = _rendered([_trial(0, False), queued, running])
    assert "1/20 trials finished, 1 running, 1 queued" in lines[0]
    row = next(line for line in lines if line.lstrip().startswith("e-2"))
    assert "Queued" in row and "(acc, queued)" in row
