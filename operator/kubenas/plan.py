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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from kubenas import api, earlystop, objective

SPEC_VALID = "SpecValid"
NOT_FINISHED = "NotFinished"
CONDITION_TYPES = ("Valid", "Running", "Suspended", "Succeeded", "Failed")

A = TypeVar("A")


class Suggester(Protocol):
    """What the planner needs from ``kubenas.search.Suggester``."""

    def sync(self, trials: Sequence[api.Trial]) -> list[str]: ...

    def ask(self, n: int) -> list[dict[str, api.ParameterValue]]: ...

    @property
    def exhausted(self) -> bool: ...


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class CreateTrial:
    """Create Trial ``name`` (``<experiment>-<index>``) with these parameters, then its workload."""

    name: str
    index: int
    parameters: Mapping[str, api.ParameterValue]


@dataclass(frozen=True)
class StopTrial:
    """End a pending or running trial; the backend records ``reason`` as its final reason.

    ``EarlyStopped`` becomes trial phase EarlyStopped; ``ExperimentFinished`` becomes Stopped.
    """

    name: str
    reason: api.TrialReason
    message: str


@dataclass(frozen=True)
class TellResult:
    """Informational: this finished trial's result was newly told to the optimizer."""

    name: str
    phase: api.TrialPhase


@dataclass(frozen=True)
class CompleteExperiment:
    """The experiment reached a terminal phase in this plan (emitted once, on the transition)."""

    phase: api.ExperimentPhase
    reason: api.CompletionReason
    message: str


@dataclass(frozen=True)
class ExportBest:
    """Export this trial as the experiment's result (ConfigMap, best.json, artifacts)."""

    trial: api.TrialSummary


Action = CreateTrial | StopTrial | TellResult | CompleteExperiment | ExportBest


@dataclass(frozen=True)
class Plan:
    """What to do now, and the whole Experiment status to write once it is done.

    Actions come in the order to apply them: tells, stops, creates, completion, export.
    """

    actions: tuple[Action, ...]
    status: api.ExperimentStatus

    def of_type(self, kind: type[A]) -> list[A]:
        """The actions of one kind, in order."""
        return [a for a in self.actions if isinstance(a, kind)]


@dataclass(frozen=True)
class _Outcome:
    phase: api.ExperimentPhase
    reason: str  # a CompletionReason, unless an older status said otherwise
    message: str


@dataclass(frozen=True)
class _Decision:
    outcome: _Outcome | None
    creates: tuple[CreateTrial, ...] = ()
    stops: tuple[StopTrial, ...] = ()


# --------------------------------------------------------------------------- plan


def needs_suggester(experiment: api.Experiment) -> bool:
    """Whether ``plan`` will use a Suggester for this experiment.

    A terminal experiment whose spec has not changed since it finished is only kept
    tidy (stray trials stopped, the best exported), so a backend can skip building
    (and replaying) a Suggester for it and pass None.
    """
    status = experiment.status
    return status is None or not status.phase.is_finished or _reevaluate(experiment)


def plan(experiment: api.Experiment, trials: Sequence[api.Trial], now: datetime, suggester: Suggester | None) -> Plan:
    """Decide what to do for ``experiment`` given its observed ``trials`` at time ``now``.

    Args:
        experiment: the parsed, valid Experiment, with the status last written (or None).
        trials: every Trial object of this experiment, in any order, any phase.
        now: the current time (timezone-aware); the planner never reads a clock.
        suggester: the experiment's Suggester; it is ``sync``ed with ``trials`` and asked
            for new configurations. May be None when ``needs_suggester`` is False.

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
    told = suggester.sync(trials) if suggester is not None else []
    by_name = {t.name: t for t in trials}
    tells = tuple(TellResult(name, by_name[name].phase) for name in told if name in by_name)

    was_terminal = prev.phase.is_finished
    decision: _Decision | None = None
    if not was_terminal or _reevaluate(experiment):
        if suggester is None:
            raise ValueError(f"experiment {experiment.metadata.name!r} needs a suggester to plan")
        decision = _decide(experiment, trials, now, start, suggester)
    if was_terminal and (decision is None or decision.outcome is not None):
        # Finished stays finished: keep the original outcome, only tidy up stray trials.
        kept = _Outcome(prev.phase, prev.reason or "", prev.message or "")
        decision = _Decision(kept, stops=_stop_all(trials, kept))
    assert decision is not None

    outcome = decision.outcome
    completed_now = outcome is not None and not was_terminal
    best, front = _best(spec.objective, trials)
    exported = _export_candidate(best, front)
    status = _status(experiment, trials, decision, now, start, best, front, reopened=was_terminal and not outcome)

    actions: list[Action] = [*tells, *decision.stops, *decision.creates]
    if completed_now and outcome is not None:
        actions.append(CompleteExperiment(outcome.phase, api.CompletionReason(outcome.reason), outcome.message))
    if outcome is not None and exported is not None and (completed_now or _export_stale(prev, exported)):
        actions.append(ExportBest(exported))
    return Plan(tuple(actions), status)


def _decide(
    experiment: api.Experiment, trials: Sequence[api.Trial], now: datetime, start: datetime, suggester: Suggester
) -> _Decision:
    spec = experiment.spec
    budget = spec.budget
    target = objective.reached_target(spec.objective, trials) if spec.objective.target_value is not None else None
    failed = sum(t.phase == api.TrialPhase.FAILED for t in trials)
    limit = budget.max_duration_seconds

    outcome: _Outcome | None = None
    if target is not None:
        outcome = _success(
            api.CompletionReason.TARGET_REACHED,
            f"trial {target.name} reached targetValue {spec.objective.target_value:g}",
            trials,
            spec,
        )
    elif budget.max_failed_trials is not None and failed > budget.max_failed_trials:
        outcome = _Outcome(
            api.ExperimentPhase.FAILED,
            api.CompletionReason.TOO_MANY_FAILURES,
            f"{failed} trials failed; maxFailedTrials is {budget.max_failed_trials}",
        )
    elif limit is not None and now - start >= timedelta(seconds=limit):
        outcome = _success(
            api.CompletionReason.MAX_DURATION, f"maxDuration {budget.max_duration} reached", trials, spec
        )
    if outcome is not None:
        return _Decision(outcome, stops=_stop_all(trials, outcome))

    stopping = _early_stops(spec, trials)
    active = [t for t in trials if not t.phase.is_finished]
    occupied = sum(t.name not in stopping for t in active)
    slots = 0 if spec.suspend else max(0, min(budget.parallel_trials - occupied, budget.max_trials - len(trials)))
    creates = _creates(experiment.metadata.name, trials, suggester.ask(slots) if slots else [])

    if not active and not creates:
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
    return _Decision(outcome, creates=creates, stops=tuple(stopping.values()))


def _success(
    reason: api.CompletionReason, message: str, trials: Sequence[api.Trial], spec: api.ExperimentSpec
) -> _Outcome:
    best, front = _best(spec.objective, trials)
    if best is None and not front:
        return _Outcome(
            api.ExperimentPhase.FAILED,
            api.CompletionReason.NO_SUCCESSFUL_TRIAL,
            f"{message}, but no trial succeeded with a feasible result",
        )
    return _Outcome(api.ExperimentPhase.SUCCEEDED, reason, message)


def _early_stops(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> dict[str, StopTrial]:
    rule = spec.early_stopping
    reasons = earlystop.judge_all(rule, trials, curve_goal(spec))
    return {
        name: StopTrial(name, api.TrialReason.EARLY_STOPPED, f"{rule.rule.value} rule: {why}")
        for name, why in reasons.items()
    }


def curve_goal(spec: api.ExperimentSpec) -> api.Goal:
    """The direction of the early-stopping metric.

    It is the goal of the objective metric of that name; a metric outside the objective
    takes the first objective metric's goal.
    """
    metrics = spec.objective.objective_metrics()
    name = spec.early_stopping.metric
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


def _stop_all(trials: Sequence[api.Trial], outcome: _Outcome) -> tuple[StopTrial, ...]:
    message = f"experiment {outcome.phase.value}: {outcome.reason}"
    return tuple(
        StopTrial(t.name, api.TrialReason.EXPERIMENT_FINISHED, message) for t in trials if not t.phase.is_finished
    )


def _reevaluate(experiment: api.Experiment) -> bool:
    """A terminal experiment is looked at again once after each spec change (or always, without generations)."""
    status = experiment.status
    if status is None or status.phase == api.ExperimentPhase.STOPPED:
        return False
    generation = experiment.metadata.generation
    if generation is None:
        return True
    seen = next((c.observed_generation for c in status.conditions if c.type == status.phase.value), None)
    return seen is None or seen < generation


# --------------------------------------------------------------------------- status


def _best(obj: api.Objective, trials: Sequence[api.Trial]) -> tuple[api.TrialSummary | None, list[api.TrialSummary]]:
    best = objective.best_trial(obj, trials)
    front = objective.pareto_front(obj, trials, limit=api.MAX_PARETO_FRONT) if obj.is_pareto else []
    return (None if best is None else summarize(obj, best)), [summarize(obj, t) for t in front]


def summarize(obj: api.Objective, trial: api.Trial) -> api.TrialSummary:
    """A trial as the Experiment status shows it (best trial, Pareto front, export)."""
    return api.TrialSummary(
        name=trial.name,
        parameters=dict(trial.spec.parameters),
        metrics=dict(trial.status.metrics),
        value=objective.scalar_value(obj, trial.status.metrics),
    )


def _export_candidate(best: api.TrialSummary | None, front: Sequence[api.TrialSummary]) -> api.TrialSummary | None:
    return best if best is not None else (front[0] if front else None)


def _export_stale(prev: api.ExperimentStatus, candidate: api.TrialSummary) -> bool:
    """Export again until the backend recorded it, and whenever the exported trial changed."""
    exported = _export_candidate(prev.best_trial, prev.pareto_front)
    return prev.export is None or exported is None or exported.name != candidate.name


def _status(
    experiment: api.Experiment,
    trials: Sequence[api.Trial],
    decision: _Decision,
    now: datetime,
    start: datetime,
    best: api.TrialSummary | None,
    front: list[api.TrialSummary],
    *,
    reopened: bool,
) -> api.ExperimentStatus:
    spec = experiment.spec
    prev = experiment.status or api.ExperimentStatus()
    generation = experiment.metadata.generation
    outcome = decision.outcome
    counts = count_trials(trials, extra_pending=len(decision.creates))
    finished = counts.succeeded + counts.failed + counts.early_stopped + counts.stopped
    active = counts.pending + counts.running

    if outcome is not None:
        phase = outcome.phase
        completion = prev.completion_time if prev.phase.is_finished and prev.completion_time else now
        running = ("False", outcome.reason, outcome.message)
    else:
        phase = api.ExperimentPhase.RUNNING if counts.total else api.ExperimentPhase.PENDING
        completion = None
        detail = f"{active} trials active, {finished}/{spec.budget.max_trials} finished"
        running = ("True", "TrialsRunning", detail) if counts.total else ("False", "NoTrialsYet", detail)
    suspended = spec.suspend and outcome is None
    wanted = {
        "Valid": ("True", SPEC_VALID, ""),
        "Running": running,
        "Suspended": ("True", "SuspendRequested", "spec.suspend is true: no new trials; running trials finish")
        if suspended
        else ("False", "NotSuspended", ""),
        "Succeeded": _terminal_condition(outcome, api.ExperimentPhase.SUCCEEDED, reopened),
        "Failed": _terminal_condition(outcome, api.ExperimentPhase.FAILED, reopened),
    }
    return api.ExperimentStatus(
        phase=phase,
        reason=outcome.reason if outcome else None,
        message=outcome.message[:1024] if outcome else None,
        conditions=conditions(prev.conditions, wanted, now, generation),
        observed_generation=generation,
        trials=counts,
        progress=f"{finished}/{spec.budget.max_trials}",
        best_trial=best,
        best_value=best.value if best else None,
        pareto_front=front,
        start_time=start,
        completion_time=completion,
        export=None if reopened else prev.export,
    )


def _terminal_condition(outcome: _Outcome | None, phase: api.ExperimentPhase, reopened: bool) -> tuple[str, str, str]:
    if outcome is not None and outcome.phase == phase:
        return "True", outcome.reason, outcome.message
    if reopened:
        return "False", "Resumed", "the spec changed and the experiment runs again"
    return "False", NOT_FINISHED, ""


def conditions(
    previous: Sequence[api.Condition],
    wanted: Mapping[str, tuple[str, str, str]],
    now: datetime,
    generation: int | None,
) -> list[api.Condition]:
    """Conditions ``wanted`` (type → status, reason, message), keeping each one's
    lastTransitionTime from ``previous`` while its status does not change.

    Conditions of other types in ``previous`` (a backend's own) are kept after these.
    """
    old = {c.type: c for c in previous}
    result = []
    for kind, (status, reason, message) in wanted.items():
        before = old.get(kind)
        unchanged = before is not None and before.status == status and before.last_transition_time is not None
        result.append(
            api.Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message[:1024],
                last_transition_time=before.last_transition_time if unchanged and before else now,
                observed_generation=generation,
            )
        )
    others = [c for c in previous if c.type not in wanted]
    return (result + others)[: api.MAX_CONDITIONS]


def count_trials(trials: Sequence[api.Trial], extra_pending: int = 0) -> api.TrialCounts:
    """Trial counts by phase; ``extra_pending`` counts trials about to be created."""
    by_phase = {phase: 0 for phase in api.TrialPhase}
    for trial in trials:
        by_phase[trial.phase] += 1
    return api.TrialCounts(
        total=len(trials) + extra_pending,
        pending=by_phase[api.TrialPhase.PENDING] + extra_pending,
        running=by_phase[api.TrialPhase.RUNNING],
        succeeded=by_phase[api.TrialPhase.SUCCEEDED],
        failed=by_phase[api.TrialPhase.FAILED],
        early_stopped=by_phase[api.TrialPhase.EARLY_STOPPED],
        stopped=by_phase[api.TrialPhase.STOPPED],
    )


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
    outcome = _Outcome(api.ExperimentPhase.FAILED, api.CompletionReason.INVALID_SPEC, message)
    already = prev.phase == api.ExperimentPhase.FAILED and prev.reason == outcome.reason
    wanted = {
        "Valid": ("False", outcome.reason, message),
        "Running": ("False", outcome.reason, message),
        "Suspended": ("False", "NotSuspended", ""),
        "Succeeded": ("False", NOT_FINISHED, ""),
        "Failed": ("True", outcome.reason, message),
    }
    status = prev.model_copy(
        update={
            "phase": outcome.phase,
            "reason": outcome.reason,
            "message": message,
            "conditions": conditions(prev.conditions, wanted, now, metadata.generation),
            "observed_generation": metadata.generation,
            "trials": count_trials(trials) if trials else prev.trials,
            "completion_time": prev.completion_time if already and prev.completion_time else now,
        }
    )
    actions: list[Action] = list(_stop_all(trials, outcome))
    if not (already and prev.message == message):
        actions.append(CompleteExperiment(outcome.phase, api.CompletionReason.INVALID_SPEC, message))
    return Plan(tuple(actions), status)


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
        status = api.ExperimentStatus.model_validate(experiment.get("status") or {})
    except ValueError:
        status = api.ExperimentStatus()
    return metadata, status
