"""Re-measuring latency after a trial (spec.costMeasurement): which trials, when, and the front it feeds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubenas import api, measurejob, plan, results, search

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
P = api.TrialPhase
PARETO = {
    "strategy": "pareto",
    "metrics": [{"name": "accuracy", "goal": "maximize"}, {"name": "latency_ms", "goal": "minimize"}],
}


def pareto_experiment(remeasure: str = "Noisy", attempts: int = 3) -> api.Experiment:
    return api.Experiment.model_validate({
        "metadata": {"name": "exp", "generation": 1},
        "spec": {
            "objective": PARETO,
            "parameters": [{"name": "x", "type": "int", "min": 0, "max": 1000}],
            "algorithm": {"name": "RandomSearch", "seed": 7},
            "budget": {"maxTrials": 3, "parallelTrials": 3},
            "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "trial"}]}},
            "costMeasurement": {"remeasure": remeasure, "attempts": attempts},
        },
    })


def measured_trial(index: int, phase: api.TrialPhase = P.SUCCEEDED, *, accuracy: float = 0.9, latency: float = 1.0,
                   noisy: bool = False, measurements: int | None = None) -> api.Trial:
    metrics = {"accuracy": accuracy, "latency_ms": latency, "latency_noisy": float(noisy)}
    status: dict[str, Any] = {"phase": phase, "cost_measurements": measurements}
    if phase == P.SUCCEEDED:
        status |= {"metrics": metrics, "noisy_metrics": results.noisy_metrics(metrics)}
    return api.Trial(
        metadata=api.ObjectMeta(name=api.trial_name("exp", index)),
        spec=api.TrialSpec(experiment="exp", index=index, parameters={"x": index}),
        status=api.TrialStatus(**status),
    )


def decide(exp: api.Experiment, trials: list[api.Trial], measure_cost: bool = True) -> plan.Plan:
    return plan.plan(exp, trials, NOW, search.Suggester(exp.spec), measure_cost=measure_cost)


def test_a_noisy_trial_waits_until_no_trial_runs_then_is_measured_one_at_a_time() -> None:
    exp = pareto_experiment()
    busy = [measured_trial(0, noisy=True), measured_trial(1, noisy=True), measured_trial(2, P.RUNNING)]
    assert decide(exp, busy).of_type(plan.MeasureCost) == []

    idle = [measured_trial(0, noisy=True), measured_trial(1, noisy=True), measured_trial(2)]
    decided = decide(exp, idle)
    assert decided.of_type(plan.MeasureCost) == [plan.MeasureCost("exp-0", 1)]
    assert decided.of_type(plan.CompleteExperiment) == []  # the budget is spent, but a measurement is due
    assert decided.status.phase == api.ExperimentPhase.RUNNING


def test_a_trial_measured_quiet_joins_the_front_and_the_experiment_completes() -> None:
    exp = pareto_experiment()
    noisy = measured_trial(0, accuracy=0.95, latency=50.0, noisy=True)
    others = [measured_trial(1, accuracy=0.9, latency=1.0), measured_trial(2, accuracy=0.8, latency=2.0)]
    before = decide(exp, [noisy, *others])
    assert [m.name for m in before.status.pareto_front or []] == ["exp-1"]

    result = b'{"latency_ms": 1.2, "latency_ms_spread": 0.04, "latency_noisy": 0, "latency_remeasured": 0}'
    quiet = noisy.model_copy(update={"status": results.with_measurement(noisy.status, result)})
    after = decide(exp, [quiet, *others])
    assert after.of_type(plan.MeasureCost) == []
    assert {m.name for m in after.status.pareto_front or []} == {"exp-0", "exp-1"}
    assert [c.reason for c in after.of_type(plan.CompleteExperiment)] == [api.CompletionReason.BUDGET_SPENT]


def test_a_trial_still_noisy_after_every_attempt_stays_off_the_front() -> None:
    exp = pareto_experiment(attempts=2)
    trials = [measured_trial(0, accuracy=0.95, noisy=True, measurements=2), measured_trial(1), measured_trial(2)]
    decided = decide(exp, trials)
    assert decided.of_type(plan.MeasureCost) == []
    assert "exp-0" not in {m.name for m in decided.status.pareto_front or []}
    assert decided.of_type(plan.CompleteExperiment)


def test_the_next_attempt_follows_a_noisy_measurement() -> None:
    exp = pareto_experiment()
    trials = [measured_trial(0), measured_trial(1, noisy=True, measurements=1), measured_trial(2)]
    assert decide(exp, trials).of_type(plan.MeasureCost) == [plan.MeasureCost("exp-1", 2)]


def test_front_confirms_the_members_and_the_trials_a_steady_slowdown_could_have_kept_off() -> None:
    exp = pareto_experiment(remeasure="Front")
    # exp-3 is quiet but dominated by exp-1 by less than 1.5x in latency: had it been slowed, it belongs on the
    # front. exp-2 is dominated by exp-0 whatever the noise.
    trials = [
        measured_trial(0, accuracy=0.90, latency=1.0),
        measured_trial(1, accuracy=0.95, latency=2.0),
        measured_trial(2, accuracy=0.80, latency=3.0),
        measured_trial(3, accuracy=0.93, latency=2.2),
        measured_trial(4, P.RUNNING),
    ]
    assert decide(exp, trials).of_type(plan.MeasureCost) == []  # not while a trial runs
    trials[4] = measured_trial(4, accuracy=0.5, latency=9.0)
    decided = decide(exp, trials)
    # One at a time, in trial order: the front (exp-0, exp-1), then exp-3.
    assert decided.of_type(plan.MeasureCost) == [plan.MeasureCost("exp-0", 1)]
    assert decided.of_type(plan.CompleteExperiment) == []

    def measured(trial: api.Trial, latency: float) -> api.Trial:
        result = f'{{"latency_ms": {latency}, "latency_ms_spread": 0.02, "latency_noisy": 0}}'.encode()
        return trial.model_copy(update={"status": results.with_measurement(trial.status, result)})

    trials[0], trials[1] = measured(trials[0], 0.9), measured(trials[1], 1.8)
    decided = decide(exp, trials)
    assert decided.of_type(plan.MeasureCost) == [plan.MeasureCost("exp-3", 1)]
    assert [m.name for m in decided.status.pareto_front or []] == ["exp-1", "exp-0"]
    trials[3] = measured(trials[3], 1.5)  # measured alone, it is faster than exp-1: it joins the front
    decided = decide(exp, trials)
    assert decided.of_type(plan.MeasureCost) == []
    assert [m.name for m in decided.status.pareto_front or []] == ["exp-1", "exp-3", "exp-0"]
    assert decided.of_type(plan.CompleteExperiment)


def test_front_is_noisy_for_an_objective_without_latency_and_default_noisy_does_not_confirm_the_front() -> None:
    trials = [measured_trial(0, accuracy=0.9, latency=1.0), measured_trial(1, accuracy=0.95, latency=1.4),
              measured_trial(2, accuracy=0.8, latency=3.0)]
    assert decide(pareto_experiment(), trials).of_type(plan.MeasureCost) == []
    exp = pareto_experiment(remeasure="Front")
    objective = {"strategy": "pareto", "metrics": [{"name": "accuracy", "goal": "maximize"},
                                                   {"name": "params", "goal": "minimize"}]}
    spec = exp.spec.model_copy(update={"objective": api.Objective.model_validate(objective)})
    with_params = [t.model_copy(update={"status": t.status.model_copy(
        update={"metrics": {**t.status.metrics, "params": 10.0 * t.spec.index}})}) for t in trials]
    assert decide(exp.model_copy(update={"spec": spec}), with_params).of_type(plan.MeasureCost) == []


def test_always_measures_each_trial_once_as_soon_as_it_succeeds() -> None:
    exp = pareto_experiment(remeasure="Always")
    trials = [measured_trial(0), measured_trial(1, measurements=1), measured_trial(2, P.RUNNING)]
    assert decide(exp, trials).of_type(plan.MeasureCost) == [plan.MeasureCost("exp-0", 1)]


def test_never_and_a_backend_without_the_model_leave_noisy_trials_out() -> None:
    trials = [measured_trial(0, noisy=True), measured_trial(1), measured_trial(2)]
    for decided in (decide(pareto_experiment(remeasure="Never"), trials),
                    decide(pareto_experiment(), trials, measure_cost=False)):
        assert decided.of_type(plan.MeasureCost) == []
        assert decided.of_type(plan.CompleteExperiment)
        assert "exp-0" not in {m.name for m in decided.status.pareto_front or []}


def test_a_measurement_keeps_the_least_disturbed_latency_and_the_trials_own_value() -> None:
    status = measured_trial(0, latency=176.0, noisy=True).status
    result = b'{"latency_ms": 1.0, "latency_ms_spread": 0.05, "latency_noisy": 0, "accuracy": 0.1}'
    measured = results.with_measurement(status, result)
    assert measured.metrics["latency_ms"] == 1.0 and measured.metrics["latency_ms_trial"] == 176.0
    assert measured.metrics["accuracy"] == 0.9  # only latency metrics are taken from a measurement
    assert measured.noisy_metrics == [] and measured.cost_measurements == 1

    slower = results.with_measurement(measured, b'{"latency_ms": 3.0, "latency_noisy": 1}')
    assert slower.metrics["latency_ms"] == 1.0 and slower.noisy_metrics == []  # interference only slows
    assert slower.metrics["latency_ms_trial"] == 176.0 and slower.cost_measurements == 2


def test_a_value_two_disturbed_measurements_reproduce_is_trusted() -> None:
    status = measured_trial(0, latency=0.81, noisy=True).status
    wide = results.with_measurement(status, b'{"latency_ms": 1.31, "latency_noisy": 1}')
    assert wide.metrics["latency_ms"] == 0.81 and wide.noisy_metrics == ["latency_ms"]  # 1.6x apart
    close = results.with_measurement(wide, b'{"latency_ms": 0.73, "latency_noisy": 1}')
    assert close.metrics["latency_ms"] == 0.73 and close.noisy_metrics == []  # 0.73 and 0.81 agree
    far = results.with_measurement(status, b'{"latency_ms": 0.3, "latency_noisy": 1}')
    assert far.metrics["latency_ms"] == 0.3 and far.noisy_metrics == ["latency_ms"]


def test_the_first_measurement_on_a_deployment_target_replaces_a_faster_trial_node() -> None:
    status = measured_trial(0, latency=0.5).status
    target = results.with_measurement(status, b'{"latency_ms": 4.0, "latency_noisy": 0}', replace=True)
    assert target.metrics["latency_ms"] == 4.0 and target.metrics["latency_ms_trial"] == 0.5


def test_a_failed_measurement_only_counts_the_attempt() -> None:
    status = measured_trial(0, latency=9.0, noisy=True).status
    for text in (None, b"", b"not json", b'{"accuracy": 1}'):
        measured = results.with_measurement(status, text)
        assert measured.metrics == status.metrics and measured.noisy_metrics == ["latency_ms"]
        assert measured.cost_measurements == 1


def test_under_always_the_search_learns_a_trial_only_once_it_is_measured() -> None:
    exp = pareto_experiment(remeasure="Always")
    suggester = search.Suggester(exp.spec)
    assert suggester.sync([measured_trial(0, latency=40.0)]) == []  # its own latency is not the one searched on
    assert suggester.sync([measured_trial(0, latency=2.0, measurements=1)]) == ["exp-0"]


def cluster_experiment(remeasure: str = "Always", mounted: bool = True) -> api.Experiment:
    mounts = [{"name": "artifacts", "mountPath": "/artifacts"}] if mounted else []
    return api.Experiment.model_validate({
        "metadata": {"name": "exp", "namespace": "team", "uid": "u1"},
        "spec": {
            "objective": PARETO,
            "parameters": [{"name": "x", "type": "int", "min": 0, "max": 9}],
            "trialTemplate": {"spec": {
                "containers": [{"name": "trial", "image": "trial:1", "volumeMounts": mounts,
                                "ports": [{"containerPort": 8000}], "resources": {"limits": {"cpu": "4"}}}],
                "nodeSelector": {"pool": "train"},
                "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "a"}}]}},
            "export": {"artifactVolume": "artifacts"},
            "costMeasurement": {"remeasure": remeasure, "nodeSelector": {"pool": "serve"},
                                "tolerations": [{"key": "serve", "operator": "Exists"}],
                                "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}},
        },
    })


def test_the_measurement_job_is_the_trial_job_turned_into_a_measurement_on_the_target() -> None:
    exp = cluster_experiment()
    trial = measured_trial(3).model_copy(update={"metadata": api.ObjectMeta(name="exp-3", namespace="team", uid="t3")})
    job = measurejob.build_measurement_job(exp, trial, 2)
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert job["metadata"]["name"] == "exp-3-measure-2" and measurejob.attempt_of("exp-3-measure-2", "exp-3") == 2
    assert measurejob.attempt_of("exp-3", "exp-3") is None
    assert measurejob.attempt_of("exp-30-measure-1", "exp-3") is None
    assert container["command"] == ["python", "-m", "kubenas_trial.measure"] and container["args"] == []
    assert {"name": "KUBENAS_MODEL_DIR", "value": "/artifacts/exp/exp-3"} in container["env"]
    assert container["resources"] == {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}} and "ports" not in container
    assert pod["spec"]["nodeSelector"] == {"pool": "serve"}  # the target's label wins over the trial's
    assert {"key": "serve", "operator": "Exists"} in pod["spec"]["tolerations"]
    assert pod["metadata"]["labels"][measurejob.LABEL_MEASURES] == "exp-3"
    assert "kubenas.io/trial" not in pod["metadata"]["labels"]
    assert not any(k.startswith("prometheus.io/") for k in pod["metadata"].get("annotations", {}))
    assert job["metadata"]["ownerReferences"][0]["uid"] == "t3"


def test_always_without_an_artifact_volume_is_a_spec_problem_on_a_cluster() -> None:
    assert measurejob.spec_problem(cluster_experiment()) == ""
    assert measurejob.spec_problem(cluster_experiment(remeasure="Noisy", mounted=False)) == ""
    problem = measurejob.spec_problem(cluster_experiment(mounted=False))
    assert problem.startswith("costMeasurement.remeasure: Always needs each trial's model: set export.artifactVolume")
    trial = measured_trial(0).model_copy(update={"metadata": api.ObjectMeta(name="exp-0", uid="t0")})
    with pytest.raises(ValueError, match=r"export\.artifactVolume"):
        measurejob.build_measurement_job(cluster_experiment(mounted=False), trial, 1)
