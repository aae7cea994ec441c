"""The planner: one pure function from (experiment, observed trials, now) to actions and status.

Both backends call ``plan`` on every reconcile and apply what it returns; all budget,
parallelism, failure-limit, early-stopping, target and completion arithmetic lives here.
It reads no clock and does no I/O; the only state it touches is the Suggester it is handed
(``sync`` is idempotent, ``ask`` proposes new configurations).

The planner is level-triggered: it looks at the trials as they are, never at what it did
before, so a backend that crashed half-way through applying a plan simply plans again.
Trial objects are the record: a trial that exists (even with no status yet) counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from kubenas import api, earlystop, objective
from kubenas.plan import gradient, measurement, oneshot, status
from kubenas.plan.actions import (
    Action,
    CompleteExperiment,
    CreateTrial,
    Decision,
    ExportBest,
    Outcome,
    Plan,
    PromoteTrial,
    StopTrial,
    Suggester,
    TellResult,
)
from kubenas.plan.staging import Stages


def needs_suggester(experiment: api.Experiment) -> bool:
    """Whether ``plan`` will use a Suggester for this experiment.

    A terminal experiment whose spec has not changed since it finished is only kept
    tidy (stray trials stopped, the best exported), so a backend can skip building
    (and replaying) a Suggester for it and pass None.
    """
    current = experiment.status
    return current is None or not current.phase.is_finished or _reevaluate(experiment)


def plan(
    experiment: api.Experiment,
    trials: Sequence[api.Trial],
    now: datetime,
    suggester: Suggester | None,
    *,
    measure_cost: bool = False,
) -> Plan:
    """Decide what to do for ``experiment`` given its observed ``trials`` at time ``now``.

    Args:
        experiment: the parsed, valid Experiment, with the status last written (or None).
        trials: every Trial object of this experiment, in any order, any phase.
        now: the current time (timezone-aware); the planner never reads a clock.
        suggester: the experiment's Suggester; it is ``sync``ed with ``trials`` and asked
            for new configurations. May be None when ``needs_suggester`` is False.
        measure_cost: the backend can measure a succeeded trial's latency again from its
            saved model (``MeasureCost``); without that, ``spec.costMeasurement`` is not acted on.

    Returns:
        The actions to apply and the Experiment status to write after applying them.

    Raises:
        ValueError: ``now`` is naive, or no suggester was given but one is needed.
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now.isoformat()}")
    spec = experiment.spec
    prev = experiment.status or api.ExperimentStatus()
    start = prev.start_time or now
    staged = stages_of(spec)
    searched = trials if staged is None else staged.searched_trials(trials)
    told = suggester.sync(searched) if suggester is not None else []
    by_name = {t.name: t for t in trials}
    tells = tuple(TellResult(name, by_name[name].phase) for name in told if name in by_name)

    was_terminal = prev.phase.is_finished
    decision: Decision | None = None
    if not was_terminal or _reevaluate(experiment):
        if suggester is None:
            raise ValueError(f"experiment {experiment.metadata.name!r} needs a suggester to plan")
        decision = _decide(experiment, trials, now, start, suggester, measure_cost)
    if was_terminal and (decision is None or decision.outcome is not None):
        # Finished stays finished: keep the original outcome, only tidy up stray trials.
        kept = Outcome(prev.phase, prev.reason or "", prev.message or "")
        decision = Decision(kept, stops=stop_all(trials, kept))
    assert decision is not None

    outcome = decision.outcome
    completed_now = outcome is not None and not was_terminal
    best, front = status.best_and_front(spec.objective, results_of(spec, trials))
    exported = status.export_candidate(best, front)
    new_status = status.build_status(
        experiment, trials, decision, now, start, best, front, reopened=was_terminal and not outcome
    )
    if staged is not None:
        finished = new_status.trials.total - new_status.trials.pending - new_status.trials.queued
        finished -= new_status.trials.running
        stage = staged.stage(trials, decision.creates)
        planned = staged.planned_trials(spec, [*trials, *map(_created, decision.creates)])
        new_status = new_status.model_copy(update={"stage": stage, "progress": f"{finished}/{planned}"})

    actions: list[Action] = [*tells, *decision.stops, *decision.promotions, *decision.creates, *decision.measurements]
    if completed_now and outcome is not None:
        actions.append(CompleteExperiment(outcome.phase, api.CompletionReason(outcome.reason), outcome.message))
    if outcome is not None and exported is not None and (completed_now or status.export_stale(prev, exported)):
        actions.append(ExportBest(exported))
    return Plan(tuple(actions), new_status)


def stages_of(spec: api.ExperimentSpec) -> Stages | None:
    """The stage logic of a staged experiment (oneShot, gradientSearch); None for a black-box search."""
    if spec.one_shot is not None:
        return oneshot
    if spec.gradient_search is not None:
        return gradient
    return None


def results_of(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> list[api.Trial]:
    """The trials whose results count for the experiment (staged: only the retrained ones)."""
    staged = stages_of(spec)
    return list(trials) if staged is None else staged.retrained(trials)


def planned_trials(spec: api.ExperimentSpec, trials: Sequence[api.Trial] = ()) -> int:
    """Trials the experiment runs when nothing fails: ``maxTrials``, or the stages' total (given the trials)."""
    staged = stages_of(spec)
    return spec.budget.max_trials if staged is None else staged.planned_trials(spec, trials)


def _created(action: CreateTrial) -> api.Trial:
    return api.Trial(
        metadata=api.ObjectMeta(name=action.name),
        spec=api.TrialSpec(experiment="", index=action.index, parameters=dict(action.parameters)),
    )


def _decide(
    experiment: api.Experiment,
    trials: Sequence[api.Trial],
    now: datetime,
    start: datetime,
    suggester: Suggester,
    measure_cost: bool,
) -> Decision:
    spec = experiment.spec
    budget = spec.budget
    counted = results_of(spec, trials)
    target = objective.reached_target(spec.objective, counted) if spec.objective.target_value is not None else None
    failed = sum(t.phase == api.TrialPhase.FAILED for t in trials)
    limit = budget.max_duration_seconds

    outcome: Outcome | None = None
    if target is not None:
        outcome = _success(
            api.CompletionReason.TARGET_REACHED,
            f"trial {target.name} reached targetValue {spec.objective.target_value:g}",
            counted,
            spec,
        )
    elif budget.max_failed_trials is not None and failed > budget.max_failed_trials:
        outcome = Outcome(
            api.ExperimentPhase.FAILED,
            api.CompletionReason.TOO_MANY_FAILURES,
            f"{failed} trials failed; maxFailedTrials is {budget.max_failed_trials}",
        )
    elif limit is not None and now - start >= timedelta(seconds=limit):
        outcome = _success(
            api.CompletionReason.MAX_DURATION, f"maxDuration {budget.max_duration} reached", counted, spec
        )
    if outcome is not None:
        return Decision(outcome, stops=stop_all(trials, outcome))

    stopping, promotions = _early_stops(spec, counted)
    stopping |= _infeasible_stops(spec, counted)  # "infeasible" says more than a rule's verdict
    # Stopping a trial whose training is done saves nothing and loses its result.
    finishing = {t.name for t in trials if trained_to_the_end(t)}
    stopping = {name: stop for name, stop in stopping.items() if name not in finishing}
    promotions = tuple(p for p in promotions if p.name not in stopping)
    active = [t for t in trials if not t.phase.is_finished]
    occupied = sum(t.name not in stopping for t in active)
    measurements = measurement.measurements_due(spec, counted) if measure_cost else ()
    measuring = measure_cost and measurement.pending(spec, counted)
    staged = stages_of(spec)
    if staged is not None:
        slots = 0 if spec.suspend else max(0, budget.parallel_trials - occupied)
        following = staged.next_trials(spec, experiment.metadata.name, trials, suggester, slots)
        creates = following.creates
        if not active and not creates and not measuring and following.done:
            if following.problem is not None:
                failed_reason = api.CompletionReason.NO_SUCCESSFUL_TRIAL
                outcome = Outcome(api.ExperimentPhase.FAILED, failed_reason, following.problem)
            else:
                outcome = _success(api.CompletionReason.BUDGET_SPENT, staged.finished_message(spec), counted, spec)
        return Decision(
            outcome, creates=creates, stops=tuple(stopping.values()), promotions=promotions, measurements=measurements
        )
    slots = 0 if spec.suspend else max(0, min(budget.parallel_trials - occupied, budget.max_trials - len(trials)))
    creates = _creates(experiment.metadata.name, trials, suggester.ask(slots) if slots else [])

    if not active and not creates and not measuring:
        if len(trials) >= budget.max_trials:
            outcome = _success(
                api.CompletionReason.BUDGET_SPENT,
                f"all {len(trials)} trials finished (maxTrials {budget.max_trials})",
                trials,
                spec,
            )
        elif suggester.exhausted:
            outcome = _success(
                api.CompletionReason.SPACE_EXHAUSTED,
                f"the search space is exhausted after {len(trials)} trials",
                trials,
                spec,
            )
    return Decision(
        outcome, creates=creates, stops=tuple(stopping.values()), promotions=promotions, measurements=measurements
    )


def _success(
    reason: api.CompletionReason, message: str, trials: Sequence[api.Trial], spec: api.ExperimentSpec
) -> Outcome:
    best, front = status.best_and_front(spec.objective, trials)
    if best is None and not front:
        return Outcome(
            api.ExperimentPhase.FAILED,
            api.CompletionReason.NO_SUCCESSFUL_TRIAL,
            f"{message}, but no trial succeeded with a feasible result",
        )
    return Outcome(api.ExperimentPhase.SUCCEEDED, reason, message)


def _early_stops(
    spec: api.ExperimentSpec, trials: Sequence[api.Trial]
) -> tuple[dict[str, StopTrial], tuple[PromoteTrial, ...]]:
    rule = earlystop.effective(spec)
    verdicts = earlystop.judge_all(rule, trials, curve_goal(spec))
    stops = {
        name: StopTrial(name, api.TrialReason.EARLY_STOPPED, f"{rule.rule} rule: {why}")
        for name, why in verdicts.stops.items()
    }
    return stops, tuple(PromoteTrial(name, rung) for name, rung in verdicts.promotions.items())


def trained_to_the_end(trial: api.Trial) -> bool:
    """The trial has reported the final step it announced: it is only finishing (evaluating, exporting)."""
    step, final = trial.status.step, trial.status.final_step
    return step is not None and final is not None and step >= final


def _infeasible_stops(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> dict[str, StopTrial]:
    """Running trials that already reported a value breaking a ``stopEarly`` constraint."""
    stops = {}
    for trial in trials:
        if trial.phase == api.TrialPhase.RUNNING and trial.status.reported:
            why = objective.reported_violation(spec.objective, trial.status.reported)
            if why is not None:
                stops[trial.name] = StopTrial(trial.name, api.TrialReason.EARLY_STOPPED, f"infeasible: {why}")
    return stops


def curve_goal(spec: api.ExperimentSpec) -> api.Goal:
    """The direction of the early-stopping metric.

    ``earlyStopping.goal`` when given, else the goal of the objective metric of that name
    (validation requires a goal for a metric outside the objective).
    """
    if spec.early_stopping.goal is not None:
        return spec.early_stopping.goal
    metrics = spec.objective.objective_metrics()
    name = objective.curve_metric(spec)
    for metric in metrics:
        if metric.name == name:
            return metric.goal
    return metrics[0].goal if metrics else api.Goal.MAXIMIZE


def _creates(
    experiment: str, trials: Sequence[api.Trial], configs: Sequence[Mapping[str, api.ParameterValue]]
) -> tuple[CreateTrial, ...]:
    first = max((t.spec.index for t in trials), default=-1) + 1
    return tuple(
        CreateTrial(api.trial_name(experiment, first + i), first + i, dict(config)) for i, config in enumerate(configs)
    )


def stop_all(trials: Sequence[api.Trial], outcome: Outcome) -> tuple[StopTrial, ...]:
    message = f"experiment {outcome.phase.value}: {outcome.reason}"
    return tuple(
        StopTrial(t.name, api.TrialReason.EXPERIMENT_FINISHED, message) for t in trials if not t.phase.is_finished
    )


def _reevaluate(experiment: api.Experiment) -> bool:
    """A terminal experiment is looked at again once after each spec change (or always, without generations)."""
    current = experiment.status
    if current is None or current.phase == api.ExperimentPhase.STOPPED:
        return False
    generation = experiment.metadata.generation
    if generation is None:
        return True
    seen = next((c.observed_generation for c in current.conditions if c.type == current.phase.value), None)
    return seen is None or seen < generation


# --------------------------------------------------------------------------- invalid spec


def invalid_plan(
    experiment: api.Experiment | Mapping[str, Any],
    message: str,
    now: datetime,
    trials: Sequence[api.Trial] = (),
) -> Plan:
    """The plan for an Experiment whose spec cannot be parsed or validated.

    The experiment fails with reason ``InvalidSpec`` and ``Valid=False``; its unfinished
    trials are stopped. Once the spec is fixed (a new generation), ``plan`` runs it again.

    Args:
        experiment: the parsed Experiment, or its raw body when the spec does not parse.
        message: what is wrong, naming the field (shown in the status and in events).
        now: the current time.
        trials: the experiment's trials, if the backend has them (to stop and count them).
    """
    metadata, prev = _lenient(experiment)
    message = message[:1024]
    outcome = Outcome(api.ExperimentPhase.FAILED, api.CompletionReason.INVALID_SPEC, message)
    already = prev.phase == api.ExperimentPhase.FAILED and prev.reason == outcome.reason
    wanted = {
        "Valid": ("False", outcome.reason, message),
        "Running": ("False", outcome.reason, message),
        "Suspended": ("False", "NotSuspended", ""),
        "Succeeded": ("False", status.NOT_FINISHED, ""),
        "Failed": ("True", outcome.reason, message),
        **status.kstatus_conditions(outcome),
    }
    new_status = prev.model_copy(
        update={
            "phase": outcome.phase,
            "reason": outcome.reason,
            "message": message,
            "conditions": status.conditions(prev.conditions, wanted, now, metadata.generation),
            "observed_generation": metadata.generation,
            "trials": status.count_trials(trials) if trials else prev.trials,
            "completion_time": prev.completion_time if already and prev.completion_time else now,
        }
    )
    actions: list[Action] = list(stop_all(trials, outcome))
    if not (already and prev.message == message):
        actions.append(CompleteExperiment(outcome.phase, api.CompletionReason.INVALID_SPEC, message))
    return Plan(tuple(actions), new_status)


def _lenient(experiment: api.Experiment | Mapping[str, Any]) -> tuple[api.ObjectMeta, api.ExperimentStatus]:
    if isinstance(experiment, api.Experiment):
        return experiment.metadata, experiment.status or api.ExperimentStatus()
    raw_meta = experiment.get("metadata")
    try:
        metadata = api.ObjectMeta.model_validate(raw_meta)
    except ValueError:
        name = raw_meta.get("name") if isinstance(raw_meta, Mapping) else None
        metadata = api.ObjectMeta(name=str(name or ""))
    try:
        parsed = api.ExperimentStatus.model_validate(experiment.get("status") or {})
    except ValueError:
        parsed = api.ExperimentStatus()
    return metadata, parsed
