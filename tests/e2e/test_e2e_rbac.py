"""The operator under the chart's ServiceAccount: its RBAC is enough to run an experiment.

The chart is installed with ``replicas=0`` (its image is not needed); the operator runs here,
with a kubeconfig holding a token of the chart's ServiceAccount (``kubectl create token``).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_cluster import (
    CHART,
    create_namespace,
    delete_namespace,
    quick_experiment,
    summary,
    to_yaml,
    wait_finished,
)
from kubeapi import Kube, path

pytestmark = pytest.mark.e2e


def service_account_kubeconfig(kubectl: Callable[..., Any], token: str, target: Path) -> str:
    """The current context's cluster (server, CA) with the token as its only credential."""
    view = json.loads(kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
    cluster = view["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": "operator"}}],
        "current-context": "operator",
    }
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return str(target)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["namespaced", "clusterwide"])
def test_operator_runs_with_the_chart_service_account(
    mode: str,
    kube: Kube,
    kubectl: Callable[..., Any],
    helm: Callable[..., Any],
    crds: None,
    namespace: str,
    operator: Callable[..., Any],
    tmp_path: Path,
) -> None:
    system = create_namespace(kube, f"{namespace}-sys"[:63])
    release = f"kn-{secrets.token_hex(3)}"
    account = f"{release}-kubenas"
    values = ["--set", "replicas=0"]
    if mode == "namespaced":
        values += ["--set", f"watchNamespaces={{{namespace}}}"]
    try:
        helm("install", release, str(CHART), "-n", system, *values, "--wait", "--timeout", "120s")
        token = kubectl("create", "token", account, "-n", system, "--duration=1h").stdout.strip()
        config = service_account_kubeconfig(kubectl, token, tmp_path / "operator.kubeconfig")

        def can(verb: str, resource: str, ns: str, *extra: str) -> bool:
            done = kubectl("auth", "can-i", verb, resource, "-n", ns, *extra, config=config, check=False)
            return done.stdout.strip() == "yes"

        assert can("create", "jobs.batch", namespace)
        assert can("patch", "experiments.kubenas.io", namespace, "--subresource=status")
        assert not can("get", "secrets", namespace), "the ServiceAccount must not read secrets"
        if mode == "namespaced":
            assert not can("list", "jobs.batch", system), "namespaced mode grants nothing outside watchNamespaces"

        op = operator(namespace, config=config)
        name = "rbac"
        kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(quick_experiment(name, seconds=1, max_trials=3)))
        st = wait_finished(kube, namespace, name, 150)
        assert st["phase"] == "Succeeded", summary(kube, namespace, name)
        assert kube.get(path("v1", "configmaps", namespace, f"{name}-best"))
        op.stop()
        # kopf may be refused a list of namespaces (docs/operator.md); nothing else may be forbidden.
        forbidden = [
            line
            for line in op.log().splitlines()
            if re.search(r"forbidden|\b403\b", line, re.I) and "namespaces" not in line
        ]
        assert not forbidden, "\n".join(forbidden[:20])
    finally:
        helm("uninstall", release, "-n", system, "--wait", "--timeout", "120s", check=False)
        delete_namespace(kube, system)
