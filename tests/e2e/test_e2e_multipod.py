"""A 2-pod trial on a real control plane: the real Job controller runs the Indexed Job, the pods
rendezvous through rank 0's Service name (torch.distributed, gloo), rank 0's result is the trial's,
and a failing rank fails the trial with that rank's reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_cluster import children, quick_experiment, summary, to_yaml, wait_finished, wait_for
from kubeapi import Kube, path

pytestmark = pytest.mark.e2e

# The same script as the local runner's test: checks the environment, joins with env://, all-reduces.
DDP_TRIAL = (Path(__file__).resolve().parents[1] / "integration" / "local" / "ddp_stub_trial.py").read_text()
INDEX = "batch.kubernetes.io/job-completion-index"


def two_pod_experiment(name: str, *args: str) -> dict[str, Any]:
    doc = quick_experiment(name, max_trials=1, parallel=1)
    template = doc["spec"]["trialTemplate"]
    template |= {"replicas": 2, "retain": True}  # retain: the Job, pods and Service stay to be looked at
    template["spec"]["containers"][0]["command"] = ["python", "-c", DDP_TRIAL, "--x=${parameters.x}", *args]
    return doc


@pytest.mark.timeout(420)
def test_two_pod_trial_on_the_real_job_controller(
    kube: Kube, kubectl: Callable[..., Any], crds: None, namespace: str, operator: Callable[..., Any]
) -> None:
    operator(namespace)
    # One after the other: on the test kubelet both trials' rank 0 would listen on MASTER_PORT of one host.
    kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(two_pod_experiment("ddp")))

    st = wait_finished(kube, namespace, "ddp", 300, "the 2-pod trial ends")
    assert st["phase"] == "Succeeded", summary(kube, namespace, "ddp")
    kids = children(kube, namespace, "ddp")
    [trial] = kids["trials"]
    assert trial["status"]["phase"] == "Succeeded"
    # Rank 0's result, from an all-reduce both pods took part in (1 + 2).
    assert (trial["status"]["metrics"]["ranks_sum"], trial["status"]["metrics"]["world_size"]) == (3.0, 2.0)

    def complete() -> dict[str, Any] | None:  # the Job controller's count follows the pods
        jobs = children(kube, namespace, "ddp")["jobs"]
        return jobs[0] if jobs and (jobs[0].get("status") or {}).get("succeeded") == 2 else None

    job = wait_for(complete, 60, "the Indexed Job completes", state=lambda: summary(kube, namespace, "ddp"))
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    assert job["status"].get("completedIndexes") == "0,1", job["status"]
    pods = kids["pods"]
    assert sorted(p["metadata"]["annotations"][INDEX] for p in pods) == ["0", "1"]
    assert {p["spec"]["hostname"] for p in pods} == {"ddp-0-0", "ddp-0-1"}  # the Job controller names them
    assert {p["spec"]["subdomain"] for p in pods} == {"ddp-0"}
    service = kube.get(path("v1", "services", namespace, "ddp-0"))
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["uid"] == trial["metadata"]["uid"]

    kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(two_pod_experiment("crash", "--crash-rank", "1")))
    wait_finished(kube, namespace, "crash", 300, "the crashing trial ends")
    [trial] = children(kube, namespace, "crash")["trials"]
    got = trial["status"]
    assert (got["phase"], got.get("reason")) == ("Failed", "ExitCode"), summary(kube, namespace, "crash")
    assert got["message"].startswith("rank 1: exit code 1: "), got
    assert "rank 1 crashed on purpose" in got["message"], got
