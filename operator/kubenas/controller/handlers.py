"""Every kopf decorator of the operator, in one place.

Handlers translate events into reconcile requests and nothing more. There are no change
handlers, timers, daemons or non-optional delete handlers, so kopf adds no finalizer and
no annotations to any object: Experiments and their namespaces stay deletable while the
operator is down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubenas import api, workload
from kubenas.controller import context, health, reconcile, telemetry
from kubenas.controller.scheduler import Scheduler
from kubenas.controller.settings import Settings

CHILD_LABELS = {workload.LABEL_EXPERIMENT: kopf.PRESENT}
EXPERIMENTS = (api.GROUP, api.VERSION, "experiments")
TRIALS = (api.GROUP, api.VERSION, "trials")
JOBS = ("batch", "v1", "jobs")
PODS = ("v1", "pods")
# kopf retries a failed API request (4xx included) this many times, seconds apart, then gives up; a watch
# stream's list that gives up stops the whole operator (kopf 1.45), so the process exits and the pod restarts.
ERROR_BACKOFFS = (1, 2, 5, 10, 20, 30, 60)
WATCHED = (EXPERIMENTS, TRIALS, JOBS, PODS)  # kopf runs one watch stream per kind (and per served namespace)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    ours = settings_of(memo)
    configure(settings)
    memo.watchers = health.WatcherCheck(len(WATCHED) * max(1, len(ours.namespaces)), ours.watcher_grace_seconds)
    ctx = context.create(ours, lambda: memo.get("credentials"), watchers_ended=lambda: memo.watchers.ended)
    memo.ctx = ctx
    memo.scheduler = Scheduler[reconcile.Key](
        lambda key: reconcile.reconcile(ctx, key), ours.debounce_seconds, ours.retry_seconds
    )
    interval = min(ours.resync_seconds, ours.metrics_poll_seconds)
    memo.resync = asyncio.get_running_loop().create_task(memo.scheduler.resync_forever(interval))
    if ours.metrics_port:
        try:
            memo.metrics_server = await telemetry.serve(ctx.telemetry, ours.metrics_host, ours.metrics_port)
        except OSError as err:
            raise kopf.PermanentError(f"cannot serve metrics on port {ours.metrics_port}: {err}") from err
    logger.info("kubenas operator started (namespaces: %s)", ", ".join(ours.namespaces) or "all")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "metrics_server" in memo:
        await memo.metrics_server.cleanup()
    if "resync" in memo:
        memo.resync.cancel()
        await memo.scheduler.close()
        await memo.ctx.kube.close()
        await memo.ctx.http.close()
        memo.ctx.executor.shutdown(wait=False, cancel_futures=True)


@kopf.on.probe(id="watchStreams")
async def watch_streams(memo: kopf.Memo, **_: Any) -> int:
    """Fails /healthz (``--liveness``) once a kopf watch stream has ended: only a restart brings it back."""
    try:
        return int(memo.watchers.check())
    except health.WatchersEnded as err:
        raise kopf.PermanentError(str(err)) from err  # a plain error would hold the probe for a retry


@kopf.on.login()
def login(memo: kopf.Memo, logger: kopf.Logger, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    url = settings_of(memo).test_api_url
    info = (
        kopf.ConnectionInfo(server=url, insecure=True)
        if url
        else kopf.login_via_client(logger=logger, settings=settings)
    )
    if info is None:
        raise kopf.LoginError("no Kubernetes credentials: neither in-cluster nor a kubeconfig")
    memo.credentials = info
    return info


@kopf.on.event(*EXPERIMENTS)
async def experiment_event(
    type: str | None, namespace: str | None, name: str, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    if type == "DELETED":
        memo.scheduler.forget((namespace, name))
        memo.ctx.telemetry.forget((namespace, name))
        with memo.ctx.suggesters_lock:
            memo.ctx.suggesters.discard(uid)
    else:
        memo.scheduler.request((namespace, name))


@kopf.on.event(*TRIALS, labels=CHILD_LABELS)
@kopf.on.event(*JOBS, labels=CHILD_LABELS)
@kopf.on.event(*PODS, labels=CHILD_LABELS)
async def child_event(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    memo.scheduler.request((namespace, labels[workload.LABEL_EXPERIMENT]))


def settings_of(memo: kopf.Memo) -> Settings:
    """Our settings: given by ``entrypoint.run``, or read from the environment (``kopf run -m``)."""
    if "settings" not in memo:
        memo.settings = Settings.from_env()
    return memo.settings


class NoEssence(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base, not kept: the operator has no change handlers, so nothing reads it.

    kopf builds every event's "essence" (a deep copy of the whole body, then cleaned) to diff
    it for change handlers, even when a kind has only event handlers. For Pods and Jobs that
    was most of the operator's CPU: 1.7 of 4 s in a burst of 50 experiments on a real API
    server (cProfile). Without it the diff is empty and event handlers run as before.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings for a long-running operator: timeouts, backoffs, server-side label selectors."""
    settings.persistence.diffbase_storage = NoEssence()
    settings.posting.level = logging.WARNING
    settings.watching.connect_timeout = 10
    settings.watching.server_timeout = 600
    settings.watching.inactivity_timeout = 70
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = list(ERROR_BACKOFFS)
    settings.queueing.worker_limit = None
    # Resources are resolved once at startup (install the CRDs first), so no cluster-wide CRD watch or RBAC.
    settings.scanning.disabled = True
    for kind in (TRIALS, JOBS, PODS):
        settings.watching.label_selectors[kind] = workload.LABEL_EXPERIMENT
