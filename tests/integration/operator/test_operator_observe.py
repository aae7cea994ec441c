"""controller.observe: how Job and Pod objects read as a trial's state (pure, no operator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubenas import api
from kubenas.controller import observe

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def job(*conditions: dict[str, Any], active: int = 0) -> dict[str, Any]:
    return {
        "spec": {"template": {"spec": {"containers": [{"name": "trial"}, {"name": "sidecar"}]}}},
        "status": {"conditions": list(conditions), "active": active},
    }


def pod(phase: str = "Running", state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    statuses = [
        {"name": "sidecar", "state": {"running": {}}},
        {"name": "trial", "state": state or {"running": {}}},
    ]
    return {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T11:00:00Z"},
        "status": {"phase": phase, "podIP": "10.0.0.7", "containerStatuses": statuses, **status},
    }


def terminated(code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    return {
        "terminated": {"exitCode": code, "reason": reason, "message": message, "finishedAt": "2026-01-01T11:59:00Z"}
    }


COMPLETE = {"type": "Complete", "status": "True"}
DEADLINE = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}
FAILED = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit"}


def test_no_pod_yet_is_pending() -> None:
    assert observe.observe(job(active=1), [], NOW, 60).state == observe.State.PENDING


def test_running_pod() -> None:
    seen = observe.observe(job(active=1), [pod()], NOW, 60)
    assert (seen.state, seen.pod_ip, seen.pod_name) == (observe.State.RUNNING, "10.0.0.7", "p")


def test_completed_job_reads_the_trial_container() -> None:
    seen = observe.observe(job(COMPLETE), [pod("Succeeded", terminated(0, "Completed", '{"a": 1}'))], NOW, 60)
    assert (seen.state, seen.exit_code, seen.result_text) == (observe.State.FINISHED, 0, '{"a": 1}')
    assert seen.completion_time == datetime(2026, 1, 1, 11, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("the_job", "the_pod", "reason", "code"),
    [
        (job(FAILED), pod("Failed", terminated(3)), None, 3),
        (job(FAILED), pod("Failed", terminated(137, "OOMKilled")), api.TrialReason.OOM_KILLED, 137),
        (
            job({"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}),
            pod(),
            api.TrialReason.DEADLINE_EXCEEDED,
            None,
        ),
        (job(FAILED), None, None, 1),
    ],
    ids=["exit-code", "oom", "deadline", "failed-without-pod"],
)
def test_failed_jobs(the_job: dict[str, Any], the_pod: dict[str, Any] | None, reason: Any, code: int | None) -> None:
    seen = observe.observe(the_job, [the_pod] if the_pod else [], NOW, 60)
    assert (seen.state, seen.backend_reason, seen.exit_code) == (observe.State.FINISHED, reason, code)


def test_image_pull_ends_the_trial() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}
    seen = observe.observe(job(active=1), [pod("Pending", waiting)], NOW, 60)
    assert (seen.state, seen.backend_reason) == (observe.State.FINISHED, api.TrialReason.IMAGE_PULL)
    assert seen.job_active


def test_other_waiting_reasons_stay_pending_with_a_message() -> None:
    waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": "runAsNonRoot"}}
    seen = observe.observe(job(active=1), [pod("Pending", waiting)], NOW, 60)
    assert seen.state == observe.State.PENDING and seen.message == "CreateContainerConfigError: runAsNonRoot"


@pytest.mark.parametrize(("seconds_ago", "finished"), [(30, False), (90, True)])
def test_unschedulable_after_the_grace_period(seconds_ago: int, finished: bool) -> None:
    since = (NOW - timedelta(seconds=seconds_ago)).isoformat()
    cond = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "lastTransitionTime": since,
        "message": "Insufficient nvidia.com/gpu",
    }
    unscheduled = {"metadata": {"name": "p"}, "status": {"phase": "Pending", "conditions": [cond]}}
    seen = observe.observe(job(active=1), [unscheduled], NOW, 60)
    assert (seen.state == observe.State.FINISHED) is finished
    if finished:
        assert seen.backend_reason == api.TrialReason.UNSCHEDULABLE and "nvidia.com/gpu" in (seen.message or "")


def test_newest_pod_counts() -> None:
    old = pod("Failed", terminated(1))
    new = pod()
    new["metadata"] = {"name": "p2", "creationTimestamp": "2026-01-01T11:30:00Z"}
    seen = observe.observe(job(active=1), [new, old], NOW, 60)
    assert (seen.state, seen.pod_name) == (observe.State.RUNNING, "p2")


def test_a_finished_trials_job_has_pods_to_stop_only_while_one_has_not_ended() -> None:
    # The Job's count of active pods lags behind them: once every pod ended, it has none to stop.
    assert not observe.has_live_pods(job(FAILED, active=1), [pod("Failed", terminated(1)), pod("Succeeded")])
    assert observe.has_live_pods(job(FAILED, active=1), [pod("Failed", terminated(1)), pod("Running")])
    assert not observe.has_live_pods(job(COMPLETE), [pod("Running")])


def ranked(index: int, phase: str = "Running", state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    """A pod of an Indexed Job: its completion index is an annotation."""
    p = pod(phase, state, **status)
    p["metadata"] = {
        "name": f"exp-0-{index}-abcde",
        "creationTimestamp": "2026-01-01T11:00:00Z",
        "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
    }
    p["status"]["podIP"] = f"10.0.0.{10 + index}"
    return p


def indexed_job(*conditions: dict[str, Any], active: int = 0, completions: int = 2) -> dict[str, Any]:
    the_job = job(*conditions, active=active)
    the_job["spec"] |= {"completionMode": "Indexed", "completions": completions}
    return the_job


FAILED_INDEXES = {"type": "Failed", "status": "True", "reason": "MaxFailedIndexesExceeded", "message": "indexes"}


def test_multi_pod_trial_runs_and_reports_from_rank_0() -> None:
    seen = observe.observe(indexed_job(active=2), [ranked(1), ranked(0)], NOW, 60)
    assert (seen.state, seen.pod_name, seen.pod_ip) == (observe.State.RUNNING, "exp-0-0-abcde", "10.0.0.10")


def test_multi_pod_result_is_rank_0s() -> None:
    pods = [
        ranked(1, "Succeeded", terminated(0, "Completed", "")),
        ranked(0, "Succeeded", terminated(0, "Completed", '{"a": 1}')),
    ]
    seen = observe.observe(indexed_job(active=0), pods, NOW, 60)  # all ranks done, ahead of the Complete condition
    assert (seen.state, seen.result_text, seen.rank) == (observe.State.FINISHED, '{"a": 1}', None)


def test_multi_pod_trial_waits_for_every_rank() -> None:
    pods = [ranked(0, "Succeeded", terminated(0, "Completed", '{"a": 1}')), ranked(1)]
    assert observe.observe(indexed_job(active=1), pods, NOW, 60).state == observe.State.RUNNING


def test_multi_pod_failure_names_the_rank_that_failed_first() -> None:
    crashed = terminated(3, "Error", "Traceback: rank 1 boom")
    crashed["terminated"]["finishedAt"] = "2026-01-01T11:58:00Z"
    peer = terminated(1, "Error", "gloo: connection closed by peer")  # a second later
    stopped = terminated(143, "Error", "")
    for rank_0 in (peer, stopped):
        seen = observe.observe(
            indexed_job(FAILED_INDEXES), [ranked(0, "Failed", rank_0), ranked(1, "Failed", crashed)], NOW, 60
        )
        assert (seen.state, seen.rank, seen.exit_code) == (observe.State.FINISHED, 1, 3)
        assert seen.result_text == "Traceback: rank 1 boom" and seen.pod_name == "exp-0-0-abcde"


def test_within_the_same_second_the_rank_that_lost_its_peers_is_not_blamed() -> None:
    crashed = terminated(1, "Error", "RuntimeError: rank 1 crashed on purpose")
    peer = terminated(1, "Error", "RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                                  "[127.0.0.1]:1447. This is typically caused by a remote worker crashing.")
    ours = terminated(1, "Error", "kubenas-trial: error: rank 0: lost the other ranks of the trial (one failed, ...)")
    for rank_0 in (peer, ours):  # both ended in the same second (finishedAt has whole seconds)
        seen = observe.observe(
            indexed_job(FAILED_INDEXES), [ranked(0, "Failed", rank_0), ranked(1, "Failed", crashed)], NOW, 60
        )
        assert (seen.rank, seen.result_text) == (1, "RuntimeError: rank 1 crashed on purpose")
    both = observe.observe(indexed_job(FAILED_INDEXES), [ranked(0, "Failed", crashed), ranked(1, "Failed", crashed)],
                           NOW, 60)
    assert both.rank == 0  # no way to tell: the lowest rank


def test_multi_pod_oom_and_deadline() -> None:
    oom = [ranked(0, "Failed", terminated(143)), ranked(1, "Failed", terminated(137, "OOMKilled"))]
    oom[1]["status"]["containerStatuses"][1]["state"]["terminated"]["finishedAt"] = "2026-01-01T11:00:00Z"
    seen = observe.observe(indexed_job(FAILED_INDEXES), oom, NOW, 60)
    assert (seen.backend_reason, seen.rank) == (api.TrialReason.OOM_KILLED, 1)
    seen = observe.observe(indexed_job(DEADLINE), [ranked(0, "Failed", terminated(143)), ranked(1)], NOW, 60)
    assert (seen.backend_reason, seen.rank) == (api.TrialReason.DEADLINE_EXCEEDED, None)  # no rank to blame


def test_an_unschedulable_rank_ends_the_trial() -> None:
    cond = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "lastTransitionTime": (NOW - timedelta(seconds=90)).isoformat(),
        "message": "Insufficient nvidia.com/gpu",
    }
    waiting = ranked(1, "Pending", conditions=[cond])
    seen = observe.observe(indexed_job(active=2), [ranked(0), waiting], NOW, 60)
    assert (seen.state, seen.backend_reason, seen.rank) == (observe.State.FINISHED, api.TrialReason.UNSCHEDULABLE, 1)
