"""Every example in examples/, applied with kubectl and run by the operator to Succeeded.

Budgets are shrunk (2 trials, 2 in parallel, at most 1 epoch) in a copy of the manifest. No
Prometheus: the final results come from termination messages; no curves, so early stopping
does not fire.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_cluster import (
    EXAMPLES,
    FINISHED_TRIAL,
    children,
    load,
    local_claim,
    planned_trials,
    shrink,
    summary,
    to_yaml,
    wait_finished,
    wait_for,
)
from kubeapi import Kube, path
from kubelet import TestKubelet

pytestmark = pytest.mark.e2e

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def _claims(manifest: dict[str, Any]) -> dict[str, str]:
    """claimName → the trial container's mountPath, for each PersistentVolumeClaim the template mounts."""
    spec = manifest["spec"]["trialTemplate"]["spec"]
    volumes = [v for v in spec.get("volumes") or [] if "persistentVolumeClaim" in v]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes}
    mounts = spec["containers"][0].get("volumeMounts") or []
    return {claims[m["name"]]: m["mountPath"] for m in mounts if m["name"] in claims}


def _artifacts_here(manifest: dict[str, Any], directory: Path) -> None:
    """Mount the artifact volume's claim at ``directory``, a new directory on this machine.

    The claim is then bound to that same directory (below), so a path on the volume that a trial
    is given in its parameters (a one-shot search trial's supernet checkpoint) exists here too.
    """
    volume = (manifest["spec"].get("export") or {}).get("artifactVolume")
    mounts = manifest["spec"]["trialTemplate"]["spec"]["containers"][0].get("volumeMounts") or []
    for mount in mounts:
        if volume is not None and mount["name"] == volume:
            directory.mkdir(parents=True, exist_ok=True)
            mount["mountPath"] = str(directory)


@pytest.fixture
def volumes(kube: Kube) -> Iterator[list[str]]:
    """PersistentVolumes created by the test, deleted after it (they are cluster-scoped)."""
    created: list[str] = []
    yield created
    for name in created:
        kube.delete(path("v1", "persistentvolumes", name=name))


@pytest.mark.timeout(420)
@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_runs_to_succeeded(
    example: Path,
    kube: Kube,
    kubectl: Callable[..., Any],
    crds: None,
    kubelet: TestKubelet | None,
    namespace: str,
    operator: Callable[..., Any],
    volumes: list[str],
    kubectl_bin: str,
    kubeconfig: str,
    tmp_path: Path,
) -> None:
    manifest = shrink(load(example), max_trials=2, parallel=2, epochs=1)
    _artifacts_here(manifest, tmp_path / "artifacts")
    # Data volumes: with the test kubelet, a claim bound to the same directory on this machine.
    for claim, mount_path in _claims(manifest).items():
        if kubelet is None:
            pytest.skip(f"{example.name} needs a PersistentVolumeClaim {claim!r} holding its data on this cluster")
        if not os.path.isdir(mount_path):
            hint = " (apt-get install dataset-fashion-mnist)" if "fashion-mnist" in mount_path else ""
            pytest.skip(f"{example.name} reads {mount_path}, absent on this machine{hint}")
        volumes.append(local_claim(kube, namespace, claim, mount_path, "ReadOnlyMany"))
    name = manifest["metadata"]["name"]
    max_trials = planned_trials(manifest)

    operator(namespace)
    kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))
    # What a GitOps tool or a script waits on: the kstatus Ready condition, set once it Succeeded.
    ready = kubectl_wait_ready(kubectl_bin, kubeconfig, namespace, name)
    st = wait_finished(kube, namespace, name, 360, f"{example.name} finishes", interval=1.0)
    assert st["phase"] == "Succeeded", summary(kube, namespace, name)

    kids = children(kube, namespace, name)
    phases = [(t.get("status") or {}).get("phase") for t in kids["trials"]]
    assert 1 <= len(phases) <= max_trials, phases
    assert "Succeeded" in phases, summary(kube, namespace, name)
    assert all(p in FINISHED_TRIAL for p in phases), phases

    exported = kube.get(path("v1", "configmaps", namespace, f"{name}-best"))
    assert exported["data"]["trial"].startswith(f"{name}-")
    metrics = json.loads(exported["data"]["metrics.json"])
    objective = manifest["spec"]["objective"]
    wanted = [objective["metric"]] if "metric" in objective else [m["name"] for m in objective["metrics"]]
    assert all(m in metrics for m in wanted), metrics
    assert json.loads(exported["data"]["parameters.json"])

    row = kubectl("get", "nasexp", name, "-n", namespace, "--no-headers").stdout.split()
    assert row[:3] == [name, "Succeeded", st["progress"]], row
    waited, _ = ready.communicate(timeout=30)
    assert ready.returncode == 0 and "condition met" in waited, waited

    # The cluster-side views: the same table, report and export as a local run gives.
    best = exported["data"]["trial"]
    shown = kubenas("status", name, "-n", namespace, kubeconfig=kubeconfig)
    assert best in shown.stdout and "Succeeded" in shown.stdout, shown.stdout
    report = tmp_path / "report"
    kubenas("report", name, "-n", namespace, "-o", str(report), kubeconfig=kubeconfig)
    page = (report / "report.html").read_text()
    assert best in page and (report / "best_so_far.png").stat().st_size > 1000
    export = tmp_path / "export"
    kubenas("export", name, "-n", namespace, "-o", str(export), kubeconfig=kubeconfig)
    assert json.loads((export / "best.json").read_text())["trial"] == best
    # Finished Jobs are deleted once their result is on the Trial (no retain).
    wait_for(lambda: not children(kube, namespace, name)["jobs"], 60, "finished Jobs deleted")


def kubectl_wait_ready(kubectl_bin: str, kubeconfig: str, namespace: str, name: str) -> subprocess.Popen[str]:
    """``kubectl wait --for=condition=Ready`` started now, in the background."""
    argv = [kubectl_bin, "wait", "-n", namespace, f"nasexp/{name}", "--for=condition=Ready", "--timeout=400s"]
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kubenas(*args: str, kubeconfig: str) -> subprocess.CompletedProcess[str]:
    """The ``kubenas`` command, as a user runs it against the cluster."""
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    done = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done
