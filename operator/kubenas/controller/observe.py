"""What a trial's Job and Pod say about it: pure translation of observed objects.

No decisions about the experiment live here, only how to read Kubernetes: which Job
condition means what, where the exit code and termination message are, when a pod
counts as stuck (unschedulable, image pull) so that its trial has ended, when a Job waits
for its queue (suspended), and which pods ended because of a disruption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from kubenas import api, workload

MAX_MESSAGE = 1024
_IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})


class State(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    FINISHED = "Finished"


@dataclass(frozen=True)
class Observation:
    """A trial as its Job and Pod show it.

    Attributes:
        state: Pending, Queued (the Job is suspended: it waits for its queue to admit it),
            Running or Finished (the Job is done, or stuck for good).
        exit_code: the trial container's exit code, when it terminated.
        result_text: the termination message (the trial's result, or a log tail).
        backend_reason: a reason only Kubernetes knows (OOMKilled, DeadlineExceeded, ...).
        message: a human-readable note (e.g. why a pod is still waiting).
        pod_ip: where a running trial's metrics endpoint is.
        pod_name: the trial's current pod.
        start_time: when the pod (or Job) started.
        completion_time: when the container (or Job) finished.
        job_active: the Job still has pods to stop (delete it when the trial is over).
        rank: the pod (completion index) of a multi-pod trial that failed it or is stuck; None
            otherwise. The pod fields and the result are rank 0's.
    """

    state: State
    exit_code: int | None = None
    result_text: str | None = None
    backend_reason: api.TrialReason | None = None
    message: str | None = None
    pod_ip: str | None = None
    pod_name: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    job_active: bool = True
    rank: int | None = None


def observe(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
    unschedulable_seconds: float,
) -> Observation:
    """Read a trial's Job and its Pods (any order; the newest pod counts, rank 0's in a multi-pod trial)."""
    status = job.get("status") or {}
    ranks = _ranks(pods)
    pod = ranks.get(0) if ranks else _newest(pods)
    container = _trial_container(job, pod)
    terminated = ((container or {}).get("state") or {}).get("terminated")
    common = {
        "pod_ip": (pod or {}).get("status", {}).get("podIP"),
        "pod_name": ((pod or {}).get("metadata") or {}).get("name"),
        "start_time": _time((pod or {}).get("status", {}).get("startTime")) or _time(status.get("startTime")),
    }
    done = _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet")
    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if done or failed or _all_succeeded(job, pod, ranks):
        rank = _failed_rank(job, ranks) if failed is not None and failed.get("reason") != "DeadlineExceeded" else None
        if rank is not None:  # the failing rank's container tells why, not rank 0's
            terminated = ((_trial_container(job, ranks[rank]) or {}).get("state") or {}).get("terminated")
        return _finished(job, failed, terminated, common, rank)
    if (job.get("spec") or {}).get("suspend"):
        # Not admitted yet, or suspended again (Kueue preemption): its pods are gone or going.
        queue = ((job.get("metadata") or {}).get("labels") or {}).get(api.QUEUE_LABEL)
        note = f"waiting for queue {queue} to admit the Job" if queue else "the Job is suspended"
        return Observation(State.QUEUED, message=note, **common)

    candidates: list[tuple[int | None, Mapping[str, Any] | None]] = sorted(ranks.items()) if ranks else [(None, pod)]
    for rank, each in candidates:
        stuck = None if each is None else _stuck(each, _trial_container(job, each), now, unschedulable_seconds)
        if stuck is not None:
            reason, message = stuck
            return Observation(State.FINISHED, backend_reason=reason, message=message, rank=rank, **common)
    if pod is not None:
        # Rank 0 done while other ranks still run: the trial still runs.
        if pod.get("status", {}).get("phase") in ("Running", "Succeeded"):
            return Observation(State.RUNNING, **common)
        waiting = ((container or {}).get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            note = f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
            return Observation(State.PENDING, message=note[:MAX_MESSAGE], **common)
        disrupted = _disruption(pod)
        if disrupted is not None:
            note = f"{disrupted.describe()}; the Job replaces it (not a failure)"
            return Observation(State.PENDING, message=note[:MAX_MESSAGE], **common)
    return Observation(State.PENDING, **common)


POD_ENDED_PHASES = frozenset({"Succeeded", "Failed"})
"""The phases of a pod whose containers have all terminated for good."""


def has_live_pods(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> bool:
    """The Job still has pods to stop.

    Its count of active pods lags behind them: a trial whose pods all ended has none.
    """
    live = [p for p in pods if (p.get("status") or {}).get("phase") not in POD_ENDED_PHASES]
    return bool((job.get("status") or {}).get("active")) and bool(live)


@dataclass(frozen=True)
class Disruption:
    """A pod that ended, or is ending, because of a disruption (condition ``DisruptionTarget``).

    Attributes:
        pod: the pod's name.
        time: when it was marked (the condition's lastTransitionTime, else the pod's creation).
        reason: EvictionByEvictionAPI, PreemptionByScheduler, DeletionByTaintManager, TerminationByKubelet, ...
        message: the detail Kubernetes gave.
    """

    pod: str
    time: datetime | None
    reason: str
    message: str

    def describe(self) -> str:
        detail = f"{self.reason}: {self.message}" if self.message else self.reason
        return f"pod {self.pod} was disrupted ({detail})"


def disruptions(pods: Sequence[Mapping[str, Any]]) -> list[Disruption]:
    """The pods marked for a disruption (evicted, preempted, node shut down or lost), oldest first."""
    found = [d for d in map(_disruption, pods) if d is not None]
    return sorted(found, key=lambda d: (d.time.timestamp() if d.time else float("inf"), d.pod))


def _disruption(pod: Mapping[str, Any]) -> Disruption | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == workload.DISRUPTION_TARGET and cond.get("status") == "True":
            meta = pod.get("metadata") or {}
            when = _time(cond.get("lastTransitionTime")) or _time(meta.get("creationTimestamp"))
            reason = str(cond.get("reason") or "Disrupted")[:64]
            return Disruption(str(meta.get("name", "")), when, reason, str(cond.get("message") or "")[:MAX_MESSAGE])
    return None


def _finished(
    job: Mapping[str, Any],
    failed: Mapping[str, Any] | None,
    terminated: Mapping[str, Any] | None,
    common: Any,
    rank: int | None = None,
) -> Observation:
    status = job.get("status") or {}
    backend_reason: api.TrialReason | None = None
    message = None
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        backend_reason = api.TrialReason.DEADLINE_EXCEEDED
        message = failed.get("message")
    if terminated is not None and terminated.get("reason") == "OOMKilled":
        backend_reason = api.TrialReason.OOM_KILLED
    exit_code = None if terminated is None else terminated.get("exitCode")
    if exit_code is None and backend_reason is None and failed is not None:
        exit_code = 1  # failed without a terminated container we could see: count it as a failure
        message = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip(": ")
    completion = _time((terminated or {}).get("finishedAt")) or _time(status.get("completionTime"))
    return Observation(
        State.FINISHED,
        exit_code=exit_code,
        result_text=(terminated or {}).get("message"),
        backend_reason=backend_reason,
        message=None if message is None else str(message)[:MAX_MESSAGE],
        completion_time=completion,
        job_active=bool(status.get("active")),
        rank=rank,
        **common,
    )


def _stuck(
    pod: Mapping[str, Any], container: Mapping[str, Any] | None, now: datetime, unschedulable_seconds: float
) -> tuple[api.TrialReason, str] | None:
    waiting = ((container or {}).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in _IMAGE_PULL_REASONS:
        text = f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
        return api.TrialReason.IMAGE_PULL, text[:MAX_MESSAGE]
    for cond in pod.get("status", {}).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", "Unschedulable"):
            since = _time(cond.get("lastTransitionTime")) or _time(pod.get("metadata", {}).get("creationTimestamp"))
            if since is not None and (now - since).total_seconds() >= unschedulable_seconds:
                text = f"unschedulable for {int((now - since).total_seconds())}s: {cond.get('message', '')}"
                return api.TrialReason.UNSCHEDULABLE, text[:MAX_MESSAGE]
    return None


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _newest(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not pods:
        return None
    return max(pods, key=lambda p: (str(p.get("metadata", {}).get("creationTimestamp") or ""), p["metadata"]["name"]))


def _ranks(pods: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Each completion index's newest pod; empty when the pods have none (not an Indexed Job)."""
    by_index: dict[int, list[Mapping[str, Any]]] = {}
    for pod in pods:
        raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(workload.COMPLETION_INDEX_ANNOTATION)
        if raw is not None and str(raw).isdigit():
            by_index.setdefault(int(raw), []).append(pod)
    return {index: newest for index, group in by_index.items() if (newest := _newest(group)) is not None}


def _all_succeeded(
    job: Mapping[str, Any], pod: Mapping[str, Any] | None, ranks: Mapping[int, Mapping[str, Any]]
) -> bool:
    """The trial's pods all succeeded (ahead of the Job's Complete condition)."""
    if not ranks:
        return (pod or {}).get("status", {}).get("phase") == "Succeeded"
    completions = int((job.get("spec") or {}).get("completions") or len(ranks))
    return all((ranks.get(i) or {}).get("status", {}).get("phase") == "Succeeded" for i in range(completions))


# What a rank says when it failed because another rank went away (gloo, NCCL, and the trial image's own
# words): on a tie in finishedAt, which has whole seconds, such a rank is not the one that failed the trial.
PEER_LOSS_MARKERS = ("closed by peer", "reset by peer", "remote worker", "lost the other ranks")


def _failed_rank(job: Mapping[str, Any], ranks: Mapping[int, Mapping[str, Any]]) -> int | None:
    """The rank that failed a multi-pod trial: the first of its failed pods to end; within the same second,
    one that did not report losing its peers, then the lowest rank.

    Its peers usually fail right after it (their collective calls lose it) or are stopped by the Job.
    """
    ended: dict[int, tuple[str, bool]] = {}
    for index, pod in ranks.items():
        terminated = ((_trial_container(job, pod) or {}).get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode") not in (None, 0) or pod.get("status", {}).get("phase") == "Failed":
            message = str(terminated.get("message") or "")
            lost_peers = any(marker in message for marker in PEER_LOSS_MARKERS)
            ended[index] = (str(terminated.get("finishedAt") or "~"), lost_peers)  # unknown: after every known time
    return min(ended, key=lambda i: (*ended[i], i)) if ended else None


def _trial_container(job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if pod is None:
        return None
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    name = containers[0].get("name") if containers else None
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == name), statuses[0] if statuses else None)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
