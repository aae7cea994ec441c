"""One-shot experiments in the planner: the three stages, decided from the trials alone."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from kubenas import api, plan, results, search
from kubenas.objective import pareto_front as objective_front
from kubenas.plan import oneshot
from pydantic import ValidationError

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
P = api.TrialPhase


def experiment(
    *,
    subnets: int = 10,
    batch: int = 4,
    top_k: int = 3,
    parallel: int = 2,
    max_failed: int = 1,
    objective: Mapping[str, Any] | None = None,
    status: api.ExperimentStatus | None = None,
    **extra: Any,
) -> api.Experiment:
    return api.Experiment.model_validate(
        {
            "metadata": {"name": "os", "generation": 1},
            "spec": {
                "objective": objective or {"metric": "accuracy", "goal": "maximize"},
                "parameters": [
                    {"name": "blocks", "type": "int", "min": 1, "max": 2},
                    {"name": "width", "type": "categorical", "values": [8, 12, 16]},
                    {"name": "kernel_size", "type": "categorical", "values": [3, 5]},
                ],
                "algorithm": {"name": "RandomSearch", "seed": 3},
                "budget": {"maxTrials": subnets, "parallelTrials": parallel, "maxFailedTrials": max_failed},
                "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "trial"}]}},
                "oneShot": {
                    "supernet": {"epochs": 6},
                    "batchSize": batch,
                    "topK": top_k,
                    "retrain": {"epochs": 4},
                    **extra,
                },
            },
            "status": status.to_wire() if status else None,
        }
    )


def inherited(subnet: Mapping[str, Any]) -> float:
    """A made-up inherited accuracy: wider, deeper and larger kernels are better."""
    return 0.5 + 0.02 * int(subnet["width"]) + 0.05 * int(subnet["blocks"]) + 0.01 * int(subnet["kernel_size"])


def params(subnet: Mapping[str, Any]) -> float:
    return 1000.0 * int(subnet["width"]) * int(subnet["blocks"])


def result(trial: api.Trial) -> dict[str, float]:
    """What the trial image reports for this trial's mode (docs/trial.md)."""
    mode = oneshot.mode_of(trial)
    if mode == oneshot.SUPERNET_TRAIN:
        return {"accuracy": 0.9, "accuracy_smallest": 0.7, "params": 5e4}
    if mode == oneshot.SUPERNET_EVAL:
        subnets = oneshot.subnets_of(trial)
        out: dict[str, float] = {"subnets": len(subnets)}
        for i, s in enumerate(subnets):
            out |= {
                f"{i}.accuracy": inherited(s),
                f"{i}.params": params(s),
                f"{i}.latency_ms": 1.0,
                f"{i}.latency_noisy": 0.0,
            }
        return out
    return {"accuracy": inherited(trial.spec.parameters) + 0.01, "params": params(trial.spec.parameters)}


def created(action: plan.CreateTrial) -> api.Trial:
    parameters = dict(action.parameters)
    if action.supernet is not None:
        parameters["supernet"] = f"/out/{action.supernet}"
    return api.Trial(
        metadata=api.ObjectMeta(name=action.name),
        spec=api.TrialSpec(experiment="os", index=action.index, parameters=parameters),
    )


def finish(trial: api.Trial, phase: api.TrialPhase = P.SUCCEEDED) -> api.Trial:
    """The trial finished as a backend records it: its result judged by the objective of its stage."""
    text = json.dumps(result(trial)) if phase == P.SUCCEEDED else "{}"
    spec = experiment().spec
    outcome = results.classify_finished_trial(
        plan.result_objective(spec, trial), exit_code=0 if phase == P.SUCCEEDED else 1, result_text=text
    )
    status = trial.status.model_copy(update={"phase": outcome.phase, "metrics": dict(outcome.metrics)})
    return trial.model_copy(update={"status": status})


class Backend:
    """Applies plans; each reconcile may start from a fresh Suggester (an operator restart)."""

    def __init__(self, exp: api.Experiment, *, restart_every_step: bool) -> None:
        self.exp = exp
        self.trials: dict[str, api.Trial] = {}
        self.restart = restart_every_step
        self.suggester = search.Suggester(exp.spec)
        self.stages: list[str] = []

    def step(self) -> plan.Plan:
        if self.restart:
            self.suggester = search.Suggester(self.exp.spec)
        result = plan.plan(self.exp, list(self.trials.values()), NOW, self.suggester)
        for action in result.of_type(plan.CreateTrial):
            self.trials[action.name] = created(action)
        self.exp = self.exp.model_copy(update={"status": result.status})
        self.stages.append(result.status.stage or "")
        return result

    def finish_running(self, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        for name, t in list(self.trials.items()):
            if not t.phase.is_finished:
                self.trials[name] = finish(t, P.FAILED if name in fail else P.SUCCEEDED)

    def by_mode(self) -> dict[str | None, list[api.Trial]]:
        out: dict[str | None, list[api.Trial]] = {}
        for t in sorted(self.trials.values(), key=lambda t: t.spec.index):
            out.setdefault(oneshot.mode_of(t), []).append(t)
        return out

    def run(self, limit: int = 50) -> plan.Plan:
        for _ in range(limit):
            result = self.step()
            if result.status.phase.is_finished:
                return result
            self.finish_running()
        raise AssertionError("the experiment did not finish")


def test_stage_one_is_a_single_supernet_trial_over_the_searched_values() -> None:
    backend = Backend(experiment(), restart_every_step=False)
    first = backend.step()
    [create] = first.of_type(plan.CreateTrial)
    assert create.parameters["mode"] == "supernet-train"
    assert create.parameters["epochs"] == 6
    assert json.loads(str(create.parameters["supernet_space"])) == {
        "blocks": [1, 2],
        "width": [8, 12, 16],
        "kernel_size": [3, 5],
    }
    assert first.status.stage == "SupernetTraining"
    assert first.status.progress == "0/7"  # 1 supernet + ceil(10 / 4) searches + 3 retrained
    # While it trains, nothing else starts, though parallelTrials allows two.
    assert backend.step().of_type(plan.CreateTrial) == []


def test_stage_two_evaluates_batches_from_the_trained_supernet() -> None:
    backend = Backend(experiment(subnets=10, batch=4, parallel=2), restart_every_step=False)
    backend.step()
    backend.finish_running()
    second = backend.step()
    creates = second.of_type(plan.CreateTrial)
    assert [c.supernet for c in creates] == ["os-0", "os-0"]
    assert [json.loads(str(c.parameters["subnets"])).__len__() for c in creates] == [4, 4]
    assert all(c.parameters["mode"] == "supernet-eval" for c in creates)
    assert second.status.stage == "SubnetSearch"
    backend.finish_running()
    third = backend.step()
    [last] = third.of_type(plan.CreateTrial)
    assert len(json.loads(str(last.parameters["subnets"]))) == 2  # 10 subnets in all
    evaluated = [json.dumps(s, sort_keys=True) for t in [*backend.trials.values()] for s in oneshot.subnets_of(t)]
    assert len(evaluated) == len(set(evaluated)) == 10  # no subnet evaluated twice


@pytest.mark.parametrize("restart_every_step", [False, True])
def test_the_best_inherited_subnets_are_retrained_and_decide_the_export(restart_every_step: bool) -> None:
    backend = Backend(experiment(subnets=10, batch=4, top_k=3), restart_every_step=restart_every_step)
    final = backend.run()
    modes = backend.by_mode()
    assert [len(modes[m]) for m in ("supernet-train", "supernet-eval", "train")] == [1, 3, 3]
    subnets = oneshot.searched_trials(list(backend.trials.values()))
    ranked = sorted(subnets, key=lambda t: -t.status.metrics["accuracy"])
    names = ("blocks", "width", "kernel_size")
    expected = [{n: t.spec.parameters[n] for n in names} for t in ranked[:3]]
    assert [{n: t.spec.parameters[n] for n in names} for t in modes["train"]] == expected
    assert all(t.spec.parameters["epochs"] == 4 for t in modes["train"])
    assert final.status.phase == api.ExperimentPhase.SUCCEEDED
    assert final.status.reason == api.CompletionReason.BUDGET_SPENT
    assert final.status.best_trial is not None and final.status.best_trial.name == modes["train"][0].name
    [export] = final.of_type(plan.ExportBest)
    assert export.trial.parameters["mode"] == "train"
    assert backend.stages[0] == "SupernetTraining" and backend.stages[-1] == "Retraining"
    assert final.status.progress == "7/7"


def test_planning_again_at_any_point_repeats_nothing() -> None:
    """Every plan is made twice, the second from a fresh suggester: the second creates nothing more."""
    backend = Backend(experiment(subnets=9, batch=3, top_k=2, parallel=3), restart_every_step=True)
    for _ in range(20):
        result = backend.step()
        again = backend.step()
        assert again.of_type(plan.CreateTrial) == []
        if result.status.phase.is_finished:
            break
        backend.finish_running()
    modes = backend.by_mode()
    assert [len(modes[m]) for m in ("supernet-train", "supernet-eval", "train")] == [1, 3, 2]


def test_a_failed_supernet_trial_is_replaced_within_max_failed_trials() -> None:
    backend = Backend(experiment(max_failed=1), restart_every_step=False)
    backend.step()
    backend.finish_running(fail={"os-0"})
    [retry] = backend.step().of_type(plan.CreateTrial)
    assert retry.parameters["mode"] == "supernet-train" and retry.name == "os-1"
    backend.finish_running(fail={"os-1"})
    final = backend.step()
    assert final.status.reason == api.CompletionReason.TOO_MANY_FAILURES


def test_no_feasible_subnet_fails_the_experiment_before_retraining() -> None:
    objective = {"metric": "accuracy", "goal": "maximize", "constraints": [{"metric": "params", "max": 10}]}
    backend = Backend(experiment(objective=objective), restart_every_step=False)
    final = backend.run()
    assert final.status.reason == api.CompletionReason.NO_SUCCESSFUL_TRIAL
    assert "train" not in backend.by_mode()


def test_a_pareto_objective_retrains_the_front_first() -> None:
    objective = {
        "strategy": "pareto",
        "metrics": [{"name": "accuracy", "goal": "maximize"}, {"name": "params", "goal": "minimize"}],
    }
    backend = Backend(experiment(subnets=12, batch=4, top_k=2, objective=objective), restart_every_step=False)
    final = backend.run()
    subnets = oneshot.searched_trials(list(backend.trials.values()))
    names = ("blocks", "width", "kernel_size")
    front = [{n: t.spec.parameters[n] for n in names} for t in objective_front(backend.exp.spec.objective, subnets)]
    retrained = [{n: t.spec.parameters[n] for n in names} for t in backend.by_mode()["train"]]
    assert len(front) > 2 and len(retrained) == 2
    assert all(r in front for r in retrained)  # both on the front of the inherited results
    assert final.status.pareto_front and all(s.parameters["mode"] == "train" for s in final.status.pareto_front)


def test_a_batch_result_is_complete_without_the_objective_metric() -> None:
    """A stage-2 trial reports <i>.accuracy, never accuracy: it succeeds, and its subnets carry the metrics."""
    trial = created(
        plan.CreateTrial(
            "os-1",
            1,
            {
                "mode": "supernet-eval",
                "subnets": json.dumps(
                    [{"blocks": 1, "width": 8, "kernel_size": 3}, {"blocks": 2, "width": 16, "kernel_size": 5}]
                ),
            },
            "os-0",
        )
    )
    done = finish(trial)
    assert done.phase == P.SUCCEEDED
    first, second = oneshot.searched_trials([done])
    assert second.spec.parameters == {"blocks": 2, "width": 16, "kernel_size": 5}
    assert second.status.metrics["accuracy"] == pytest.approx(inherited(second.spec.parameters))
    assert (first.name, first.spec.index) == ("os-1/0", 16)


def test_noisy_subnet_latency_keeps_it_out_of_the_retraining() -> None:
    objective = {"metric": "latency_ms", "goal": "minimize"}
    trial = created(
        plan.CreateTrial(
            "os-1",
            1,
            {
                "mode": "supernet-eval",
                "subnets": json.dumps(
                    [{"blocks": 1, "width": 8, "kernel_size": 3}, {"blocks": 2, "width": 16, "kernel_size": 5}]
                ),
            },
        )
    )
    metrics = {"subnets": 2, "0.latency_ms": 0.1, "0.latency_noisy": 1, "1.latency_ms": 0.5, "1.latency_noisy": 0}
    trial = trial.model_copy(update={"status": api.TrialStatus(phase=P.SUCCEEDED, metrics=metrics)})
    picks = oneshot.top_k(api.Objective.model_validate(objective), oneshot.searched_trials([trial]), 2)
    assert [p.name for p in picks] == ["os-1/1"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 0.1}]}, "parameters[0].name"),
        ({"parameters": [{"name": "width", "type": "int", "min": 8, "max": 64}]}, "parameters[0]"),
        ({"parameters": [{"name": "width", "type": "categorical", "values": ["a", "b"]}]}, "parameters[0]"),
        ({"oneShot": {"retrain": {"mode": "x"}}}, "oneShot.retrain.mode"),
        ({"oneShot": {"supernet": {"width": 8}}}, "oneShot.supernet.width"),
        ({"oneShot": {"batchSize": 17}}, "oneShot.batchSize"),
    ],
)
def test_a_one_shot_spec_outside_the_supernet_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    raw = experiment().to_wire()
    raw["spec"].update(change)
    with pytest.raises(ValidationError) as err:
        api.Experiment.model_validate(raw)
    assert field.split(".")[-1].split("[")[0] in str(err.value)


def test_on_a_cluster_the_checkpoint_travels_on_the_artifact_volume() -> None:
    from kubenas import workload

    exp = experiment()
    assert "export.artifactVolume" in workload.one_shot_problem(exp)
    raw = exp.to_wire()
    raw["spec"]["export"] = {"artifactVolume": "artifacts"}
    container = raw["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "artifacts", "mountPath": "/artifacts/"}]
    raw["spec"]["trialTemplate"]["spec"]["volumes"] = [{"name": "artifacts", "emptyDir": {}}]
    mounted = api.Experiment.model_validate(raw)
    assert workload.one_shot_problem(mounted) == ""
    assert workload.trial_output_dir(mounted, "os-0") == "/artifacts/os/os-0"
    # The directory the supernet trial writes to is the one the search trials are given.
    trial = created(plan.CreateTrial("os-0", 0, oneshot.supernet_parameters(mounted.spec)))
    trial.metadata.uid = "t"
    env = workload.build_job(mounted, trial)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBENAS_OUTPUT_DIR", "value": "/artifacts/os/os-0"} in env
