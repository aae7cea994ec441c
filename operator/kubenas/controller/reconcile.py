"""One experiment's reconcile: observe the cluster, ask the planner, apply its actions.

Everything is read fresh from the API server on each run, so the operator holds nothing
that matters in memory: the Suggester cache is a speed-up, rebuilt from the Trials when lost.
The decisions (how many trials, which to stop, when the experiment ends) are the planner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pydantic

from kubenas import api, measurejob, plan, results, validation, workload
from kubenas.controller import apply, context, curves, kube, measurements, observe
from kubenas.controller.context import Context

log = logging.getLogger(__name__)

Key = tuple[str, str]


async def reconcile(ctx: Context, key: Key) -> bool:
    """Reconcile experiment ``key`` (namespace, name); returns whether it is still running.

    A failure is raised for the scheduler to retry with backoff; from the second failure in
    a row it is also shown on the Experiment (condition ``Synced=False`` and an Event), so an
    error that persists is never only in the operator's log.
    """
    started = time.perf_counter()
    try:
        running = await _reconcile(ctx, key)
    except Exception as err:
        ctx.telemetry.reconciled("error", time.perf_counter() - started)
        failures = ctx.failing[key] = ctx.failing.get(key, 0) + 1
        if failures >= context.FAILURES_SHOWN_AFTER:
            await _show_failure(ctx, key, err, first=failures == context.FAILURES_SHOWN_AFTER)
        raise
    ctx.telemetry.reconciled("success", time.perf_counter() - started)
    ctx.failing.pop(key, None)
    return running


SYNCED = "Synced"


async def _show_failure(ctx: Context, key: Key, err: Exception, *, first: bool) -> None:
    """Best effort: condition ``Synced=False`` with the error, and one Event when it starts."""
    namespace, name = key
    reason = "ApiUnavailable" if kube.is_transient(err) else "ReconcileError"
    message = f"reconcile failed {ctx.failing.get(key, 0)} times in a row, retrying: {_error_text(err)}"
    try:
        raw = await ctx.kube.get(kube.EXPERIMENTS, namespace, name)
        old = api.ExperimentStatus.model_validate(raw.get("status") or {})
        new = old.model_copy(update={"conditions": _synced(old.conditions, "False", reason, message)})
        await _write_experiment_status(ctx, raw, new)
        if first:
            await apply.post_event(ctx.kube, raw, reason, message, warning=True)
    except Exception as shown:  # the API may be what is failing: the log and metrics still say it
        log.warning("cannot show the failure on %s/%s: %s", namespace, name, shown)


def _synced(
    conditions: Sequence[api.Condition], status: str, reason: str, message: str
) -> list[api.Condition]:
    """``conditions`` with Synced set (a backend condition; the planner keeps it as it is)."""
    wanted = {c.type: (c.status, c.reason, c.message) for c in conditions}
    wanted[SYNCED] = (status, reason, message)
    generation = next((c.observed_generation for c in conditions if c.type != SYNCED), None)
    return plan.conditions(conditions, wanted, datetime.now(UTC), generation)


async def _reconcile(ctx: Context, key: Key) -> bool:
    namespace, name = key
    try:
        raw, listed = await _read(ctx, namespace, name)
    except kube.NotFound:
        ctx.telemetry.forget(key)
        return False
    now = datetime.now(UTC)
    try:
        experiment = api.Experiment.model_validate(raw)
    except pydantic.ValidationError as err:
        decided = plan.invalid_plan(raw, _error_text(err), now)
        await _apply(ctx, None, raw, [], decided)
        await _write_experiment_status(ctx, raw, decided.status)
        ctx.telemetry.observe(key, decided.status.phase, ())
        return False
    children = _children(experiment, *listed)
    trials = await _observe_trials(ctx, experiment, raw, children, now)
    trials = await measurements.record_finished(ctx, experiment, trials, children.trials, listed[1], listed[2], now)
    await curves.poll(ctx, experiment, trials, children.trials, children.pods)
    try:
        decided = await asyncio.get_running_loop().run_in_executor(ctx.executor, _plan, ctx, experiment, trials, now)
    except Exception as err:  # e.g. an algorithm name no optimizer has, a space the sampler cannot draw from
        if not isinstance(err, KeyError | ValueError):
            log.exception("planning %s/%s failed", *key)
        decided = plan.invalid_plan(experiment, f"the search cannot plan this spec: {_error_text(err)}", now, trials)
    try:
        refused = await _server_refusal(ctx, experiment, decided)
        if refused:
            decided = plan.invalid_plan(experiment, refused, now, trials)
        status = await _apply(ctx, experiment, raw, trials, decided)
        await _ensure_jobs(ctx, experiment, raw, trials, children)
    except TrialRefused as err:
        _remember_problem(ctx, experiment, str(err))
        status = await _apply(ctx, experiment, raw, trials, plan.invalid_plan(experiment, str(err), now, trials))
    except BaseException:
        # Configurations it proposed may not have become Trials: rebuild it from the Trials next time.
        _forget_suggester(ctx, experiment)
        raise
    status = status.model_copy(update={"conditions": _synced_again(status.conditions)})
    await _write_experiment_status(ctx, raw, status)
    ctx.telemetry.observe(key, status.phase, (t.phase for t in trials))
    return not status.phase.is_finished


@dataclass
class _Children:
    trials: list[dict[str, Any]]
    jobs: dict[str, dict[str, Any]]
    pods: dict[str, list[dict[str, Any]]]


Listed = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


async def _read(ctx: Context, namespace: str, name: str) -> tuple[dict[str, Any], Listed]:
    """The experiment and its labelled children in one concurrent round trip (ownership is checked after)."""
    got, listed = await asyncio.gather(
        ctx.kube.get(kube.EXPERIMENTS, namespace, name), _list_children(ctx, namespace, name), return_exceptions=True
    )
    for outcome in (got, listed):  # every read is awaited before any error is raised
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(dict[str, Any], got), cast(Listed, listed)


async def _list_children(ctx: Context, namespace: str, name: str) -> Listed:
    """The Trials, Jobs and Pods labelled with the experiment's name (not yet checked for ownership)."""
    labels = {workload.LABEL_EXPERIMENT: name}
    trials, jobs, pods = await asyncio.gather(
        ctx.kube.list(kube.TRIALS, namespace, labels),
        ctx.kube.list(kube.JOBS, namespace, labels),
        ctx.kube.list(kube.PODS, namespace, labels),
    )
    return trials, jobs, pods


def _children(
    experiment: api.Experiment, trials: list[dict[str, Any]], jobs: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> _Children:
    """The listed children that belong to this experiment (a deleted namesake's are left out)."""
    uid = experiment.metadata.uid
    trials = [t for t in trials if _owned_by(t, uid)]
    trial_uids = {t["metadata"]["uid"]: t["metadata"]["name"] for t in trials if t["metadata"].get("uid")}
    by_trial: dict[str, dict[str, Any]] = {}
    for job in jobs:
        owner = _controller_uid(job)
        if owner in trial_uids and not measurements.is_measurement(job):
            by_trial[trial_uids[owner]] = job
    pods_by: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        pods_by.setdefault(pod["metadata"].get("labels", {}).get(workload.LABEL_TRIAL, ""), []).append(pod)
    return _Children(trials=trials, jobs=by_trial, pods=pods_by)


async def _observe_trials(
    ctx: Context, experiment: api.Experiment, exp_raw: Mapping[str, Any], children: _Children, now: datetime
) -> list[api.Trial]:
    trials: list[api.Trial] = []
    for raw in sorted(children.trials, key=lambda t: t["spec"].get("index", 0)):
        trial = api.Trial.model_validate(_trial_body(raw))
        job = children.jobs.get(trial.name)
        if not trial.phase.is_finished:
            pods = children.pods.get(trial.name, [])
            new = _observed_status(ctx, experiment, trial, job, pods, now)
            if new is not None and new != trial.status:
                await apply.write_status(ctx.kube, kube.TRIALS, raw, new.to_wire())
                if new.phase.is_finished:
                    await _trial_event(ctx, exp_raw, trial.name, new)
                await _interruption_events(ctx, exp_raw, trial, new, pods)
                trial = trial.model_copy(update={"status": new})
        if job is not None and trial.phase.is_finished:
            active = observe.has_live_pods(job, children.pods.get(trial.name, []))
            if active or not experiment.spec.trial_template.retain:
                await ctx.kube.delete(kube.JOBS, job["metadata"]["namespace"], job["metadata"]["name"])
                await _delete_service(ctx, experiment, trial)
        trials.append(trial)
    return trials


def _observed_status(
    ctx: Context,
    experiment: api.Experiment,
    trial: api.Trial,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
) -> api.TrialStatus | None:
    old = trial.status
    if job is None:
        if old.phase in (api.TrialPhase.RUNNING, api.TrialPhase.QUEUED):
            return old.model_copy(
                update={
                    "phase": api.TrialPhase.STOPPED,
                    "reason": api.TrialReason.JOB_DELETED,
                    "message": f"the trial's Job was deleted while the trial was {old.phase}",
                    "completion_time": now,
                }
            )
        return None  # not created yet: _ensure_jobs creates it
    seen = observe.observe(job, pods, now, ctx.settings.unschedulable_seconds)
    old = results.with_disruptions(old, [d.time for d in observe.disruptions(pods) if d.time is not None])
    if seen.state == observe.State.QUEUED:
        return results.requeued(old, seen.message)
    if seen.state == observe.State.PENDING:
        return old.model_copy(update={"phase": api.TrialPhase.PENDING, "message": seen.message})
    start = old.start_time or seen.start_time or now
    if seen.state == observe.State.RUNNING:
        return old.model_copy(update={"phase": api.TrialPhase.RUNNING, "message": None, "start_time": start})
    outcome = results.classify_finished_trial(
        plan.result_objective(experiment.spec, trial),
        exit_code=seen.exit_code,
        result_text=seen.result_text,
        backend_reason=seen.backend_reason,
        backend_message=seen.message,
        rank=seen.rank,
    )
    return old.model_copy(
        update={
            "phase": outcome.phase,
            "reason": outcome.reason,
            "message": outcome.message[:1024],
            "metrics": dict(outcome.metrics),
            "noisy_metrics": list(outcome.noisy_metrics),
            "exit_code": seen.exit_code,
            "start_time": start,
            "completion_time": seen.completion_time or now,
        }
    )


async def _interruption_events(
    ctx: Context, exp_raw: Mapping[str, Any], trial: api.Trial, new: api.TrialStatus, pods: Sequence[Mapping[str, Any]]
) -> None:
    """An Event when a trial's pod was disrupted, or its Job suspended again: neither is a failure."""
    old = trial.status
    if (new.disruptions or 0) > (old.disruptions or 0):
        latest = observe.disruptions(pods)[-1]
        message = f"trial {trial.name}: {latest.describe()}; it resumes from its checkpoint (not a failure)"
        await apply.post_event(ctx.kube, exp_raw, "TrialDisrupted", message, warning=True)
    if (new.requeues or 0) > (old.requeues or 0):
        message = f"trial {trial.name}: its Job was suspended again ({new.message}); it waits to resume"
        await apply.post_event(ctx.kube, exp_raw, "TrialRequeued", message, warning=True)


def _plan(ctx: Context, experiment: api.Experiment, trials: list[api.Trial], now: datetime) -> plan.Plan:
    checked = _spec_key(experiment)
    if checked not in ctx.spec_problems:
        pod_policy = ctx.settings.trial_pod_policy.for_namespace(experiment.metadata.namespace)
        problems = _problems_text(validation.experiment_problems(experiment.spec, pod_policy))
        problem = problems or measurejob.spec_problem(experiment) or workload.one_shot_problem(experiment)
        _remember_problem(ctx, experiment, problem)
    if ctx.spec_problems[checked]:
        return plan.invalid_plan(experiment, ctx.spec_problems[checked], now, trials)
    suggester = None
    if plan.needs_suggester(experiment):
        with ctx.suggesters_lock:  # the cache is shared by the planning threads
            suggester = ctx.suggesters.get(checked[0], experiment.spec)
    return plan.plan(experiment, trials, now, suggester, measure_cost=measurejob.can_measure(experiment))


def _synced_again(conditions: Sequence[api.Condition]) -> list[api.Condition]:
    """After a reconcile that worked, a ``Synced=False`` left by failures becomes True."""
    if not any(c.type == SYNCED and c.status == "False" for c in conditions):
        return list(conditions)
    return _synced(conditions, "True", "Reconciled", "")


class TrialRefused(Exception):
    """The API server refused to create a Trial object: the spec makes Trials it will not store."""


def _spec_key(experiment: api.Experiment) -> tuple[str, int | None]:
    return (experiment.metadata.uid or experiment.metadata.name, experiment.metadata.generation)


def _remember_problem(ctx: Context, experiment: api.Experiment, message: str) -> None:
    """Keep what is wrong with this generation of the spec ("" when nothing); ``_plan`` reports it."""
    if len(ctx.spec_problems) > 1000:  # a cache: forgetting costs a re-validation or one more refused request
        ctx.spec_problems.clear()
    ctx.spec_problems[_spec_key(experiment)] = message[:1024]


async def _server_refusal(ctx: Context, experiment: api.Experiment, decided: plan.Plan) -> str | None:
    """Once per spec generation, before its first new trial: does the API server admit that trial's Job?

    A server-side dry run (``dryRun=All``) sees what no offline check does: admission
    webhooks, policies, quotas on object shape, fields the server requires. Returns the
    refusal as the spec problem to report, or None.
    """
    create = next((a for a in decided.actions if isinstance(a, plan.CreateTrial)), None)
    checked = _spec_key(experiment)
    if create is None or checked in ctx.server_checked:
        return None
    trial = api.Trial.model_validate(workload.build_trial(experiment, create.name, create.index, create.parameters))
    trial.metadata.uid = trial.metadata.uid or DRY_RUN_UID
    try:
        await ctx.kube.create(kube.JOBS, trial.metadata.namespace, workload.build_job(experiment, trial), dry_run=True)
    except kube.ApiError as err:
        if not kube.is_refusal(err):
            raise
        message = f"the API server refuses the trial Job: {err.message or err}"
        _remember_problem(ctx, experiment, message)
        return message
    if len(ctx.server_checked) > 1000:
        ctx.server_checked.clear()
    ctx.server_checked.add(checked)
    return None


DRY_RUN_UID = "00000000-0000-0000-0000-000000000000"


def _forget_suggester(ctx: Context, experiment: api.Experiment) -> None:
    with ctx.suggesters_lock:
        ctx.suggesters.discard(_spec_key(experiment)[0])


async def _apply(
    ctx: Context,
    experiment: api.Experiment | None,
    exp_raw: Mapping[str, Any],
    trials: list[api.Trial],
    decided: plan.Plan,
) -> api.ExperimentStatus:
    """Apply the plan's actions in order; returns the status to write (with the export recorded)."""
    status = decided.status
    by_name = {t.name: i for i, t in enumerate(trials)}
    for action in decided.actions:
        if experiment is None:
            if isinstance(action, plan.CompleteExperiment):
                await apply.post_event(ctx.kube, exp_raw, "InvalidSpec", action.message, warning=True)
            continue
        if isinstance(action, plan.CreateTrial):
            trial = await _create_trial(ctx, experiment, exp_raw, action)
            if trial is not None:
                trials.append(trial)
        elif isinstance(action, plan.StopTrial) and action.name in by_name:
            i = by_name[action.name]
            trials[i] = await _stop_trial(ctx, experiment, exp_raw, trials[i], action)
        elif isinstance(action, plan.PromoteTrial) and action.name in by_name:
            i = by_name[action.name]
            trials[i] = await _promote_trial(ctx, trials[i], action)
        elif isinstance(action, plan.MeasureCost) and action.name in by_name:
            await measurements.start(ctx, experiment, trials[by_name[action.name]], action)
        elif isinstance(action, plan.ExportBest) and experiment.spec.export.config_map:
            artifact = workload.artifact_location(experiment, action.trial.name)
            body = apply.export_config_map(exp_raw, action.trial, artifact)
            await apply.export_best(ctx.kube, body)
            export = api.ExportStatus(config_map=body["metadata"]["name"], artifact=artifact)
            status = status.model_copy(update={"export": export})
        elif isinstance(action, plan.CompleteExperiment):
            old_phase = (exp_raw.get("status") or {}).get("phase")
            if old_phase != action.phase:
                await apply.post_event(
                    ctx.kube,
                    exp_raw,
                    f"Experiment{action.phase}",
                    f"{action.reason}: {action.message}",
                    warning=action.phase != api.ExperimentPhase.SUCCEEDED,
                )
    return status


async def _create_trial(
    ctx: Context, experiment: api.Experiment, exp_raw: Mapping[str, Any], action: plan.CreateTrial
) -> api.Trial | None:
    parameters = workload.trial_parameters(  # one_shot_problem guarantees the supernet an artifact volume
        action.parameters, action.supernet, lambda name: workload.trial_output_dir(experiment, name) or ""
    )
    body = workload.build_trial(experiment, action.name, action.index, parameters)
    try:
        created = await apply.create_owned(ctx.kube, kube.TRIALS, body)
    except apply.OwnedByOther as err:
        log.warning("%s; retrying on a later reconcile", err)
        _forget_suggester(ctx, experiment)
        return None
    except kube.ApiError as err:
        if kube.is_refusal(err):
            raise TrialRefused(f"the API server refuses Trial {action.name}: {err.message or err}") from err
        raise
    trial = await _create_job(ctx, experiment, exp_raw, api.Trial.model_validate(_trial_body(created)))
    params = ", ".join(f"{k}={v}" for k, v in sorted(action.parameters.items()))
    await apply.post_event(ctx.kube, exp_raw, "TrialCreated", f"trial {action.name}: {params}")
    return trial


async def _create_job(
    ctx: Context, experiment: api.Experiment, exp_raw: Mapping[str, Any], trial: api.Trial
) -> api.Trial:
    """Create the trial's Job (a multi-pod trial's Service first); one the API server refuses fails the
    trial (``InvalidTemplate``) at once."""
    service, job = workload.build_service(experiment, trial), workload.build_job(experiment, trial)
    bodies = [(kube.SERVICES, service), (kube.JOBS, job)]
    kind = "Job"
    try:
        for resource, body in bodies:
            if body is not None:
                kind = body["kind"]
                await apply.create_owned(ctx.kube, resource, body)
    except apply.OwnedByOther as err:
        log.warning("%s; retrying on a later reconcile", err)
    except kube.ApiError as err:
        if not kube.is_refusal(err):
            raise
        status = trial.status.model_copy(
            update={
                "phase": api.TrialPhase.FAILED,
                "reason": api.TrialReason.INVALID_TEMPLATE,
                "message": f"the API server refuses the trial {kind}: {err.message or err}"[:1024],
                "completion_time": datetime.now(UTC),
            }
        )
        trial = await _write_trial_status(ctx, trial, status)
        await _trial_event(ctx, exp_raw, trial.name, status)
    return trial


async def _ensure_jobs(
    ctx: Context, experiment: api.Experiment, exp_raw: Mapping[str, Any], trials: list[api.Trial], children: _Children
) -> None:
    """The backstop for a crash between a Trial's create and its Job's create."""
    listed = {t["metadata"]["name"] for t in children.trials}  # new trials got their Job in _create_trial
    for i, trial in enumerate(trials):
        if trial.phase == api.TrialPhase.PENDING and trial.name in listed and trial.name not in children.jobs:
            trials[i] = await _create_job(ctx, experiment, exp_raw, trial)


async def _stop_trial(
    ctx: Context, experiment: api.Experiment, exp_raw: Mapping[str, Any], trial: api.Trial, action: plan.StopTrial
) -> api.Trial:
    if trial.phase.is_finished:
        return trial
    phase = api.TrialPhase.EARLY_STOPPED if action.reason == api.TrialReason.EARLY_STOPPED else api.TrialPhase.STOPPED
    status = trial.status.model_copy(
        update={
            "phase": phase,
            "reason": action.reason,
            "message": action.message,
            "completion_time": datetime.now(UTC),
        }
    )
    stopped = await _write_trial_status(ctx, trial, status)
    await ctx.kube.delete(kube.JOBS, trial.metadata.namespace, trial.name)
    await _delete_service(ctx, experiment, trial)
    await _trial_event(ctx, exp_raw, trial.name, status)
    return stopped


async def _delete_service(ctx: Context, experiment: api.Experiment, trial: api.Trial) -> None:
    """A multi-pod trial's Service goes with its Job (the Trial's deletion would collect it too)."""
    if experiment.spec.trial_template.replicas > 1:
        await ctx.kube.delete(kube.SERVICES, trial.metadata.namespace, workload.service_name(trial.name))


async def _promote_trial(ctx: Context, trial: api.Trial, action: plan.PromoteTrial) -> api.Trial:
    return await _write_trial_status(ctx, trial, trial.status.model_copy(update={"rung": action.rung}))


async def _write_trial_status(ctx: Context, trial: api.Trial, status: api.TrialStatus) -> api.Trial:
    """Merge-patch the changed status fields of a Trial; returns the Trial as written."""
    raw = {"metadata": trial.metadata.model_dump(by_alias=True), "status": trial.status.to_wire()}
    await apply.write_status(ctx.kube, kube.TRIALS, raw, status.to_wire())
    return trial.model_copy(update={"status": status})


async def _trial_event(ctx: Context, exp_raw: Mapping[str, Any], name: str, status: api.TrialStatus) -> None:
    reason = {
        api.TrialPhase.SUCCEEDED: "TrialSucceeded",
        api.TrialPhase.FAILED: "TrialFailed",
        api.TrialPhase.EARLY_STOPPED: "TrialEarlyStopped",
    }.get(status.phase, "TrialStopped")
    detail = ", ".join(f"{k}={v:.6g}" for k, v in sorted(status.metrics.items())[:8])
    message = f"trial {name}: {status.reason}: {status.message or ''}".rstrip(": ")
    if detail and status.phase == api.TrialPhase.SUCCEEDED:
        message = f"trial {name}: {detail}"
    await apply.post_event(ctx.kube, exp_raw, reason, message, warning=status.phase == api.TrialPhase.FAILED)


async def _write_experiment_status(ctx: Context, raw: Mapping[str, Any], status: api.ExperimentStatus) -> None:
    old = raw.get("status") or {}
    with contextlib.suppress(pydantic.ValidationError):
        old = api.ExperimentStatus.model_validate(old).to_wire()
    new = status.to_wire()
    if old != new:
        await apply.write_status(ctx.kube, kube.EXPERIMENTS, raw, new)


def _error_text(err: Exception) -> str:
    if isinstance(err, pydantic.ValidationError):
        return _problems_text(validation.pydantic_problems(err))
    return str(err)[:1024]


def _problems_text(problems: Sequence[validation.Problem]) -> str:
    return "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in problems[:5])[:1024]


def _trial_body(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: raw[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if k in raw}


def _owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    return uid is not None and _controller_uid(obj) == uid


def _controller_uid(obj: Mapping[str, Any]) -> str | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("uid") for r in refs if r.get("controller")), refs[0].get("uid") if refs else None)
