"""Intermediate metrics: each running trial's latest value appended to its bounded learning curve.

Values of metrics under a ``stopEarly`` constraint are kept too (``status.reported``), so the
planner can stop a trial as soon as it reports, say, too many parameters.

The values come from Prometheus (``metrics.source: prometheus``) or straight from the pod
(``direct``); a trial that cannot be read is simply read again on a later reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubenas import api, metrics, objective, results
from kubenas.controller import apply, kube, observe
from kubenas.controller.context import Context

log = logging.getLogger(__name__)

_POLLS_KEPT = 1024  # poll times kept before stale ones are looked for


async def poll(
    ctx: Context,
    experiment: api.Experiment,
    trials: list[api.Trial],
    raw_trials: Sequence[Mapping[str, Any]],
    pods: Mapping[str, Sequence[Mapping[str, Any]]],
) -> None:
    """Append the running trials' latest intermediate value to their curves (bounded)."""
    name = objective.curve_metric(experiment.spec)
    if name is None:
        return
    due = []
    clock = time.monotonic()
    for i, trial in enumerate(trials):
        key = trial.metadata.uid or trial.name
        if trial.phase != api.TrialPhase.RUNNING:
            ctx.last_poll.pop(key, None)
            continue
        last = ctx.last_poll.get(key)
        if last is not None and clock - last < ctx.settings.metrics_poll_seconds:
            continue
        ctx.last_poll[key] = clock
        due.append((i, trial))
    _forget_stale_polls(ctx, clock)
    if not due:
        return
    values = await asyncio.gather(*(_read(ctx, experiment, t, pods.get(t.name, [])) for _, t in due))
    raw_by_name = {t["metadata"]["name"]: t for t in raw_trials}
    watched = objective.stop_early_metrics(experiment.spec.objective)
    for (i, trial), got in zip(due, values, strict=True):
        if got is None or got.step is None:
            continue
        status = results.with_sample(trial.status, got.step, got.metrics, name, watched, got.final_step)
        if status is not trial.status:
            await apply.write_status(ctx.kube, kube.TRIALS, raw_by_name[trial.name], status.to_wire())
            trials[i] = trial.model_copy(update={"status": status})


def _forget_stale_polls(ctx: Context, clock: float) -> None:
    """Drop poll times of trials no reconcile has seen for a while (deleted with their experiment)."""
    if len(ctx.last_poll) > _POLLS_KEPT:
        horizon = clock - 10 * max(ctx.settings.metrics_poll_seconds, ctx.settings.resync_seconds)
        for key in [k for k, t in ctx.last_poll.items() if t < horizon]:
            del ctx.last_poll[key]


async def _read(
    ctx: Context, experiment: api.Experiment, trial: api.Trial, pods: Sequence[Mapping[str, Any]]
) -> metrics.TrialValues | None:
    spec = experiment.spec.metrics
    seen = observe.observe({}, pods, datetime.now(UTC), float("inf"))
    timeout = ctx.settings.scrape_timeout
    try:
        if spec.source == api.MetricsSource.DIRECT:
            if not seen.pod_ip:
                return None
            url = metrics.trial_url(seen.pod_ip, spec.port, spec.path)
            return await metrics.scrape_trial(ctx.http, url, timeout=timeout)
        if ctx.settings.prometheus_url is None:
            return None
        label = ctx.settings.prometheus_trial_label
        value = seen.pod_name if label == "pod" else trial.name
        if value is None:
            return None
        selector = {label: value, "namespace": experiment.metadata.namespace or ""}
        return await metrics.query_trial(ctx.http, ctx.settings.prometheus_url, selector, timeout=timeout)
    except metrics.MetricsError as err:
        log.debug("no metrics for %s: %s", trial.name, err)
        return None
