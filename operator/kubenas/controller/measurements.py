"""Latency measurements after a trial (``MeasureCost``): start their Jobs, record what they found.

The planner decides which trial to measure and when (``kubenas.plan.measurement``); this
module only turns that into a Job (``kubenas.measurejob``) and a finished Job back into the
Trial's status (``kubenas.results.with_measurement``). Level-triggered like the rest: a
measurement Job that exists is not created again, and one that finished is recorded, then
deleted; a crash between the two records nothing twice, because the Job of an attempt the
status already counts is only deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubenas import api, measurejob, plan, results
from kubenas.controller import apply, kube, observe
from kubenas.controller.context import Context

log = logging.getLogger(__name__)


def is_measurement(obj: Mapping[str, Any]) -> bool:
    """Whether a listed Job or Pod belongs to a latency measurement rather than to a trial."""
    return measurejob.LABEL_MEASURES in ((obj.get("metadata") or {}).get("labels") or {})


def _measured_trial(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["labels"][measurejob.LABEL_MEASURES])


async def record_finished(
    ctx: Context,
    experiment: api.Experiment,
    trials: list[api.Trial],
    raw_trials: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
) -> list[api.Trial]:
    """``trials`` with every finished measurement recorded in its Trial's status; finished Jobs are deleted."""
    by_name = {t.name: i for i, t in enumerate(trials)}
    raw_by_name = {r["metadata"]["name"]: r for r in raw_trials}
    for job in jobs:
        if not is_measurement(job):
            continue
        name = _measured_trial(job)
        if name not in by_name:
            continue  # not this experiment's trial (any more): the owner reference collects it
        trial = trials[by_name[name]]
        mine = [p for p in pods if is_measurement(p) and _measured_trial(p) == name]
        seen = observe.observe(job, mine, now, ctx.settings.unschedulable_seconds)
        if seen.state != observe.State.FINISHED:
            continue
        attempt = measurejob.attempt_of(str(job["metadata"]["name"]), name)
        if attempt is not None and attempt > (trial.status.cost_measurements or 0) and name in raw_by_name:
            ok = seen.exit_code == 0 and seen.backend_reason is None
            status = results.measured_status(experiment.spec.cost_measurement, trial, seen.result_text if ok else None)
            await apply.write_status(ctx.kube, kube.TRIALS, raw_by_name[name], status.to_wire())
            trial = trial.model_copy(update={"status": status})
            trials[by_name[name]] = trial
            if not ok:
                reason = seen.message or f"exit code {seen.exit_code}"
                log.warning("latency measurement %s failed: %s", job["metadata"]["name"], reason)
        await ctx.kube.delete(kube.JOBS, job["metadata"]["namespace"], job["metadata"]["name"])
    return trials


async def start(ctx: Context, experiment: api.Experiment, trial: api.Trial, action: plan.MeasureCost) -> None:
    """Create the Job of this measurement attempt, unless the status already counts it (or it exists)."""
    if action.attempt <= (trial.status.cost_measurements or 0):
        return
    body = measurejob.build_measurement_job(experiment, trial, action.attempt)
    try:
        await apply.create_owned(ctx.kube, kube.JOBS, body)
    except apply.OwnedByOther as err:
        log.warning("latency measurement of %s not started: %s", trial.name, err)
