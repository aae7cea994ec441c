"""How a queued (suspended) Job and a disrupted pod read as a trial's state (pure, no operator)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from kubenas import api
from kubenas.controller import observe, reconcile

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
QUEUED_JOB = {
    "metadata": {"labels": {api.QUEUE_LABEL: "gpus"}},
    "spec": {"suspend": True, "template": {"spec": {"containers": [{"name": "trial"}]}}},
    "status": {"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]},
}
ADMITTED_JOB = {
    "metadata": {"labels": {api.QUEUE_LABEL: "gpus"}},
    "spec": {"suspend": False, "template": {"spec": {"containers": [{"name": "trial"}]}}},
    "status": {"active": 1},
}


def pod(name: str, phase: str, created: str, *conditions: dict[str, Any], **state: Any) -> dict[str, Any]:
    container = {"name": "trial", "state": state or {"running": {}}}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {
            "phase": phase,
            "podIP": "10.0.0.7",
            "conditions": list(conditions),
            "containerStatuses": [container],
        },
    }


def evicted(at: str) -> dict[str, Any]:
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
        "lastTransitionTime": at,
    }


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "lastTransitionTime": "2026-01-01T10:00:00Z",
    "message": "0/3 nodes are available",
}


def test_a_suspended_job_is_queued_never_unschedulable() -> None:
    seen = observe.observe(QUEUED_JOB, [], NOW, 60)
    assert seen.state == observe.State.QUEUED and "gpus" in (seen.message or "")
    # a pod left unschedulable for two hours from before a re-suspension does not end the trial
    stale = pod("p", "Pending", "2026-01-01T09:00:00Z", UNSCHEDULABLE)
    assert observe.observe(QUEUED_JOB, [stale], NOW, 60).state == observe.State.QUEUED


def test_after_admission_the_pods_say_it() -> None:
    assert observe.observe(ADMITTED_JOB, [], NOW, 60).state == observe.State.PENDING
    running = pod("p", "Running", "2026-01-01T11:00:00Z")
    assert observe.observe(ADMITTED_JOB, [running], NOW, 60).state == observe.State.RUNNING
    stuck = pod("p", "Pending", "2026-01-01T11:00:00Z", UNSCHEDULABLE)
    assert observe.observe(ADMITTED_JOB, [stuck], NOW, 60).backend_reason == api.TrialReason.UNSCHEDULABLE


def test_a_job_suspended_after_it_ran_is_queued_not_failed() -> None:
    killed = pod("p", "Failed", "2026-01-01T11:00:00Z", terminated={"exitCode": 143, "reason": "Error"})
    assert observe.observe(QUEUED_JOB, [killed], NOW, 60).state == observe.State.QUEUED


def test_a_disrupted_pod_waits_for_its_replacement_then_runs() -> None:
    old = pod("p-a", "Failed", "2026-01-01T11:00:00Z", evicted("2026-01-01T11:30:00Z"), terminated={"exitCode": 143})
    seen = observe.observe(ADMITTED_JOB, [old], NOW, 60)
    assert seen.state == observe.State.PENDING and seen.exit_code is None
    assert "p-a was disrupted (EvictionByEvictionAPI" in (seen.message or "")
    new = pod("p-b", "Running", "2026-01-01T11:31:00Z")
    assert observe.observe(ADMITTED_JOB, [new, old], NOW, 60).state == observe.State.RUNNING


def test_disruptions_are_counted_once_each_even_after_their_pods_are_gone() -> None:
    first = pod("p-a", "Failed", "2026-01-01T11:00:00Z", evicted("2026-01-01T11:30:00Z"))
    second = pod("p-b", "Failed", "2026-01-01T11:31:00Z", evicted("2026-01-01T11:40:00Z"))
    status = observed(api.TrialStatus(phase=api.TrialPhase.RUNNING, start_time=NOW), ADMITTED_JOB, [first])
    assert status.disruptions == 1
    assert observed(status, ADMITTED_JOB, [first]) == status  # seen again: not counted again
    status = observed(status, ADMITTED_JOB, [second])  # the first pod was deleted meanwhile
    assert status.disruptions == 2 and status.last_disruption_time == datetime(2026, 1, 1, 11, 40, tzinfo=UTC)
    healthy = pod("p-c", "Running", "2026-01-01T11:41:00Z")
    assert observed(api.TrialStatus(), ADMITTED_JOB, [healthy]).disruptions is None


def test_suspension_after_running_requeues_once_and_keeps_the_curve() -> None:
    curve = [api.CurvePoint(step=1, value=0.5), api.CurvePoint(step=2, value=0.6)]
    running = api.TrialStatus(phase=api.TrialPhase.RUNNING, start_time=NOW, curve=curve, step=2)
    queued = observed(running, QUEUED_JOB, [])
    assert (queued.phase, queued.requeues, queued.curve, queued.step) == (api.TrialPhase.QUEUED, 1, curve, 2)
    assert observed(queued, QUEUED_JOB, []).requeues == 1
    fresh = observed(api.TrialStatus(), QUEUED_JOB, [])  # never ran: just waiting
    assert (fresh.phase, fresh.requeues) == (api.TrialPhase.QUEUED, None)


def observed(status: api.TrialStatus, job: dict[str, Any], pods: list[dict[str, Any]]) -> api.TrialStatus:
    """The status the operator writes for a trial in ``status`` whose Job and pods read so."""
    ctx: Any = SimpleNamespace(settings=SimpleNamespace(unschedulable_seconds=60))
    spec = {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": [{"name": "w", "type": "int", "min": 1, "max": 5}],
        "queueName": "gpus",
        "trialTemplate": {"spec": {"containers": [{"name": "trial", "image": "i"}]}},
    }
    experiment = api.Experiment.model_validate({"metadata": {"name": "e", "namespace": "ns"}, "spec": spec})
    trial = api.Trial.model_validate(
        {"metadata": {"name": "e-0"}, "spec": {"experiment": "e", "index": 0, "parameters": {"w": 1}}}
    )
    new = reconcile._observed_status(ctx, experiment, trial.model_copy(update={"status": status}), job, pods, NOW)
    assert new is not None
    return new
