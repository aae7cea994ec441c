"""The Helm chart, rendered by the real helm v4 binary (`make helm` puts it in tools/).

`helm lint --strict` and `helm template` for the default values, namespaced mode and
monitoring on; the rendered objects are asserted on with PyYAML: least-privilege RBAC that
matches the operator's API calls, the hardened pod, the chart's CRDs equal to crds/, and a
values schema that refuses bad values.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kubenas"
HELM = ROOT / "tools" / "helm" if (ROOT / "tools" / "helm").exists() else shutil.which("helm")

pytestmark = pytest.mark.skipif(HELM is None, reason="helm missing: run `make helm`")

RELEASE, NAMESPACE = "kn", "kubenas-system"
FULLNAME = "kn-kubenas"
NAMESPACED = ["--set", "watchNamespaces={team-a,team-b}"]
MONITORING = [
    "--set",
    "monitoring.trialPodMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.dashboard.enabled=true",
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRule.kubeStateMetrics=true",
    "--set",
    "operator.prometheusUrl=http://prometheus-operated.monitoring.svc:9090",
]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60, check=False)


def render(extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    done = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def namespaced() -> list[dict[str, Any]]:
    return render(NAMESPACED)


@pytest.fixture(scope="module")
def monitored() -> list[dict[str, Any]]:
    return render([*NAMESPACED, *MONITORING])


@pytest.mark.parametrize(
    "extra", [[], NAMESPACED, [*NAMESPACED, *MONITORING]], ids=["default", "namespaced", "monitoring"]
)
def test_lint_strict(extra: list[str]) -> None:
    done = helm("lint", "--strict", str(CHART), *extra)
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_renders_operator_cluster_wide(default: list[dict[str, Any]]) -> None:
    assert sorted(d["kind"] for d in default) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    deploy = one(default, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--all-namespaces", "--liveness=http://$(POD_IP):8080/healthz", "--metrics-port=8081"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [
        {"name": "health", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8081, "protocol": "TCP"},
    ]
    service = one(default, "Service")
    assert service["metadata"]["name"] == f"{FULLNAME}-metrics"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert container["image"] == "ghcr.io/kubenas/kubenas-operator:0.1.0"
    binding = one(default, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME


def test_operator_pod_is_hardened(default: list[dict[str, Any]]) -> None:
    pod = one(default, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # HOME (and any temporary file) is on a writable emptyDir, since the root filesystem is read-only.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


def test_namespaced_mode_has_no_cluster_wide_rbac(namespaced: list[dict[str, Any]]) -> None:
    assert not of_kind(namespaced, "ClusterRole")
    assert not of_kind(namespaced, "ClusterRoleBinding")
    roles = of_kind(namespaced, "Role")
    bindings = of_kind(namespaced, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    args = one(namespaced, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args


def test_rbac_is_least_privilege_and_covers_the_operator(
    default: list[dict[str, Any]], namespaced: list[dict[str, Any]]
) -> None:
    from kubenas.controller import kube

    cluster_rules = one(default, "ClusterRole")["rules"]
    for role in of_kind(namespaced, "Role"):
        assert role["rules"] == cluster_rules  # the same permissions, only scoped
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in cluster_rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    # Everything the operator's REST client touches is granted, and nothing kopf does not need.
    for resource in (kube.EXPERIMENTS, kube.TRIALS, kube.JOBS, kube.PODS, kube.EVENTS, kube.CONFIGMAPS, kube.SERVICES):
        assert (resource.group, resource.plural) in granted, resource
    assert granted[("kubenas.io", "experiments")] == {"get", "list", "watch"}
    assert granted[("kubenas.io", "experiments/status")] == {"patch"}
    assert granted[("kubenas.io", "trials")] == {"get", "list", "watch", "create"}
    assert granted[("kubenas.io", "trials/status")] == {"patch"}
    assert granted[("batch", "jobs")] == {"get", "list", "watch", "create", "delete"}
    assert granted[("", "pods")] == {"get", "list", "watch"}
    assert granted[("", "events")] == {"create"}
    assert granted[("", "configmaps")] == {"get", "create", "patch"}
    assert granted[("", "services")] == {"get", "create", "delete"}  # multi-pod trials' headless Services
    assert len(granted) == 9  # no secrets, namespaces, CRDs, finalizers or pods/log


def test_crds_in_chart_equal_generated_crds() -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    in_chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert generated == in_chart == ["experiments.kubenas.io.yaml", "trials.kubenas.io.yaml"]
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name
    done = helm("template", RELEASE, str(CHART), "--include-crds")
    assert done.returncode == 0, done.stderr
    crds = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == ["experiments.kubenas.io", "trials.kubenas.io"]


def test_monitoring_objects(monitored: list[dict[str, Any]]) -> None:
    monitor = one(monitored, "PodMonitor")
    assert monitor["spec"]["selector"] == {"matchExpressions": [{"key": "kubenas.io/trial", "operator": "Exists"}]}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics", "kubenas-metrics"]
    env = one(monitored, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBENAS_PROMETHEUS_URL", "value": "http://prometheus-operated.monitoring.svc:9090"} in env
    assert {"name": "KUBENAS_PROMETHEUS_TRIAL_LABEL", "value": "pod"} in env

    service_monitor = one(monitored, "ServiceMonitor")
    service = one(monitored, "Service")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"

    rule = one(monitored, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    operator_alerts = {
        "KubenasOperatorDown",
        "KubenasExperimentFailed",
        "KubenasTrialsFailing",
        "KubenasReconcileErrors",
    }
    assert operator_alerts <= set(alerts)
    # The operator's own series: the ServiceMonitor's job is the metrics Service's name.
    assert f'job="{FULLNAME}-metrics"' in alerts["KubenasOperatorDown"]["expr"]
    assert f'deployment="{FULLNAME}"' in alerts["KubenasOperatorUnavailable"]["expr"]
    assert all(a["labels"]["severity"] for a in alerts.values())

    dashboard_cm = one(monitored, "ConfigMap")
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    text = dashboard_cm["data"]["kubenas.json"]
    assert "__OPERATOR_" not in text
    dashboard = json.loads(text)
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    assert "kubenas_trial_metric" in exprs and "kubenas_trial_step" in exprs
    assert f'job="{FULLNAME}-metrics"' in exprs and "kubenas_reconcile_seconds_bucket" in exprs
    assert "kube_" not in exprs and "container_" not in exprs  # kube-state-metrics and cAdvisor are optional


def test_alerts_need_no_kube_state_metrics_by_default() -> None:
    docs = render(
        ["--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.serviceMonitor.enabled=true"]
    )
    exprs = " ".join(r["expr"] for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"])
    assert "kube_" not in exprs and "kubenas_trial_phase" not in exprs and "kubenas_experiment_phase" not in exprs
    assert "kubenas_experiments" in exprs and "kubenas_trials" in exprs


def test_metrics_off_drops_the_service_and_refuses_a_service_monitor() -> None:
    docs = render(["--set", "operator.metrics.enabled=false"])
    assert not of_kind(docs, "Service")
    assert "--metrics-port=0" in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    done = helm(
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "operator.metrics.enabled=false",
        "--set",
        "monitoring.serviceMonitor.enabled=true",
    )
    assert done.returncode != 0 and "needs operator.metrics.enabled" in done.stderr


def test_monitoring_off_by_default_and_cluster_wide_pod_monitor(default: list[dict[str, Any]]) -> None:
    assert not of_kind(default, "PodMonitor") and not of_kind(default, "PrometheusRule")
    monitor = one(render(MONITORING), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


def test_alert_rules_are_valid_promql(monitored: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (Debian package prometheus, installed by `make prometheus`)")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(one(monitored, "PrometheusRule")["spec"]))
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_kube_state_metrics_config_defines_the_series_alerts_use(monitored: list[dict[str, Any]]) -> None:
    config = yaml.safe_load((CHART / "files" / "kube-state-metrics-kubenas.yaml").read_text())
    names = {f"{r['metricNamePrefix']}_{m['name']}" for r in config["spec"]["resources"] for m in r["metrics"]}
    assert names == {"kubenas_experiment_phase", "kubenas_trial_phase"}
    exprs = " ".join(r["expr"] for g in one(monitored, "PrometheusRule")["spec"]["groups"] for r in g["rules"])
    assert "kubenas_trial_phase" in exprs  # the per-experiment alerts (kubeStateMetrics: true)
    from kubenas import api

    phases = {
        r["groupVersionKind"]["kind"]: r["metrics"][0]["each"]["stateSet"]["list"] for r in config["spec"]["resources"]
    }
    assert phases["Experiment"] == [p.value for p in api.ExperimentPhase]
    assert phases["Trial"] == [p.value for p in api.TrialPhase]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (["--set-string", "replicas=two"], "/replicas"),
        (["--set", "replicas=2"], "/replicas"),
        (["--set", "replicaCount=1"], "replicaCount"),
        (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "monitoring.trialPodMonitor.enabeld=true"], "enabeld"),
        (["--set", "operator.settings.resyncSeconds=-1"], "/operator/settings/resyncSeconds"),
        (["--set", "trialPodPolicy.default.level=lax"], "/trialPodPolicy/default/level"),
        (["--set", "trialPodPolicy.namespaces.Team_A=baseline"], "Team_A"),
        (["--set", "trialPodPolicy.namespaces.ml.serviceAccount={x}"], "serviceAccount"),
        (["--set", "networkPolicy.enabeld=true"], "enabeld"),
        (["--set", "networkPolicy.egress.apiServer.cidrs={10.0.0.1}"], "/networkPolicy/egress/apiServer/cidrs/0"),
        (["--set", "operator.listenAddress=localhost"], "/operator/listenAddress"),
    ],
)
def test_schema_refuses_bad_values(values: list[str], complaint: str) -> None:
    done = helm("template", RELEASE, str(CHART), *values)
    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


def test_operator_settings_become_environment() -> None:
    docs = render(["--set", "operator.settings.resyncSeconds=5", "--set", "operator.settings.suggesterCacheSize=8"])
    env = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBENAS_RESYNC_SECONDS", "value": "5"} in env
    assert {"name": "KUBENAS_SUGGESTER_CACHE_SIZE", "value": "8"} in env
    assert not any(e["name"] == "KUBENAS_DEBOUNCE_SECONDS" for e in env)


# --------------------------------------------------------------------------- exposure and the trial pod policy


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_health_and_metrics_listen_on_the_pod_ip_only(default: list[dict[str, Any]]) -> None:
    container = operator_container(default)
    env = container["env"]
    # POD_IP comes first: the kubelet expands $(POD_IP) only in later entries and in args.
    assert env[0] == {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    assert {"name": "KUBENAS_OPERATOR_METRICS_HOST", "value": "$(POD_IP)"} in env[1:]
    assert "--liveness=http://$(POD_IP):8080/healthz" in container["args"]
    # The probe and the Service reach the pod IP: no host and targetPort by name.
    assert "host" not in container["livenessProbe"]["httpGet"]

    anywhere = operator_container(render(["--set", "operator.listenAddress=0.0.0.0"]))
    assert "--liveness=http://0.0.0.0:8080/healthz" in anywhere["args"]
    assert {"name": "KUBENAS_OPERATOR_METRICS_HOST", "value": "0.0.0.0"} in anywhere["env"]


def test_trial_pod_policy_values_reach_the_operator(tmp_path: Path) -> None:
    from kubenas import podpolicy
    from kubenas.controller.settings import TRIAL_POD_POLICY_ENV, Settings

    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "trialPodPolicy": {
                    "default": {"serviceAccounts": ["reader"]},
                    "namespaces": {
                        "ml-gpu": "baseline",
                        "ml-ops": {"level": "privileged", "serviceAccountToken": True},
                    },
                }
            }
        )
    )
    for extra, expected in [([], podpolicy.RESTRICTED), (["-f", str(values)], None)]:
        env = {e["name"]: e.get("value") for e in operator_container(render(extra))["env"]}
        policies = Settings.from_env(env={TRIAL_POD_POLICY_ENV: env[TRIAL_POD_POLICY_ENV]}).trial_pod_policy
        if expected is not None:
            assert policies == expected
            continue
        assert policies.for_namespace("ml-gpu").level == podpolicy.Level.BASELINE
        assert policies.for_namespace("ml-gpu").service_accounts == {"reader"}  # the rest from default
        assert policies.for_namespace("ml-ops").service_account_token is True
        assert policies.for_namespace("other").level == podpolicy.Level.RESTRICTED


NETWORK_POLICY = ["--set", "networkPolicy.enabled=true"]


def test_network_policy_is_off_by_default(default: list[dict[str, Any]]) -> None:
    assert not of_kind(default, "NetworkPolicy")


def test_network_policy_allows_metrics_in_and_the_api_server_dns_and_trials_out() -> None:
    docs = render(NETWORK_POLICY)
    policy = one(docs, "NetworkPolicy")["spec"]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]}
    ]
    api_server, dns, trials = policy["egress"]
    assert api_server == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert trials == {
        "to": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchExpressions": [{"key": "kubenas.io/trial", "operator": "Exists"}]},
            }
        ]
    }


def test_network_policy_follows_the_values() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = render(
        [
            *NETWORK_POLICY,
            "--set-json",
            f"networkPolicy.metricsFrom=[{json.dumps(monitoring)}]",
            "--set-json",
            'networkPolicy.healthFrom=[{"ipBlock": {"cidr": "10.0.0.0/8"}}]',
            "--set",
            "networkPolicy.egress.apiServer.cidrs={172.18.0.2/32}",
            "--set",
            "networkPolicy.egress.apiServer.ports={6443}",
            "--set",
            "networkPolicy.egress.dns.enabled=false",
            "--set",
            "networkPolicy.egress.trialPods=false",
            "--set",
            "operator.prometheusUrl=http://prometheus-operated.monitoring.svc:9090",
        ]
    )
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [monitoring]},
        {"ports": [{"port": "health", "protocol": "TCP"}], "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
    ]
    assert policy["egress"] == [
        {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}]},
        {"ports": [{"port": 9090, "protocol": "TCP"}], "to": [{"namespaceSelector": {}}]},
    ]
    closed = one(render([*NETWORK_POLICY, "--set", "operator.metrics.enabled=false"]), "NetworkPolicy")
    assert closed["spec"]["ingress"] == []
