"""The Argo CD health script (helm/kubenas/files/argocd-health.lua), run as Lua 5.1 on Experiments in every phase.

The objects' statuses come from the real planner, as the operator writes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubenas import api, plan, search

lua51 = pytest.importorskip("lupa.lua51")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "helm" / "kubenas" / "files" / "argocd-health.lua"
GITOPS = ROOT / "docs" / "gitops.md"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
P = api.TrialPhase


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD gets them: the script run with the object as the global ``obj``."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    return result["status"], result["message"]


def experiment(generation: int = 1, status: api.ExperimentStatus | None = None, **spec: Any) -> api.Experiment:
    body: dict[str, Any] = {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": [{"name": "x", "type": "int", "min": 0, "max": 1000}],
        "algorithm": {"seed": 3},
        "budget": {"maxTrials": 4, "parallelTrials": 2, "maxFailedTrials": 1},
        "earlyStopping": {"rule": "none"},
        "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "trial"}]}},
        **spec,
    }
    return api.Experiment.model_validate(
        {
            "metadata": {"name": "exp", "namespace": "nas", "generation": generation},
            "spec": body,
            "status": status.to_wire() if status else None,
        }
    )


def trial(index: int, phase: api.TrialPhase, accuracy: float | None = None) -> api.Trial:
    return api.Trial(
        metadata=api.ObjectMeta(name=api.trial_name("exp", index)),
        spec=api.TrialSpec(experiment="exp", index=index, parameters={"x": index}),
        status=api.TrialStatus(phase=phase, metrics={} if accuracy is None else {"accuracy": accuracy}),
    )


def planned(exp: api.Experiment, trials: Sequence[api.Trial]) -> dict[str, Any]:
    """The Experiment object with the status the planner gives it (what the operator writes)."""
    result = plan.plan(exp, trials, NOW, search.Suggester(exp.spec))
    return wire(exp, result.status)


def wire(exp: api.Experiment, status: api.ExperimentStatus | None) -> dict[str, Any]:
    obj = exp.model_copy(update={"status": status}).to_wire()
    return {"apiVersion": api.API_VERSION, "kind": "Experiment", **obj}


def test_no_status_waits_for_the_operator() -> None:
    assert health(wire(experiment(), None)) == ("Progressing", "Waiting for the operator")


def test_running_shows_progress_and_the_best_so_far() -> None:
    obj = planned(experiment(), [trial(0, P.SUCCEEDED, 0.91234), trial(1, P.RUNNING)])
    assert obj["status"]["phase"] == "Running"
    assert health(obj) == ("Progressing", "Running: 1/4 trials finished, best 0.9123 (exp-0)")


def test_pending_before_any_result() -> None:
    obj = planned(experiment(), [])
    assert health(obj) == ("Progressing", "Running: 0/4 trials finished, no result yet")


@pytest.mark.parametrize("trials", [[], [trial(0, P.SUCCEEDED, 0.5), trial(1, P.RUNNING)]], ids=["pending", "running"])
def test_suspended_is_progressing(trials: list[api.Trial]) -> None:
    obj = planned(experiment(suspend=True), trials)
    status, message = health(obj)
    assert status == "Progressing"
    assert message.startswith("Suspended (spec.suspend): ")


def test_succeeded_is_healthy() -> None:
    trials = [trial(0, P.SUCCEEDED, 0.5), trial(1, P.SUCCEEDED, 0.75), trial(2, P.FAILED), trial(3, P.SUCCEEDED, 0.6)]
    obj = planned(experiment(), trials)
    assert obj["status"]["phase"] == "Succeeded"
    assert health(obj) == ("Healthy", "BudgetSpent: all 4 trials finished (maxTrials 4); best 0.75 (exp-1)")


def test_too_many_failures_is_degraded() -> None:
    obj = planned(experiment(), [trial(0, P.FAILED), trial(1, P.FAILED), trial(2, P.RUNNING)])
    assert health(obj) == ("Degraded", "TooManyFailures: 2 trials failed; maxFailedTrials is 1")


def test_no_successful_trial_is_degraded() -> None:
    exp = experiment(budget={"maxTrials": 2, "parallelTrials": 2})
    status, message = health(planned(exp, [trial(0, P.FAILED), trial(1, P.EARLY_STOPPED)]))
    assert (status, message.split(":")[0]) == ("Degraded", "NoSuccessfulTrial")


def test_invalid_spec_is_degraded_with_the_reason() -> None:
    running = experiment(status=plan.plan(experiment(), [], NOW, search.Suggester(experiment().spec)).status)
    result = plan.invalid_plan(running, "spec.algorithm.name: unknown optimizer 'Nope'", NOW)
    obj = wire(running, result.status)
    assert health(obj) == ("Degraded", "InvalidSpec: spec.algorithm.name: unknown optimizer 'Nope'")


def test_stopped_by_hand_is_healthy() -> None:
    done = planned(experiment(), [trial(i, P.SUCCEEDED, 0.5) for i in range(4)])
    done["status"].update(phase="Stopped", reason="Stopped", message="stopped by hand")
    assert health(done) == ("Healthy", "Stopped: stopped by hand; best 0.5 (exp-0)")


def test_a_spec_change_the_operator_has_not_seen_is_progressing() -> None:
    done = planned(experiment(), [trial(i, P.SUCCEEDED, 0.5) for i in range(4)])
    done["metadata"]["generation"] = 2
    assert health(done) == ("Progressing", "Waiting for the operator to act on generation 2")


def test_an_operator_that_keeps_failing_says_so() -> None:
    obj = planned(experiment(), [trial(0, P.RUNNING)])
    obj["status"]["conditions"].append(
        {"type": "Synced", "status": "False", "reason": "ApiUnavailable", "message": "503 from the API server",
         "lastTransitionTime": (NOW + timedelta(minutes=1)).isoformat()}
    )
    assert health(obj) == (
        "Progressing", "Running: 0/4 trials finished, no result yet; the operator retries: 503 from the API server"
    )


def test_the_argocd_cm_snippet_in_the_docs_is_the_script() -> None:
    """docs/gitops.md shows the script inside the argocd-cm key; the two must not drift apart."""
    text = GITOPS.read_text()
    match = re.search(r"  resource\.customizations\.health\.kubenas\.io_Experiment: \|\n((?:    .*\n|\n)+)", text)
    assert match, "no argocd-cm snippet in docs/gitops.md"
    embedded = "\n".join(line[4:] for line in match.group(1).splitlines()).strip()
    assert embedded == SCRIPT.read_text().strip()


def test_trials_waiting_for_their_queue_are_shown() -> None:
    obj = planned(experiment(queueName="gpus"), [trial(0, P.SUCCEEDED, 0.5), trial(1, P.QUEUED), trial(2, P.QUEUED)])
    assert health(obj) == ("Progressing", "Running: 1/4 trials finished, 2 queued, best 0.5 (exp-0)")
