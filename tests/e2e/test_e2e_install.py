"""Installing kubenas: the CRDs with kubectl, the chart with helm install and upgrade, and what
kubectl then shows (explain, printer columns)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from e2e_cluster import CHART, CRDS, EXAMPLES, load, shrink, to_yaml, wait_for
from kubeapi import Kube, path

pytestmark = pytest.mark.e2e


def test_crds_apply_explain_and_printer_columns(
    kube: Kube, kubectl: Callable[..., Any], crds: None, namespace: str
) -> None:
    applied = kubectl("apply", "-f", str(CRDS))
    assert "experiments.kubenas.io" in applied.stdout and "trials.kubenas.io" in applied.stdout

    budget = yaml.safe_load((CRDS / "experiments.kubenas.io.yaml").read_text())["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]["properties"]["spec"]["properties"]["budget"]
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    explained = wait_for(
        lambda: (
            (done := kubectl("explain", "experiments.spec.budget", check=False)).returncode == 0
            and "maxTrials" in done.stdout
            and done
        ),
        60,
        "kubectl explain experiments.spec.budget",
    )
    for field in ("maxTrials", "parallelTrials", "maxFailedTrials", "maxDuration"):
        assert field in explained.stdout
    first_words = " ".join(budget["properties"]["maxTrials"]["description"].split()[:4])
    assert first_words in " ".join(explained.stdout.split()), explained.stdout

    # No operator runs: the columns are there, empty until it does.
    manifest = shrink(load(EXAMPLES / "iris-hpo.yaml"))
    kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))
    table = kubectl("get", "nasexp", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "TRIALS", "QUEUED", "BEST", "AGE"], table
    assert table[1].split()[0] == "iris-hpo"
    wide = kubectl("get", "nasexp", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "PHASE", "TRIALS", "QUEUED", "BEST", "AGE", "REASON", "STAGE"], wide
    trials = kubectl("get", "nastrial", "-n", namespace)
    assert "No resources found" in trials.stderr + trials.stdout


def _monitoring_values(kube: Kube) -> list[str]:
    """Prometheus Operator objects only where their CRDs exist; the dashboard ConfigMap always."""
    crd = path("apiextensions.k8s.io/v1", "customresourcedefinitions", name="servicemonitors.monitoring.coreos.com")
    on = "true" if kube.get_or_none(crd) is not None else "false"
    values = []
    for key in ("serviceMonitor", "trialPodMonitor", "prometheusRule"):
        values += ["--set", f"monitoring.{key}.enabled={on}"]
    return [*values, "--set", "monitoring.dashboard.enabled=true"]


def test_helm_install_and_upgrade(kube: Kube, helm: Callable[..., Any], crds: None, namespace: str) -> None:
    release = f"kn-{secrets.token_hex(3)}"
    fullname = f"{release}-kubenas"
    values = ["--set", "replicas=0", *_monitoring_values(kube)]  # the image is not needed: no pod runs
    try:
        helm("install", release, str(CHART), "-n", namespace, *values, "--wait", "--timeout", "120s")
        deployment = kube.get(path("apps/v1", "deployments", namespace, fullname))
        assert deployment["spec"]["replicas"] == 0
        assert kube.get_or_none(path("v1", "serviceaccounts", namespace, fullname)) is not None
        role = kube.get(path("rbac.authorization.k8s.io/v1", "clusterroles", name=fullname))
        assert any("experiments" in (r.get("resources") or []) for r in role["rules"])
        binding = kube.get(path("rbac.authorization.k8s.io/v1", "clusterrolebindings", name=fullname))
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": fullname, "namespace": namespace}]
        dashboards = kube.items(path("v1", "configmaps", namespace), labelSelector="grafana_dashboard=1")
        assert dashboards, "the dashboard ConfigMap"

        helm(
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            *values,
            "--set",
            "operator.verbose=true",
            "--set",
            "operator.settings.resyncSeconds=15",
            "--wait",
            "--timeout",
            "120s",
        )
        history = json.loads(helm("history", release, "-n", namespace, "-o", "json").stdout)
        assert [h["status"] for h in history] == ["superseded", "deployed"], history
        container = kube.get(path("apps/v1", "deployments", namespace, fullname))["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert "--verbose" in container["args"]
        assert {"name": "KUBENAS_RESYNC_SECONDS", "value": "15"} in container["env"]
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "120s", check=False)
    assert kube.get_or_none(path("rbac.authorization.k8s.io/v1", "clusterroles", name=fullname)) is None
    # The CRDs stay (helm never deletes CRDs from crds/): Experiments survive an uninstall.
    assert kube.get_or_none(path("apiextensions.k8s.io/v1", "customresourcedefinitions", name="experiments.kubenas.io"))
