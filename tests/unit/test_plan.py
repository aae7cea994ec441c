"""The planner (kubenas.plan): every action, every completion reason, the budget arithmetic."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubenas import api, plan, search

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=10)
P = api.TrialPhase
E = api.ExperimentPhase


def experiment(
    *,
    max_trials: int = 4,
    parallel: int = 2,
    max_failed: int | None = 1,
    max_duration: str | None = None,
    target: float | None = None,
    goal: api.Goal = api.Goal.MAXIMIZE,
    suspend: bool = False,
    stopping: str = "none",
    generation: int | None = 1,
    status: api.ExperimentStatus | None = None,
    objective: dict[str, Any] | None = None,
) -> api.Experiment:
    return api.Experiment.model_validate(
        {
            "metadata": {"name": "exp", "generation": generation},
            "spec": {
                "objective": objective or {"metric": "accuracy", "goal": goal.value, "targetValue": target},
                "parameters": [{"name": "x", "type": "int", "min": 0, "max": 1000}],
                "algorithm": {"name": "NGOpt", "seed": 7},
                "budget": {
                    "maxTrials": max_trials,
                    "parallelTrials": parallel,
                    "maxFailedTrials": max_failed,
                    "maxDuration": max_duration,
                },
                "earlyStopping": {"rule": stopping, "minTrials": 2, "minEpochs": 1},
                "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "trial"}]}},
                "suspend": suspend,
            },
            "status": status.to_wire() if status else None,
        }
    )


def trial(
    index: int,
    phase: api.TrialPhase = P.PENDING,
    value: float | None = None,
    curve: Iterable[float] = (),
    parameters: dict[str, api.ParameterValue] | None = None,
) -> api.Trial:
    metrics = {} if value is None else {"accuracy": value}
    return api.Trial(
        metadata=api.ObjectMeta(name=api.trial_name("exp", index)),
        spec=api.TrialSpec(experiment="exp", index=index, parameters=parameters or {"x": index}),
        status=api.TrialStatus(
            phase=phase,
            metrics=metrics,
            curve=[api.CurvePoint(step=s + 1, value=v) for s, v in enumerate(curve)],
        ),
    )


def ok(index: int, value: float = 0.5) -> api.Trial:
    return trial(index, P.SUCCEEDED, value)


def running(index: int, curve: Iterable[float] = ()) -> api.Trial:
    return trial(index, P.RUNNING, curve=curve)


def promoted(t: api.Trial, rung: int) -> api.Trial:
    return t.model_copy(update={"status": t.status.model_copy(update={"rung": rung})})


def announcing(t: api.Trial, final_step: int) -> api.Trial:
    """``t`` having announced its final step, and reported up to its curve's last step."""
    step = t.status.curve[-1].step if t.status.curve else None
    return t.model_copy(update={"status": t.status.model_copy(update={"step": step, "final_step": final_step})})


def failed(index: int) -> api.Trial:
    return trial(index, P.FAILED)


def finished_status(reason: api.CompletionReason, phase: api.ExperimentPhase = E.SUCCEEDED, generation: int = 1,
                    exported: bool = True) -> api.ExperimentStatus:
    return api.ExperimentStatus(
        phase=phase,
        reason=reason.value,
        message="done",
        start_time=EARLIER,
        completion_time=EARLIER,
        conditions=[api.Condition(type=phase.value, status="True", reason=reason.value, observed_generation=generation,
                                  last_transition_time=EARLIER)],
        best_trial=api.TrialSummary(name="exp-0", value=0.5),
        export=api.ExportStatus(config_map="exp-best") if exported else None,
    )


def describe(result: plan.Plan) -> list[str]:
    """Each action as a short line, e.g. ``create exp-2`` or ``stop exp-1 EarlyStopped``."""
    lines = []
    for action in result.actions:
        match action:
            case plan.CreateTrial(name=name):
                lines.append(f"create {name}")
            case plan.StopTrial(name=name, reason=reason):
                lines.append(f"stop {name} {reason.value}")
            case plan.PromoteTrial(name=name, rung=rung):
                lines.append(f"promote {name} {rung}")
            case plan.TellResult(name=name):
                lines.append(f"tell {name}")
            case plan.CompleteExperiment(phase=phase, reason=reason):
                lines.append(f"complete {phase.value} {reason.value}")
            case plan.ExportBest(trial=best):
                lines.append(f"export {best.name}")
    return lines


def sized(exp: api.Experiment, size: int | None) -> api.Experiment:
    """``exp`` with its space cut down to x in 0 .. size-1 (unchanged when size is None)."""
    if size is None:
        return exp
    space = [api.Parameter(name="x", type=api.ParameterType.INT, min=0, max=size - 1)]
    return exp.model_copy(update={"spec": exp.spec.model_copy(update={"parameters": space})})


def run(exp: api.Experiment, trials: Sequence[api.Trial], size: int | None = None, now: datetime = NOW) -> plan.Plan:
    exp = sized(exp, size)
    return plan.plan(exp, trials, now, search.Suggester(exp.spec))


def median_curves() -> list[api.Trial]:
    return [trial(i, P.SUCCEEDED, 0.9, curve=[0.8, 0.9]) for i in range(2)]


CASES = [
    # --- creating trials: parallelism and budget arithmetic
    ("fresh-fills-parallelism", experiment(), [], None, ["create exp-0", "create exp-1"], E.RUNNING, None),
    ("parallelism-full", experiment(), [running(0), trial(1)], None, [], E.RUNNING, None),
    ("replaces-finished-trial", experiment(), [ok(0), running(1)], None,
     ["tell exp-0", "create exp-2"], E.RUNNING, None),
    ("budget-caps-parallelism", experiment(parallel=3), [ok(0), ok(1), running(2)], None,
     ["tell exp-0", "tell exp-1", "create exp-3"], E.RUNNING, None),
    ("budget-counts-every-created-trial", experiment(max_failed=9),
     [failed(0), trial(1, P.EARLY_STOPPED), trial(2, P.STOPPED), running(3)], None,
     ["tell exp-0", "tell exp-1", "tell exp-2"], E.RUNNING, None),
    ("budget-spent-waits-for-running", experiment(), [ok(0), ok(1), ok(2), running(3)], None,
     ["tell exp-0", "tell exp-1", "tell exp-2"], E.RUNNING, None),
    ("next-index-after-the-highest", experiment(max_trials=10), [ok(0), ok(5)], None,
     ["tell exp-0", "tell exp-5", "create exp-6", "create exp-7"], E.RUNNING, None),
    ("crash-created-trials-without-status-count", experiment(parallel=3), [trial(0), trial(1)], None,
     ["create exp-2"], E.RUNNING, None),
    # --- spec changes
    ("lowered-parallelism-kills-nothing", experiment(parallel=1, max_trials=9), [running(0), running(1), trial(2)],
     None, [], E.RUNNING, None),
    ("lowered-max-trials-kills-nothing", experiment(max_trials=2, parallel=2),
     [ok(0), running(1), running(2)], None, ["tell exp-0"], E.RUNNING, None),
    ("lowered-max-trials-then-budget-spent", experiment(max_trials=2, parallel=2), [ok(0), ok(1), ok(2, 0.9)], None,
     ["tell exp-0", "tell exp-1", "tell exp-2", "complete Succeeded BudgetSpent", "export exp-2"], E.SUCCEEDED,
     "BudgetSpent"),
    # --- suspend
    ("suspend-creates-nothing", experiment(suspend=True), [running(0)], None, [], E.RUNNING, None),
    ("suspend-from-the-start-stays-pending", experiment(suspend=True), [], None, [], E.PENDING, None),
    # --- completion
    ("budget-spent", experiment(), [ok(0, 0.1), ok(1, 0.9), failed(2), ok(3, 0.4)], None,
     ["tell exp-0", "tell exp-1", "tell exp-2", "tell exp-3", "complete Succeeded BudgetSpent", "export exp-1"],
     E.SUCCEEDED, "BudgetSpent"),
    ("budget-spent-minimize-exports-lowest", experiment(goal=api.Goal.MINIMIZE), [ok(0, 0.1), ok(1, 0.9), ok(2), ok(3)],
     None, ["tell exp-0", "tell exp-1", "tell exp-2", "tell exp-3", "complete Succeeded BudgetSpent", "export exp-0"],
     E.SUCCEEDED, "BudgetSpent"),
    ("no-successful-trial", experiment(max_failed=None), [failed(0), failed(1), failed(2), trial(3, P.STOPPED)], None,
     ["tell exp-0", "tell exp-1", "tell exp-2", "tell exp-3", "complete Failed NoSuccessfulTrial"], E.FAILED,
     "NoSuccessfulTrial"),
    ("too-many-failures-stops-the-rest", experiment(max_failed=1), [failed(0), failed(1), ok(2), running(3)], None,
     ["tell exp-0", "tell exp-1", "tell exp-2", "stop exp-3 ExperimentFinished", "complete Failed TooManyFailures",
      "export exp-2"], E.FAILED, "TooManyFailures"),
    ("failures-at-the-limit-go-on", experiment(max_failed=1, max_trials=9), [failed(0), running(1)], None,
     ["tell exp-0", "create exp-2"], E.RUNNING, None),
    ("no-failure-limit", experiment(max_failed=None, max_trials=9), [failed(0), failed(1), failed(2)], None,
     ["tell exp-0", "tell exp-1", "tell exp-2", "create exp-3", "create exp-4"], E.RUNNING, None),
    ("target-reached-stops-running", experiment(target=0.9), [ok(0, 0.95), running(1), trial(2)], None,
     ["tell exp-0", "stop exp-1 ExperimentFinished", "stop exp-2 ExperimentFinished",
      "complete Succeeded TargetReached", "export exp-0"], E.SUCCEEDED, "TargetReached"),
    ("target-not-reached", experiment(target=0.9, max_trials=9), [ok(0, 0.85), running(1)], None,
     ["tell exp-0", "create exp-2"], E.RUNNING, None),
    ("target-reached-minimize", experiment(target=0.1, goal=api.Goal.MINIMIZE), [ok(0, 0.05), running(1)], None,
     ["tell exp-0", "stop exp-1 ExperimentFinished", "complete Succeeded TargetReached", "export exp-0"],
     E.SUCCEEDED, "TargetReached"),
    ("space-exhausted", experiment(max_trials=9), [ok(0, 0.6), ok(1), ok(2)], 3,
     ["tell exp-0", "tell exp-1", "tell exp-2", "complete Succeeded SpaceExhausted", "export exp-0"],
     E.SUCCEEDED, "SpaceExhausted"),
    ("space-exhausted-waits-for-running", experiment(max_trials=9), [ok(0), ok(1), running(2)], 3,
     ["tell exp-0", "tell exp-1"], E.RUNNING, None),
    ("space-nearly-exhausted-creates-what-is-left", experiment(max_trials=9, parallel=3), [ok(0), running(1)], 3,
     ["tell exp-0", "create exp-2"], E.RUNNING, None),
    # --- early stopping
    ("median-stops-and-replaces", experiment(stopping="median", max_trials=9),
     [*median_curves(), running(2, curve=[0.1, 0.2])], None,
     ["tell exp-0", "tell exp-1", "stop exp-2 EarlyStopped", "create exp-3", "create exp-4"], E.RUNNING, None),
    ("median-spares-a-good-trial", experiment(stopping="median", max_trials=9),
     [*median_curves(), running(2, curve=[0.1, 0.95])], None,
     ["tell exp-0", "tell exp-1", "create exp-3"], E.RUNNING, None),
    ("median-leaves-a-trial-at-its-final-step-to-finish", experiment(stopping="median", max_trials=9),
     [*median_curves(), announcing(running(2, curve=[0.1, 0.2]), final_step=2)], None,
     ["tell exp-0", "tell exp-1", "create exp-3"], E.RUNNING, None),
    ("median-stops-a-trial-before-its-final-step", experiment(stopping="median", max_trials=9),
     [*median_curves(), announcing(running(2, curve=[0.1, 0.2]), final_step=3)], None,
     ["tell exp-0", "tell exp-1", "stop exp-2 EarlyStopped", "create exp-3", "create exp-4"], E.RUNNING, None),
    ("asha-leaves-a-trial-at-its-final-step-to-finish", experiment(stopping="asha", max_trials=2),
     [trial(0, P.SUCCEEDED, 0.9, curve=[0.9]), announcing(running(1, curve=[0.2]), final_step=1)], None,
     ["tell exp-0"], E.RUNNING, None),
    ("early-stopping-waits-before-completing", experiment(stopping="asha", max_trials=2),
     [trial(0, P.SUCCEEDED, 0.9, curve=[0.9]), running(1, curve=[0.2])], None,
     ["tell exp-0", "stop exp-1 EarlyStopped"], E.RUNNING, None),
    ("asha-promotes-the-first-at-a-rung", experiment(stopping="asha", max_trials=2),
     [running(0, curve=[0.2]), running(1, curve=[0.1])], None,
     ["stop exp-1 EarlyStopped", "promote exp-0 1"], E.RUNNING, None),
    ("asha-does-not-reopen-a-promotion", experiment(stopping="asha", max_trials=2),
     [trial(0, P.SUCCEEDED, 0.9, curve=[0.9]), promoted(running(1, curve=[0.2]), rung=1)], None,
     ["tell exp-0"], E.RUNNING, None),
]


def test_a_trial_reporting_a_value_that_breaks_a_stop_early_constraint_is_stopped() -> None:
    objective = {
        "metric": "accuracy",
        "goal": "maximize",
        "constraints": [{"metric": "params", "max": 1000, "stopEarly": True}, {"metric": "latency", "max": 1}],
    }
    exp = experiment(max_trials=9, parallel=3, objective=objective)

    def reporting(index: int, **reported: float) -> api.Trial:
        t = running(index)
        return t.model_copy(update={"status": t.status.model_copy(update={"reported": reported})})

    trials = [reporting(0, params=5000), reporting(1, params=900), reporting(2, latency=7)]
    result = plan.plan(exp, trials, NOW, search.Suggester(exp.spec))
    stops = result.of_type(plan.StopTrial)
    assert [(s.name, s.reason) for s in stops] == [("exp-0", api.TrialReason.EARLY_STOPPED)]
    assert stops[0].message == "infeasible: params = 5000 reported while running, above the constraint's max 1000"
    assert len(result.of_type(plan.CreateTrial)) == 1  # its slot is refilled at once


def test_an_infeasible_trial_at_its_final_step_is_left_to_finish() -> None:
    objective = {"metric": "accuracy", "goal": "maximize", "constraints": [{"metric": "params", "max": 1000,
                                                                           "stopEarly": True}]}
    exp = experiment(max_trials=2, parallel=2, objective=objective)
    t = announcing(running(0, curve=[0.5, 0.6]), final_step=2)
    t = t.model_copy(update={"status": t.status.model_copy(update={"reported": {"params": 5000.0}})})
    # Its training is done: a stop would save nothing and lose the result the search learns from.
    assert plan.plan(exp, [t], NOW, search.Suggester(exp.spec)).of_type(plan.StopTrial) == []


def test_an_infeasible_report_outranks_an_asha_promotion() -> None:
    objective = {
        "metric": "accuracy",
        "goal": "maximize",
        "constraints": [{"metric": "params", "max": 1000, "stopEarly": True}],
    }
    exp = experiment(max_trials=1, parallel=1, objective=objective, stopping="asha")
    t = running(0, curve=[0.9])  # alone at rung 1: ASHA alone would promote it
    t = t.model_copy(update={"status": t.status.model_copy(update={"reported": {"params": 5000.0}})})
    result = plan.plan(exp, [t], NOW, search.Suggester(exp.spec))
    assert describe(result) == ["stop exp-0 EarlyStopped"]
    assert result.of_type(plan.StopTrial)[0].message.startswith("infeasible: params = 5000")


@pytest.mark.parametrize(
    ("exp", "trials", "space", "actions", "phase", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_plan(
    exp: api.Experiment,
    trials: list[api.Trial],
    space: int | None,
    actions: list[str],
    phase: api.ExperimentPhase,
    reason: str | None,
) -> None:
    result = run(exp, trials, space)
    assert describe(result) == actions
    assert (result.status.phase, result.status.reason) == (phase, reason)


def started(at: datetime) -> api.ExperimentStatus:
    return api.ExperimentStatus(phase=E.RUNNING, start_time=at)


def test_max_duration_stops_everything_and_succeeds() -> None:
    exp = experiment(max_duration="1h", status=started(NOW - timedelta(hours=1)))
    result = run(exp, [ok(0), running(1), trial(2)])
    assert describe(result) == [
        "tell exp-0", "stop exp-1 ExperimentFinished", "stop exp-2 ExperimentFinished",
        "complete Succeeded MaxDurationReached", "export exp-0",
    ]
    assert result.status.message == "maxDuration 1h reached"


def test_max_duration_without_a_success_fails() -> None:
    exp = experiment(max_duration="1h", status=started(NOW - timedelta(hours=2)))
    result = run(exp, [running(0)])
    assert (result.status.phase, result.status.reason) == (E.FAILED, "NoSuccessfulTrial")
    assert "maxDuration 1h reached" in (result.status.message or "")


def test_max_duration_not_yet_reached() -> None:
    exp = experiment(max_duration="1h", status=started(NOW - timedelta(minutes=59)))
    assert run(exp, [running(0)]).status.phase == E.RUNNING


def test_median_rule_message_reaches_the_stop_action() -> None:
    exp = experiment(stopping="median", max_trials=9)
    [stop] = run(exp, [*median_curves(), running(3, curve=[0.1, 0.2])]).of_type(plan.StopTrial)
    assert stop.message.startswith("median rule: best 0.2 by step 2 is worse than the median")


# --------------------------------------------------------------------------- terminal experiments


def test_finished_experiment_stays_finished_and_stops_strays() -> None:
    exp = experiment(status=finished_status(api.CompletionReason.TARGET_REACHED))
    result = plan.plan(exp, [ok(0), running(1)], NOW, None)
    assert describe(result) == ["stop exp-1 ExperimentFinished"]
    assert (result.status.phase, result.status.reason, result.status.completion_time) == (
        E.SUCCEEDED, "TargetReached", EARLIER)


def test_finished_experiment_does_not_need_a_suggester_until_its_spec_changes() -> None:
    status = finished_status(api.CompletionReason.BUDGET_SPENT, generation=1)
    assert not plan.needs_suggester(experiment(generation=1, status=status))
    assert plan.needs_suggester(experiment(generation=2, status=status))
    assert plan.needs_suggester(experiment(status=None))


def test_raising_max_trials_resumes_a_budget_spent_experiment() -> None:
    trials = [ok(0), ok(1), ok(2), ok(3)]
    exp = experiment(max_trials=6, generation=2, status=finished_status(api.CompletionReason.BUDGET_SPENT))
    result = run(exp, trials)
    assert describe(result) == ["tell exp-0", "tell exp-1", "tell exp-2", "tell exp-3", "create exp-4", "create exp-5"]
    status = result.status
    assert (status.phase, status.reason, status.completion_time, status.export) == (E.RUNNING, None, None, None)
    succeeded = next(c for c in status.conditions if c.type == "Succeeded")
    assert (succeeded.status, succeeded.reason, succeeded.last_transition_time) == ("False", "Resumed", NOW)


def test_spec_change_that_does_not_reopen_keeps_the_outcome() -> None:
    exp = experiment(max_trials=4, parallel=1, generation=2, status=finished_status(api.CompletionReason.BUDGET_SPENT))
    result = run(exp, [ok(0, 0.6), ok(1), ok(2), ok(3)])
    assert [a for a in describe(result) if not a.startswith("tell")] == []
    assert (result.status.phase, result.status.reason, result.status.completion_time) == (
        E.SUCCEEDED, "BudgetSpent", EARLIER)


def test_target_reached_is_final_even_after_raising_max_trials() -> None:
    status = finished_status(api.CompletionReason.TARGET_REACHED)
    exp = experiment(max_trials=8, target=0.4, generation=2, status=status)
    result = run(exp, [ok(0), ok(1)])
    assert plan.CreateTrial not in {type(a) for a in result.actions}
    assert result.status.reason == "TargetReached"


def test_raising_max_failed_trials_resumes_a_failed_experiment() -> None:
    status = finished_status(api.CompletionReason.TOO_MANY_FAILURES, phase=E.FAILED)
    result = run(experiment(max_failed=5, max_trials=9, generation=2, status=status), [failed(0), failed(1), ok(2)])
    assert result.status.phase == E.RUNNING
    assert len(result.of_type(plan.CreateTrial)) == 2


# --------------------------------------------------------------------------- export


def test_export_is_repeated_until_the_backend_records_it() -> None:
    status = finished_status(api.CompletionReason.BUDGET_SPENT, exported=False)
    trials = [ok(0, 0.6), ok(1), ok(2), ok(3)]
    assert describe(plan.plan(experiment(status=status), trials, NOW, None)) == ["export exp-0"]
    done = status.model_copy(update={"export": api.ExportStatus(config_map="exp-best")})
    assert describe(plan.plan(experiment(status=done), trials, NOW, None)) == []


def test_export_follows_a_late_better_result() -> None:
    # A trial finished better while the experiment was completing.
    status = finished_status(api.CompletionReason.BUDGET_SPENT)
    result = plan.plan(experiment(status=status), [ok(0), ok(1, 0.99), ok(2), ok(3)], NOW, None)
    assert describe(result) == ["export exp-1"]
    assert result.status.best_trial is not None and result.status.best_trial.name == "exp-1"


# --------------------------------------------------------------------------- status


PARETO = {
    "metrics": [{"name": "accuracy", "goal": "maximize"}, {"name": "latency", "goal": "minimize"}],
    "strategy": "pareto",
}


def measured(index: int, accuracy: float, latency: float) -> api.Trial:
    t = ok(index, accuracy)
    metrics = {"accuracy": accuracy, "latency": latency}
    return t.model_copy(update={"status": t.status.model_copy(update={"metrics": metrics})})


def test_pareto_objective_puts_the_front_in_the_status() -> None:
    trials = [measured(0, 0.9, 5.0), measured(1, 0.8, 1.0), measured(2, 0.7, 3.0), measured(3, 0.95, 9.0)]
    result = run(experiment(objective=PARETO), trials)
    assert [s.name for s in result.status.pareto_front] == ["exp-3", "exp-0", "exp-1"]
    assert result.of_type(plan.ExportBest)[0].trial.name == "exp-3"


def test_pareto_front_in_the_status_is_bounded() -> None:
    trials = [measured(i, i / 100, float(i)) for i in range(80)]
    result = run(experiment(objective=PARETO, max_trials=100), trials)
    assert len(result.status.pareto_front) == api.MAX_PARETO_FRONT


def test_status_counts_progress_and_best() -> None:
    exp = experiment(max_trials=10, parallel=4, max_failed=5)
    result = run(exp, [ok(0, 0.3), ok(1, 0.7), failed(2), trial(3, P.EARLY_STOPPED), running(4)])
    status = result.status
    assert status.trials == api.TrialCounts(
        total=8, pending=3, running=1, succeeded=2, failed=1, early_stopped=1, stopped=0
    )
    assert status.progress == "4/10"
    best = api.TrialSummary(name="exp-1", parameters={"x": 1}, metrics={"accuracy": 0.7}, value=0.7)
    assert status.best_trial == best
    assert status.best_value == 0.7
    assert status.observed_generation == 1
    assert (status.start_time, status.completion_time) == (NOW, None)


def condition(status: api.ExperimentStatus, kind: str) -> tuple[str, str, datetime | None]:
    c = next(c for c in status.conditions if c.type == kind)
    return c.status, c.reason, c.last_transition_time


def test_conditions_keep_their_transition_time_until_their_status_changes() -> None:
    first = run(experiment(), [])
    assert [c.type for c in first.status.conditions] == [
        "Valid", "Running", "Suspended", "Succeeded", "Failed", "Reconciling", "Ready", "Stalled"
    ]
    assert condition(first.status, "Running") == ("True", "TrialsRunning", NOW)

    later = NOW + timedelta(minutes=5)
    second = run(experiment(status=first.status), [ok(0), running(1)], now=later)
    assert condition(second.status, "Running") == ("True", "TrialsRunning", NOW)
    assert second.status.start_time == NOW

    end = NOW + timedelta(minutes=9)
    third = run(experiment(status=second.status), [ok(0), ok(1), ok(2), ok(3)], now=end)
    assert condition(third.status, "Running") == ("False", "BudgetSpent", end)
    assert condition(third.status, "Succeeded") == ("True", "BudgetSpent", end)
    assert condition(third.status, "Failed") == ("False", "NotFinished", NOW)
    assert condition(third.status, "Valid") == ("True", "SpecValid", NOW)
    assert third.status.completion_time == end


def test_suspend_sets_the_condition_and_resume_clears_it() -> None:
    suspended = run(experiment(suspend=True), [running(0)])
    assert condition(suspended.status, "Suspended") == ("True", "SuspendRequested", NOW)
    later = NOW + timedelta(minutes=1)
    resumed = run(experiment(status=suspended.status), [running(0)], now=later)
    assert condition(resumed.status, "Suspended") == ("False", "NotSuspended", later)
    assert describe(resumed) == ["create exp-1"]


KSTATUS = ("Reconciling", "Ready", "Stalled")


def kstatus(status: api.ExperimentStatus) -> dict[str, tuple[str, str]]:
    """The kstatus conditions as (status, reason), by type."""
    return {c.type: (c.status, c.reason) for c in status.conditions if c.type in KSTATUS}


@pytest.mark.parametrize(("name", "exp", "trials", "space", "phase", "reason"),
                         [(c[0], c[1], c[2], c[3], c[5], c[6]) for c in CASES], ids=[c[0] for c in CASES])
def test_kstatus_conditions_follow_the_phase(
    name: str, exp: api.Experiment, trials: list[api.Trial], space: int | None, phase: api.ExperimentPhase,
    reason: str | None,
) -> None:
    """Reconciling while not finished, Ready once Succeeded, Stalled once Failed; observedGeneration current."""
    status = run(exp, trials, space).status
    expected = {
        E.PENDING: {"Reconciling": "True", "Ready": "False", "Stalled": "False"},
        E.RUNNING: {"Reconciling": "True", "Ready": "False", "Stalled": "False"},
        E.SUCCEEDED: {"Reconciling": "False", "Ready": "True", "Stalled": "False"},
        E.FAILED: {"Reconciling": "False", "Ready": "False", "Stalled": "True"},
    }[phase]
    assert {kind: value for kind, (value, _) in kstatus(status).items()} == expected
    if reason is not None:  # the completion reason explains each one but a False Stalled
        assert kstatus(status)["Reconciling"][1] == kstatus(status)["Ready"][1] == reason
    assert status.observed_generation == exp.metadata.generation
    assert all(c.observed_generation == exp.metadata.generation for c in status.conditions)


def test_kstatus_reasons_say_why_the_experiment_is_not_ready() -> None:
    assert kstatus(run(experiment(), [ok(0), running(1)]).status) == {
        "Reconciling": ("True", "TrialsRunning"),
        "Ready": ("False", "TrialsRunning"),
        "Stalled": ("False", "NotStalled"),
    }
    assert kstatus(run(experiment(suspend=True), [running(0)]).status)["Ready"] == ("False", "SuspendRequested")
    resumed = run(experiment(generation=2, max_trials=6, status=finished_status(api.CompletionReason.BUDGET_SPENT)),
                  [ok(0), ok(1), ok(2), ok(3)])
    assert kstatus(resumed.status)["Ready"] == ("False", "TrialsRunning")
    assert resumed.status.observed_generation == 2


def test_invalid_spec_is_stalled() -> None:
    before = run(experiment(), [running(0)]).status
    result = plan.invalid_plan(experiment(generation=4, status=before), "spec.algorithm.name: unknown", NOW)
    assert kstatus(result.status) == {
        "Reconciling": ("False", "InvalidSpec"), "Ready": ("False", "InvalidSpec"), "Stalled": ("True", "InvalidSpec")
    }
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert (stalled.message, stalled.observed_generation) == ("spec.algorithm.name: unknown", 4)
    assert result.status.observed_generation == 4


def test_backend_conditions_are_kept() -> None:
    own = api.Condition(type="Exported", status="True", reason="ConfigMapWritten", last_transition_time=EARLIER)
    result = run(experiment(status=api.ExperimentStatus(conditions=[own])), [])
    assert own in result.status.conditions
    assert len(result.status.conditions) == len(plan.CONDITION_TYPES) + 1


# --------------------------------------------------------------------------- idempotency and crash safety


@pytest.mark.parametrize(("name", "exp", "trials", "space"), [(c[0], c[1], c[2], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_same_inputs_same_plan(name: str, exp: api.Experiment, trials: list[api.Trial], space: int | None) -> None:
    assert run(exp, trials, space) == run(exp, trials, space)


@pytest.mark.parametrize(("name", "exp", "trials", "space"), [(c[0], c[1], c[2], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_applying_creates_then_replanning_creates_nothing(
    name: str, exp: api.Experiment, trials: list[api.Trial], space: int | None
) -> None:
    exp = sized(exp, space)
    suggester = search.Suggester(exp.spec)
    first = plan.plan(exp, trials, NOW, suggester)
    created = [trial(c.index, parameters=dict(c.parameters)) for c in first.of_type(plan.CreateTrial)]
    again = plan.plan(exp.model_copy(update={"status": first.status}), [*trials, *created], NOW, suggester)
    assert again.of_type(plan.CreateTrial) == []
    assert again.status == first.status


def test_a_crash_between_plans_loses_nothing_and_repeats_nothing() -> None:
    """Plan, create only one of two trials (crash), rebuild the Suggester, plan again."""
    first = run(experiment(), [])
    survivor = first.of_type(plan.CreateTrial)[0]
    made = [trial(survivor.index, parameters=dict(survivor.parameters))]
    again = run(experiment(status=first.status), made)  # a fresh Suggester, as after a restart
    [recreated] = again.of_type(plan.CreateTrial)
    assert recreated.name == "exp-1"
    assert recreated.parameters != survivor.parameters


def test_a_whole_experiment_runs_to_exactly_max_trials() -> None:
    exp = experiment(max_trials=7, parallel=3)
    trials: list[api.Trial] = []
    suggester = search.Suggester(exp.spec)
    for step in range(20):
        result = plan.plan(exp, trials, NOW + timedelta(minutes=step), suggester)
        if result.status.phase.is_finished:
            break
        # The backend: create what was asked, finish the oldest running trial, start the pending ones.
        trials += [trial(c.index, parameters=dict(c.parameters)) for c in result.of_type(plan.CreateTrial)]
        oldest = next((t for t in trials if t.phase == P.RUNNING), None)
        trials = [
            with_phase(t, P.SUCCEEDED, t.spec.index / 10) if t is oldest
            else with_phase(t, P.RUNNING) if t.phase == P.PENDING
            else t
            for t in trials
        ]
        exp = exp.model_copy(update={"status": result.status})
    assert (result.status.phase, result.status.reason) == (E.SUCCEEDED, "BudgetSpent")
    assert sorted(t.spec.index for t in trials) == list(range(7))
    assert len({t.spec.parameters["x"] for t in trials}) == 7
    assert result.status.best_trial is not None and result.status.best_trial.name == "exp-6"


def with_phase(t: api.Trial, phase: api.TrialPhase, value: float | None = None) -> api.Trial:
    metrics = {} if value is None else {"accuracy": value}
    return t.model_copy(update={"status": api.TrialStatus(phase=phase, metrics=metrics)})


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan.plan(experiment(), [], datetime(2026, 1, 1), search.Suggester(experiment().spec))


def test_finished_experiment_reevaluated_without_a_suggester_is_a_clear_error() -> None:
    exp = experiment(generation=2, status=finished_status(api.CompletionReason.BUDGET_SPENT))
    with pytest.raises(ValueError, match="needs a suggester"):
        plan.plan(exp, [], NOW, None)


# --------------------------------------------------------------------------- invalid spec


def test_invalid_spec_fails_with_valid_false() -> None:
    body = {"metadata": {"name": "exp", "generation": 3}, "spec": {"budget": "nonsense"}}
    result = plan.invalid_plan(body, "spec.budget: must be an object", NOW, trials=[running(0)])
    assert describe(result) == ["stop exp-0 ExperimentFinished", "complete Failed InvalidSpec"]
    status = result.status
    assert (status.phase, status.reason, status.message) == (E.FAILED, "InvalidSpec", "spec.budget: must be an object")
    assert condition(status, "Valid") == ("False", "InvalidSpec", NOW)
    assert condition(status, "Failed") == ("True", "InvalidSpec", NOW)
    assert status.observed_generation == 3


def test_invalid_spec_reported_once_then_quiet() -> None:
    first = plan.invalid_plan({"metadata": {"name": "exp"}}, "bad", NOW)
    body = {"metadata": {"name": "exp"}, "status": first.status.to_wire()}
    again = plan.invalid_plan(body, "bad", NOW + timedelta(minutes=1))
    assert describe(again) == []
    assert again.status.completion_time == NOW


def test_invalid_body_with_garbage_status_and_metadata() -> None:
    result = plan.invalid_plan({"metadata": {"name": 7, "generation": "x"}, "status": {"phase": 3}}, "bad", NOW)
    assert result.status.phase == E.FAILED


def test_invalid_plan_for_a_parsed_experiment_keeps_its_status() -> None:
    """The operator-only checks failed on a running experiment (e.g. an unknown algorithm)."""
    before = run(experiment(), [ok(0, 0.7), running(1)]).status
    result = plan.invalid_plan(experiment(status=before), "spec.algorithm.name: unknown", NOW, [ok(0, 0.7), running(1)])
    assert describe(result) == ["stop exp-1 ExperimentFinished", "complete Failed InvalidSpec"]
    assert result.status.best_trial == before.best_trial
    assert result.status.start_time == before.start_time
    assert condition(result.status, "Running") == ("False", "InvalidSpec", NOW)


def test_fixed_spec_runs_again() -> None:
    invalid = plan.invalid_plan({"metadata": {"name": "exp", "generation": 1}}, "bad", NOW)
    result = run(experiment(generation=2, status=invalid.status), [])
    assert describe(result) == ["create exp-0", "create exp-1"]
    assert condition(result.status, "Valid") == ("True", "SpecValid", NOW)
    assert result.status.phase == E.RUNNING


@pytest.mark.parametrize(
    ("stopping", "expected"),
    [
        pytest.param({"rule": "median"}, api.Goal.MAXIMIZE, id="objective-metric-default"),
        pytest.param(
            {"rule": "median", "metric": "val_loss", "goal": "minimize"}, api.Goal.MINIMIZE, id="explicit-goal"
        ),
    ],
)
def test_early_stopping_judges_the_curve_in_its_own_direction(stopping: dict[str, Any], expected: api.Goal) -> None:
    exp = experiment(objective={"metric": "accuracy", "goal": "maximize", "additionalMetrics": ["val_loss"]})
    spec = exp.spec.model_copy(update={"early_stopping": api.EarlyStopping.model_validate(stopping)})
    assert plan.planner.curve_goal(spec) is expected


def test_queued_trials_hold_their_parallel_slots_and_are_counted_apart() -> None:
    exp = experiment(max_trials=6, parallel=3)
    result = run(exp, [trial(0, P.QUEUED), trial(1, P.QUEUED), running(2)])
    assert result.of_type(plan.CreateTrial) == []  # the queue is not flooded
    counts = result.status.trials
    assert (counts.queued, counts.running, counts.pending, counts.total) == (2, 1, 0, 3)
    assert result.status.phase == E.RUNNING
    running_condition = next(c for c in result.status.conditions if c.type == "Running")
    assert "3 trials active (2 queued)" in running_condition.message
    assert len(run(exp, [trial(0, P.QUEUED), ok(1)]).of_type(plan.CreateTrial)) == 2


def test_a_queued_trial_is_stopped_when_the_experiment_ends() -> None:
    result = run(experiment(max_trials=2, parallel=2, target=0.5), [ok(0, 0.9), trial(1, P.QUEUED)])
    assert [s.name for s in result.of_type(plan.StopTrial)] == ["exp-1"]
