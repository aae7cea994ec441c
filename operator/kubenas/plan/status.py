"""The Experiment status the planner returns: counts, best trial, Pareto front, conditions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from kubenas import api, objective
from kubenas.plan.actions import Decision, Outcome

SPEC_VALID = "SpecValid"
NOT_FINISHED = "NotFinished"
NOT_STALLED = "NotStalled"
CONDITION_TYPES = ("Valid", "Running", "Suspended", "Succeeded", "Failed", "Reconciling", "Ready", "Stalled")


def best_and_front(
    obj: api.Objective, trials: Sequence[api.Trial]
) -> tuple[api.TrialSummary | None, list[api.TrialSummary]]:
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


def export_candidate(best: api.TrialSummary | None, front: Sequence[api.TrialSummary]) -> api.TrialSummary | None:
    return best if best is not None else (front[0] if front else None)


def export_stale(prev: api.ExperimentStatus, candidate: api.TrialSummary) -> bool:
    """Export again until the backend recorded it, and whenever the exported trial changed."""
    exported = export_candidate(prev.best_trial, prev.pareto_front)
    return prev.export is None or exported is None or exported.name != candidate.name


def build_status(
    experiment: api.Experiment,
    trials: Sequence[api.Trial],
    decision: Decision,
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
    active = counts.pending + counts.queued + counts.running

    if outcome is not None:
        phase = outcome.phase
        completion = prev.completion_time if prev.phase.is_finished and prev.completion_time else now
        running = ("False", outcome.reason, outcome.message)
    else:
        phase = api.ExperimentPhase.RUNNING if counts.total else api.ExperimentPhase.PENDING
        completion = None
        queued = f" ({counts.queued} queued)" if counts.queued else ""
        detail = f"{active} trials active{queued}, {finished}/{spec.budget.max_trials} finished"
        running = ("True", "TrialsRunning", detail) if counts.total else ("False", "NoTrialsYet", detail)
    suspended = spec.suspend and outcome is None
    suspension = (
        ("True", "SuspendRequested", "spec.suspend is true: no new trials; running trials finish")
        if suspended
        else ("False", "NotSuspended", "")
    )
    _, *why_not_done = suspension if suspended else running
    wanted = {
        "Valid": ("True", SPEC_VALID, ""),
        "Running": running,
        "Suspended": suspension,
        "Succeeded": _terminal_condition(outcome, api.ExperimentPhase.SUCCEEDED, reopened),
        "Failed": _terminal_condition(outcome, api.ExperimentPhase.FAILED, reopened),
        **kstatus_conditions(outcome, (why_not_done[0], why_not_done[1])),
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


def _terminal_condition(outcome: Outcome | None, phase: api.ExperimentPhase, reopened: bool) -> tuple[str, str, str]:
    if outcome is not None and outcome.phase == phase:
        return "True", outcome.reason, outcome.message
    if reopened:
        return "False", "Resumed", "the spec changed and the experiment runs again"
    return "False", NOT_FINISHED, ""


def kstatus_conditions(
    outcome: Outcome | None, progress: tuple[str, str] = (NOT_FINISHED, "")
) -> dict[str, tuple[str, str, str]]:
    """The conditions generic tools read (kstatus: Flux, ``kubectl wait``, cli-utils), from the outcome.

    ``Reconciling`` is True until the experiment ends (kstatus: InProgress); ``Ready`` is True
    once it Succeeded; ``Stalled`` is True when it Failed (kstatus: Failed), InvalidSpec included.

    Args:
        outcome: how the experiment ended, or None while it has not.
        progress: while it has not ended, why not (reason, message): they explain
            Reconciling=True and Ready=False.
    """
    if outcome is None:
        reason, message = progress
        return {
            "Reconciling": ("True", reason, message),
            "Ready": ("False", reason, message),
            "Stalled": ("False", NOT_STALLED, ""),
        }
    ended = (outcome.reason, outcome.message)
    failed = outcome.phase == api.ExperimentPhase.FAILED
    return {
        "Reconciling": ("False", *ended),
        "Ready": ("True" if outcome.phase == api.ExperimentPhase.SUCCEEDED else "False", *ended),
        "Stalled": ("True", *ended) if failed else ("False", NOT_STALLED, ""),
    }


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
        queued=by_phase[api.TrialPhase.QUEUED],
        running=by_phase[api.TrialPhase.RUNNING],
        succeeded=by_phase[api.TrialPhase.SUCCEEDED],
        failed=by_phase[api.TrialPhase.FAILED],
        early_stopped=by_phase[api.TrialPhase.EARLY_STOPPED],
        stopped=by_phase[api.TrialPhase.STOPPED],
    )


# --------------------------------------------------------------------------- invalid spec
