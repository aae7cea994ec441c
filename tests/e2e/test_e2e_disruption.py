"""A trial pod evicted on a real cluster: the Job controller replaces it (its podFailurePolicy ignores
the disruption) and the trial resumes from its checkpoint on the artifact volume, not a failure."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_cluster import children, local_claim, quick_experiment, running_pods, summary, to_yaml, wait_finished, wait_for
from kubeapi import Kube, path
from kubelet import TestKubelet

pytestmark = pytest.mark.e2e

# The trial contract's checkpointing, as any script does it: continue after the saved epoch.
CHECKPOINT_TRIAL = (Path(__file__).resolve().parents[1] / "integration" / "checkpoint_trial.py").read_text()
EPOCHS = 12


@pytest.fixture
def artifact_claim(kube: Kube, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """PVC ``artifacts`` bound to a hostPath PersistentVolume on a local directory, which is returned."""
    directory = tmp_path / "artifacts"
    directory.mkdir()
    pv_name = local_claim(kube, namespace, "artifacts", str(directory), "ReadWriteOnce")
    try:
        yield directory
    finally:
        kube.delete(path("v1", "persistentvolumes", name=pv_name))


def saved_epoch(checkpoint: Path) -> int:
    try:
        return int(json.loads((checkpoint / "state.json").read_text())["epoch"])
    except (OSError, ValueError):
        return 0


@pytest.mark.timeout(300)
def test_an_evicted_trial_pod_is_replaced_and_resumes_from_its_checkpoint(
    kube: Kube,
    kubectl: Callable[..., Any],
    crds: None,
    kubelet: TestKubelet | None,
    namespace: str,
    operator: Callable[..., Any],
    artifact_claim: Path,
) -> None:
    if kubelet is None:
        pytest.skip("the checkpoint lives on a hostPath volume: needs the test kubelet on this machine")
    name = "evicted"
    manifest = quick_experiment(name, max_trials=1, parallel=1)
    manifest["spec"]["budget"]["maxFailedTrials"] = 0
    manifest["spec"]["export"] = {"artifactVolume": "artifacts"}
    pod_spec = manifest["spec"]["trialTemplate"]["spec"]
    container = pod_spec["containers"][0]
    # It takes 2 s to stop, as a trainer saving in its grace period does: the operator sees the evicted pod.
    container["command"] = ["python", "-c", CHECKPOINT_TRIAL, "--epochs", str(EPOCHS), "--sleep", "1", "--grace", "2"]
    container["volumeMounts"] = [{"name": "artifacts", "mountPath": "/artifacts"}]
    pod_spec["volumes"] = [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}}]
    checkpoint = artifact_claim / name / "checkpoints" / f"{name}-0"
    state = lambda: summary(kube, namespace, name)  # noqa: E731

    operator(namespace)
    kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))
    wait_for(lambda: saved_epoch(checkpoint) >= 3, 120, "three epochs checkpointed", state=state)
    [first] = running_pods(kube, namespace, name)
    pod_name = first["metadata"]["name"]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod_name, "namespace": namespace}}
    kube.create(path("v1", "pods", namespace, pod_name, sub="eviction"), eviction)
    evicted_at = saved_epoch(checkpoint)

    st = wait_finished(kube, namespace, name, 180, state=state)
    assert st["phase"] == "Succeeded", state()
    assert st["trials"]["failed"] == 0, st["trials"]
    [trial] = children(kube, namespace, name)["trials"]
    result = trial["status"]
    assert result["phase"] == "Succeeded" and result["disruptions"] == 1, result
    assert evicted_at <= result["metrics"]["start_epoch"] - 1 <= evicted_at + 1, result  # it resumed, not restarted
    assert saved_epoch(checkpoint) == EPOCHS
    events = kube.items(path("v1", "events", namespace), fieldSelector="reason=TrialDisrupted")
    assert any(pod_name in e["message"] and "EvictionByEvictionAPI" in e["message"] for e in events), events
