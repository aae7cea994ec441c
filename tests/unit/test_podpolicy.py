"""kubenas.podpolicy: the restricted defaults reach every container, merged field by field, and every
field the Pod Security Standards (or kubenas's own identity rules) forbid is refused until the chart
value named in the message relaxes it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubenas import podpolicy
from kubenas.podpolicy import Level, Policy

NAMESPACE = "team-a"


def template(**spec: Any) -> dict[str, Any]:
    """A plain pod template: one trial container."""
    return {"metadata": {}, "spec": {"containers": [{"name": "trial", "image": "trial:1"}], **spec}}


def container_security(**security: Any) -> Callable[[dict[str, Any]], None]:
    def change(t: dict[str, Any]) -> None:
        t["spec"]["containers"][0]["securityContext"] = security

    return change


def pod_security(**security: Any) -> Callable[[dict[str, Any]], None]:
    def change(t: dict[str, Any]) -> None:
        t["spec"]["securityContext"] = security

    return change


def pod(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(t: dict[str, Any]) -> None:
        t["spec"].update(copy.deepcopy(fields))

    return change


def container(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(t: dict[str, Any]) -> None:
        t["spec"]["containers"][0].update(copy.deepcopy(fields))

    return change


def annotations(**values: str) -> Callable[[dict[str, Any]], None]:
    def change(t: dict[str, Any]) -> None:
        t["metadata"]["annotations"] = values

    return change


@dataclass(frozen=True)
class Case:
    """A template change the default policy refuses at ``path``, and the relaxation that allows it."""

    id: str
    change: Callable[[dict[str, Any]], None]
    path: str
    relax: dict[str, Any] = field(default_factory=lambda: {"level": "baseline"})


C0 = "spec.containers[0]"
PRIVILEGED = {"level": "privileged"}
CASES = [
    # baseline: only `privileged` allows these
    Case("privileged", container_security(privileged=True), f"{C0}.securityContext.privileged", PRIVILEGED),
    Case("host-network", pod(hostNetwork=True), "spec.hostNetwork", PRIVILEGED),
    Case("host-pid", pod(hostPID=True), "spec.hostPID", PRIVILEGED),
    Case("host-ipc", pod(hostIPC=True), "spec.hostIPC", PRIVILEGED),
    Case(
        "host-path-volume",
        pod(volumes=[{"name": "data", "hostPath": {"path": "/var/run"}}]),
        "spec.volumes[0].hostPath",
        PRIVILEGED,
    ),
    Case(
        "host-port",
        container(ports=[{"containerPort": 80, "hostPort": 80}]),
        f"{C0}.ports[0].hostPort",
        PRIVILEGED,
    ),
    Case(
        "capability-sys-admin",
        container_security(capabilities={"add": ["SYS_ADMIN"]}),
        f"{C0}.securityContext.capabilities.add[0]",
        PRIVILEGED,
    ),
    Case(
        "capability-cap-net-admin",
        container_security(capabilities={"add": ["CAP_NET_ADMIN"]}),
        f"{C0}.securityContext.capabilities.add[0]",
        PRIVILEGED,
    ),
    Case(
        "proc-mount-unmasked", container_security(procMount="Unmasked"), f"{C0}.securityContext.procMount", PRIVILEGED
    ),
    Case(
        "unsafe-sysctl",
        pod_security(sysctls=[{"name": "kernel.msgmax", "value": "65536"}]),
        "spec.securityContext.sysctls[0].name",
        PRIVILEGED,
    ),
    Case(
        "seccomp-unconfined-pod",
        pod_security(seccompProfile={"type": "Unconfined"}),
        "spec.securityContext.seccompProfile.type",
        PRIVILEGED,
    ),
    Case(
        "seccomp-unconfined-container",
        container_security(seccompProfile={"type": "Unconfined"}),
        f"{C0}.securityContext.seccompProfile.type",
        PRIVILEGED,
    ),
    Case(
        "apparmor-unconfined-pod",
        pod_security(appArmorProfile={"type": "Unconfined"}),
        "spec.securityContext.appArmorProfile.type",
        PRIVILEGED,
    ),
    Case(
        "apparmor-unconfined-container",
        container_security(appArmorProfile={"type": "Unconfined"}),
        f"{C0}.securityContext.appArmorProfile.type",
        PRIVILEGED,
    ),
    Case(
        "apparmor-annotation-unconfined",
        annotations(**{"container.apparmor.security.beta.kubernetes.io/trial": "unconfined"}),
        "metadata.annotations['container.apparmor.security.beta.kubernetes.io/trial']",
        PRIVILEGED,
    ),
    Case(
        "selinux-type",
        container_security(seLinuxOptions={"type": "spc_t"}),
        f"{C0}.securityContext.seLinuxOptions.type",
        PRIVILEGED,
    ),
    Case(
        "selinux-user",
        pod_security(seLinuxOptions={"user": "system_u"}),
        "spec.securityContext.seLinuxOptions.user",
        PRIVILEGED,
    ),
    Case(
        "selinux-role",
        container_security(seLinuxOptions={"role": "sysadm_r"}),
        f"{C0}.securityContext.seLinuxOptions.role",
        PRIVILEGED,
    ),
    Case(
        "windows-host-process-pod",
        pod_security(windowsOptions={"hostProcess": True}),
        "spec.securityContext.windowsOptions.hostProcess",
        PRIVILEGED,
    ),
    Case(
        "windows-host-process-container",
        container_security(windowsOptions={"hostProcess": True}),
        f"{C0}.securityContext.windowsOptions.hostProcess",
        PRIVILEGED,
    ),
    # restricted: `baseline` allows these
    Case("nfs-volume", pod(volumes=[{"name": "d", "nfs": {"server": "nfs", "path": "/"}}]), "spec.volumes[0].nfs"),
    Case(
        "gce-disk-volume",
        pod(volumes=[{"name": "d", "gcePersistentDisk": {"pdName": "disk"}}]),
        "spec.volumes[0].gcePersistentDisk",
    ),
    Case(
        "privilege-escalation",
        container_security(allowPrivilegeEscalation=True),
        f"{C0}.securityContext.allowPrivilegeEscalation",
    ),
    Case("root-user-pod", pod_security(runAsUser=0, runAsNonRoot=True), "spec.securityContext.runAsUser"),
    Case("root-user-container", container_security(runAsUser=0), f"{C0}.securityContext.runAsUser"),
    Case("run-as-non-root-false-pod", pod_security(runAsNonRoot=False), "spec.securityContext.runAsNonRoot"),
    Case(
        "run-as-non-root-false-container",
        container_security(runAsNonRoot=False),
        f"{C0}.securityContext.runAsNonRoot",
    ),
    Case(
        "capability-chown",
        container_security(capabilities={"add": ["CHOWN"]}),
        f"{C0}.securityContext.capabilities.add[0]",
    ),
    Case(
        "capabilities-drop-without-all",
        container_security(capabilities={"drop": ["NET_RAW"]}),
        f"{C0}.securityContext.capabilities.drop",
    ),
    # kubenas's own rules
    Case(
        "service-account",
        pod(serviceAccountName="deployer"),
        "spec.serviceAccountName",
        {"serviceAccounts": ["deployer"]},
    ),
    Case(
        "service-account-deprecated-field",
        pod(serviceAccount="deployer"),
        "spec.serviceAccount",
        {"serviceAccounts": ["deployer"]},
    ),
    Case(
        "service-account-token",
        pod(automountServiceAccountToken=True),
        "spec.automountServiceAccountToken",
        {"serviceAccountToken": True},
    ),
    Case(
        "projected-service-account-token",
        pod(volumes=[{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]),
        "spec.volumes[0].projected.sources[0].serviceAccountToken",
        {"serviceAccountToken": True},
    ),
    Case(
        "writable-root-filesystem",
        container_security(readOnlyRootFilesystem=False),
        f"{C0}.securityContext.readOnlyRootFilesystem",
        {"writableRootFilesystem": True},
    ),
]


def changed(case: Case) -> dict[str, Any]:
    t = template()
    case.change(t)
    return {"metadata": t["metadata"], "spec": podpolicy.apply_defaults(t["spec"])}


def policy_for(values: dict[str, Any] | None = None) -> Policy:
    return podpolicy.parse_policies(values).for_namespace(NAMESPACE)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_refused_by_default_naming_field_and_chart_value(case: Case) -> None:
    found = podpolicy.violations(changed(case), policy_for())
    assert [v.path for v in found] == [case.path]
    message = found[0].message
    assert "is forbidden by the restricted trial pod policy" in message, message
    key, value = next(iter(case.relax.items()))
    assert f"allow it with the chart value trialPodPolicy.namespaces.{NAMESPACE}.{key}: " in message, message
    shown = f"[{value[0]}]" if isinstance(value, list) else str(value).lower()
    assert message.endswith(shown), message


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_allowed_once_the_namespace_is_relaxed(case: Case) -> None:
    values = {"namespaces": {NAMESPACE: case.relax, "other": {}}}
    assert podpolicy.violations(changed(case), policy_for(values)) == []
    other = podpolicy.parse_policies(values).for_namespace("other")
    assert [v.path for v in podpolicy.violations(changed(case), other)] == [case.path]


@pytest.mark.parametrize("case", [c for c in CASES if c.relax == PRIVILEGED], ids=lambda c: c.id)
def test_baseline_still_refuses_what_only_privileged_allows(case: Case) -> None:
    found = podpolicy.violations(changed(case), policy_for({"default": "baseline"}))
    assert [v.path for v in found] == [case.path]
    assert "forbidden by the baseline trial pod policy" in found[0].message
    assert found[0].message.endswith(".level: privileged")


def test_a_plain_template_meets_the_default_policy() -> None:
    t = template()
    assert podpolicy.violations({"spec": podpolicy.apply_defaults(t["spec"])}, policy_for()) == []


def test_the_default_service_account_and_allowed_volumes_pass() -> None:
    volumes = [
        {"name": "c", "configMap": {"name": "x"}},
        {"name": "s", "secret": {"secretName": "x"}},
        {"name": "p", "persistentVolumeClaim": {"claimName": "x"}},
        {"name": "e", "emptyDir": {}},
        {"name": "d", "downwardAPI": {"items": []}},
        {"name": "pr", "projected": {"sources": [{"configMap": {"name": "x"}}]}},
        {"name": "cs", "csi": {"driver": "x"}},
        {"name": "ep", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
    ]
    t = template(serviceAccountName="default", volumes=volumes)
    t["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_BIND_SERVICE"]}, "runAsUser": 1000}
    t["spec"]["securityContext"] = {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}
    assert podpolicy.violations({"spec": podpolicy.apply_defaults(t["spec"])}, policy_for()) == []


KINDS = {
    "init": ("initContainers", {"name": "init", "image": "busybox"}),
    "sidecar": ("initContainers", {"name": "proxy", "image": "envoy", "restartPolicy": "Always"}),
    "ephemeral": ("ephemeralContainers", {"name": "debug", "image": "busybox"}),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_container_is_checked(kind: str) -> None:
    key, extra = KINDS[kind]
    t = template()
    t["spec"][key] = [{**extra, "securityContext": {"privileged": True}}]
    found = podpolicy.violations({"spec": podpolicy.apply_defaults(t["spec"])}, policy_for())
    assert [v.path for v in found] == [f"spec.{key}[0].securityContext.privileged"]


# --------------------------------------------------------------------------- defaults


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
SCRATCH_MOUNT = {"name": podpolicy.SCRATCH_VOLUME, "mountPath": "/tmp"}


def test_defaults_reach_every_container() -> None:
    t = template()
    t["spec"]["initContainers"] = [KINDS["init"][1], KINDS["sidecar"][1]]
    t["spec"]["ephemeralContainers"] = [KINDS["ephemeral"][1]]
    spec = podpolicy.apply_defaults(t["spec"])
    everyone = [*spec["initContainers"], *spec["containers"], *spec["ephemeralContainers"]]
    assert len(everyone) == 4
    for c in everyone:
        assert c["securityContext"] == RESTRICTED_CONTAINER, c["name"]
        assert c["volumeMounts"] == [SCRATCH_MOUNT], c["name"]
    assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["automountServiceAccountToken"] is False
    assert spec["volumes"] == [{"name": podpolicy.SCRATCH_VOLUME, "emptyDir": {}}]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            {"capabilities": {"add": ["NET_BIND_SERVICE"]}},
            {**RESTRICTED_CONTAINER, "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
        ),
        (
            {"capabilities": {"drop": ["NET_RAW"]}},
            {**RESTRICTED_CONTAINER, "capabilities": {"drop": ["NET_RAW"]}},
        ),
        ({"runAsUser": 1000}, {**RESTRICTED_CONTAINER, "runAsUser": 1000}),
        ({"readOnlyRootFilesystem": False}, {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": False}),
        ({"allowPrivilegeEscalation": None}, RESTRICTED_CONTAINER),
        (
            {"privileged": True},
            {"privileged": True, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        ),
        (
            {"capabilities": {"add": ["CAP_SYS_ADMIN"]}},
            {"readOnlyRootFilesystem": True, "capabilities": {"add": ["CAP_SYS_ADMIN"], "drop": ["ALL"]}},
        ),
    ],
    ids=[
        "capabilities-add-keeps-drop-all",
        "own-drop-kept",
        "other-fields-kept",
        "own-read-write-root-kept",
        "null-means-unset",
        "privileged-gets-no-escalation-default",  # the API server refuses privileged with escalation off
        "cap-sys-admin-gets-no-escalation-default",
    ],
)
def test_container_defaults_merge_field_by_field(given: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = podpolicy.apply_defaults(template()["spec"] | {"containers": [{"name": "c", "securityContext": given}]})
    assert spec["containers"][0]["securityContext"] == expected


def test_pod_defaults_merge_field_by_field() -> None:
    given = {"runAsUser": 1000, "seccompProfile": {"type": "Localhost", "localhostProfile": "trial.json"}}
    spec = podpolicy.apply_defaults(template(securityContext=given, automountServiceAccountToken=True)["spec"])
    assert spec["securityContext"] == {**given, "runAsNonRoot": True}
    assert spec["automountServiceAccountToken"] is True


def test_scratch_volume_only_where_the_root_is_read_only_and_tmp_is_free() -> None:
    own_tmp = {"name": "work", "mountPath": "/tmp/"}
    t = template(volumes=[{"name": "work", "emptyDir": {"medium": "Memory"}}])
    t["spec"]["containers"] = [
        {"name": "own-tmp", "volumeMounts": [own_tmp]},
        {"name": "writable", "securityContext": {"readOnlyRootFilesystem": False}},
    ]
    spec = podpolicy.apply_defaults(t["spec"])
    assert spec["containers"][0]["volumeMounts"] == [own_tmp]
    assert "volumeMounts" not in spec["containers"][1]
    assert spec["volumes"] == [{"name": "work", "emptyDir": {"medium": "Memory"}}]


def test_apply_defaults_copies_and_is_idempotent() -> None:
    t = template()
    before = copy.deepcopy(t)
    once = podpolicy.apply_defaults(t["spec"])
    assert t == before
    assert podpolicy.apply_defaults(once) == once


# --------------------------------------------------------------------------- the chart value


def test_parse_shorthand_inheritance_and_namespaces() -> None:
    policies = podpolicy.parse_policies(
        {
            "default": {"serviceAccounts": ["reader"]},
            "namespaces": {"ml-gpu": "baseline", "ml-ops": {"level": "privileged", "serviceAccountToken": True}},
        }
    )
    assert policies.for_namespace("elsewhere") == Policy(service_accounts=frozenset({"reader"}), namespace="elsewhere")
    assert policies.for_namespace("ml-gpu") == Policy(
        level=Level.BASELINE, service_accounts=frozenset({"reader"}), namespace="ml-gpu"
    )
    ops = policies.for_namespace("ml-ops")
    assert (ops.level, ops.service_account_token, ops.writable_root_filesystem) == (Level.PRIVILEGED, True, False)
    assert podpolicy.parse_policies(None) == podpolicy.parse_policies({}) == podpolicy.RESTRICTED
    assert podpolicy.parse_policies({"default": "restricted", "namespaces": None}) == podpolicy.RESTRICTED


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ([], "trialPodPolicy must be a mapping"),
        ({"defaults": "baseline"}, "trialPodPolicy: unknown key 'defaults'"),
        ({"default": "lax"}, "trialPodPolicy.default.level must be one of privileged, baseline, restricted"),
        ({"namespaces": ["a"]}, "trialPodPolicy.namespaces must map"),
        ({"namespaces": {"a": {"levle": "baseline"}}}, "trialPodPolicy.namespaces.a: unknown key 'levle'"),
        ({"namespaces": {"a": {"serviceAccounts": "x"}}}, "trialPodPolicy.namespaces.a.serviceAccounts must be a list"),
        ({"default": {"serviceAccountToken": "yes"}}, "trialPodPolicy.default.serviceAccountToken must be true"),
        ({"default": 3}, "trialPodPolicy.default must be a level name or a mapping"),
    ],
    ids=[
        "not-a-mapping",
        "unknown-key",
        "unknown-level",
        "namespaces-not-a-mapping",
        "misspelt-key",
        "accounts-not-a-list",
        "flag-not-a-bool",
        "policy-not-a-mapping",
    ],
)
def test_parse_refuses_bad_values_naming_the_key(values: Any, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace(".", r"\.")):
        podpolicy.parse_policies(values)


def test_message_without_namespace_names_a_placeholder() -> None:
    t = template(hostPID=True)
    found = podpolicy.violations({"spec": podpolicy.apply_defaults(t["spec"])}, podpolicy.RESTRICTED.default)
    assert found[0].message == (
        "hostPID: true is forbidden by the restricted trial pod policy; "
        "allow it with the chart value trialPodPolicy.namespaces.<namespace>.level: privileged"
    )
