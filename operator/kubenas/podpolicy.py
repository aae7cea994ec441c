"""The trial pod policy: secure defaults merged into every trial pod, and what a template may ask for.

The operator creates trial pods on behalf of whoever may create an Experiment, who may not be
allowed to create Pods: without a policy it would be a confused deputy. So every trial pod
template gets the defaults of the Kubernetes Pod Security Standard ``restricted`` plus a
read-only root filesystem (an emptyDir on ``/tmp`` for scratch space) and no service-account
token, merged field by field (a user's value wins over a default, never a whole block); and a
template that asks for more than its namespace's :class:`Policy` allows is refused, naming
the field and the chart value that would allow it (docs/security.md).

Pure: no I/O. ``apply_defaults`` is what the Job builder uses; ``violations`` checks a pod
template that already has the defaults.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

CHART_VALUE = "trialPodPolicy"
"""The Helm chart value (and ``kubenas validate --policy`` file key) holding the policy."""

SCRATCH_VOLUME = "kubenas-scratch"
SCRATCH_DIR = "/tmp"
DEFAULT_SERVICE_ACCOUNT = "default"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

POD_DEFAULTS: Mapping[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_DEFAULTS: Mapping[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

# The Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE"}
    | {"SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


class Level(StrEnum):
    """A Pod Security Standard: what a trial pod template may ask for, least to most strict."""

    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"

    @property
    def strictness(self) -> int:
        return list(Level).index(self)


@dataclass(frozen=True)
class Policy:
    """What trial pod templates of one namespace may ask for beyond the secure defaults.

    Attributes:
        level: the Pod Security Standard trial templates must meet.
        service_accounts: service accounts a template may name (``default`` always).
        service_account_token: whether a template may mount a service-account token
            (``automountServiceAccountToken: true`` or a projected token).
        writable_root_filesystem: whether a container may set ``readOnlyRootFilesystem: false``.
        namespace: the namespace it applies to (None: any), for the hint in messages.
    """

    level: Level = Level.RESTRICTED
    service_accounts: frozenset[str] = frozenset()
    service_account_token: bool = False
    writable_root_filesystem: bool = False
    namespace: str | None = None


# The chart's key for each relaxation: one home for the names of the values file and of the messages.
KEYS = {
    "level": "level",
    "service_accounts": "serviceAccounts",
    "service_account_token": "serviceAccountToken",
    "writable_root_filesystem": "writableRootFilesystem",
}


@dataclass(frozen=True)
class Policies:
    """The policy of every namespace: ``default`` unless ``namespaces`` names it."""

    default: Policy = Policy()
    namespaces: Mapping[str, Policy] = field(default_factory=dict)

    def for_namespace(self, namespace: str | None) -> Policy:
        """The policy trial pods of ``namespace`` get (None: a manifest with no namespace)."""
        chosen = self.namespaces.get(namespace, self.default) if namespace else self.default
        return replace(chosen, namespace=namespace)


RESTRICTED = Policies()


@dataclass(frozen=True)
class Violation:
    """A template field outside the policy: ``path`` is relative to the pod template (``spec.hostPID``)."""

    path: str
    message: str


# --------------------------------------------------------------------------- reading the chart value


def parse_policies(data: Any) -> Policies:
    """The policies from the chart's ``trialPodPolicy`` value (None: the restricted default).

    ``{default: <policy>, namespaces: {<namespace>: <policy>}}``; a policy is a level name
    (``restricted``, ``baseline``, ``privileged``) or a mapping of the keys in :data:`KEYS`.
    A namespace's policy takes the fields it does not give from ``default``.

    Raises:
        ValueError: naming the key that is wrong.
    """
    if data is None:
        return RESTRICTED
    if not isinstance(data, Mapping):
        raise ValueError(f"{CHART_VALUE} must be a mapping with keys default and namespaces")
    _no_unknown_keys(data, {"default", "namespaces"}, CHART_VALUE)
    default = _parse_policy(data.get("default"), Policy(), f"{CHART_VALUE}.default")
    namespaces = data.get("namespaces") or {}
    if not isinstance(namespaces, Mapping):
        raise ValueError(f"{CHART_VALUE}.namespaces must map namespace names to policies")
    return Policies(
        default=default,
        namespaces={
            str(ns): _parse_policy(raw, default, f"{CHART_VALUE}.namespaces.{ns}") for ns, raw in namespaces.items()
        },
    )


def _parse_policy(raw: Any, base: Policy, where: str) -> Policy:
    if raw is None:
        return base
    if isinstance(raw, str):
        raw = {KEYS["level"]: raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a level name or a mapping")
    _no_unknown_keys(raw, set(KEYS.values()), where)
    changes: dict[str, Any] = {}
    for attribute, key in KEYS.items():
        if raw.get(key) is not None:
            changes[attribute] = _parse_field(attribute, raw[key], f"{where}.{key}")
    return replace(base, **changes)


def _parse_field(attribute: str, value: Any, where: str) -> Any:
    if attribute == "level":
        if value not in {level.value for level in Level}:
            raise ValueError(f"{where} must be one of {', '.join(level.value for level in Level)}, got {value!r}")
        return Level(value)
    if attribute == "service_accounts":
        if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
            raise ValueError(f"{where} must be a list of service account names")
        return frozenset(value)
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    return value


def _no_unknown_keys(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


# --------------------------------------------------------------------------- the secure defaults


def apply_defaults(pod_spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``pod_spec`` with the secure defaults merged in, field by field.

    The pod gets ``runAsNonRoot``, seccomp ``RuntimeDefault`` and no service-account token;
    every container (init, sidecar, ephemeral included) gets no privilege escalation, all
    capabilities dropped and a read-only root filesystem with an emptyDir on ``/tmp``. A field
    the template sets keeps its value (``capabilities: {add: [X]}`` still drops ALL); whether
    that value is allowed is :func:`violations`' business.
    """
    pod = copy.deepcopy(dict(pod_spec))
    if pod.get("automountServiceAccountToken") is None:  # null would mount the token
        pod["automountServiceAccountToken"] = False
    pod["securityContext"] = _merged(POD_DEFAULTS, pod.get("securityContext"))
    for key in CONTAINER_LISTS:
        if isinstance(pod.get(key), list):
            pod[key] = [_container_defaults(c) if isinstance(c, dict) else c for c in pod[key]]
    volumes = [v for v in _list(pod.get("volumes")) if not (isinstance(v, dict) and v.get("name") == SCRATCH_VOLUME)]
    if any(_mounts_scratch(c) for _, c in _containers(pod)):
        volumes.append({"name": SCRATCH_VOLUME, "emptyDir": {}})
    if volumes or "volumes" in pod:
        pod["volumes"] = volumes
    return pod


def _merged(defaults: Mapping[str, Any], given: Any) -> dict[str, Any]:
    """``given`` with each default it lacks; ``capabilities`` is merged one level deeper."""
    merged = dict(given) if isinstance(given, dict) else {}
    for key, default in defaults.items():
        if merged.get(key) is None:
            merged[key] = copy.deepcopy(default)
        elif key == "capabilities" and isinstance(merged[key], dict):
            merged[key] = _merged(default, merged[key])
    return merged


def _container_defaults(container: dict[str, Any]) -> dict[str, Any]:
    c = dict(container)
    given = _dict(c.get("securityContext"))
    defaults = dict(CONTAINER_DEFAULTS)
    if _escalates_anyway(given):  # the API server refuses allowPrivilegeEscalation: false with these
        defaults.pop("allowPrivilegeEscalation")
    c["securityContext"] = _merged(defaults, given)
    if c["securityContext"].get("readOnlyRootFilesystem") is True and not _mounts_at(c, SCRATCH_DIR):
        c["volumeMounts"] = [*_list(c.get("volumeMounts")), {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR}]
    return c


def _escalates_anyway(security: Mapping[str, Any]) -> bool:
    added = _list(_dict(security.get("capabilities")).get("add"))
    return security.get("privileged") is True or "CAP_SYS_ADMIN" in added


def _mounts_at(container: Mapping[str, Any], path: str) -> bool:
    mounts = _list(container.get("volumeMounts"))
    return any(isinstance(m, dict) and str(m.get("mountPath", "")).rstrip("/") == path for m in mounts)


def _mounts_scratch(container: Mapping[str, Any]) -> bool:
    return any(isinstance(m, dict) and m.get("name") == SCRATCH_VOLUME for m in _list(container.get("volumeMounts")))


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class _Finding:
    """A field outside a Pod Security Standard; ``allowed_at`` is the strictest level that allows it."""

    path: str
    what: str
    allowed_at: Level


def violations(pod_template: Mapping[str, Any], policy: Policy) -> list[Violation]:
    """What ``pod_template`` (``{metadata, spec}``, defaults applied) asks for beyond ``policy``."""
    spec = _dict(pod_template.get("spec"))
    metadata = _dict(pod_template.get("metadata"))
    found = [
        Violation(f.path, _forbidden(f.what, policy, "level", f.allowed_at))
        for f in (*_baseline_findings(spec, metadata), *_restricted_findings(spec))
        if policy.level.strictness > f.allowed_at.strictness
    ]
    return [*found, *_identity_violations(spec, policy)]


def _forbidden(what: str, policy: Policy, attribute: str, value: str) -> str:
    """The message of every violation: what, which policy, and the chart value (``KEYS[attribute]``) allowing it."""
    namespace = policy.namespace or "<namespace>"
    return (
        f"{what} is forbidden by the {policy.level} trial pod policy; "
        f"allow it with the chart value {CHART_VALUE}.namespaces.{namespace}.{KEYS[attribute]}: {value}"
    )


def _baseline_findings(spec: Mapping[str, Any], metadata: Mapping[str, Any]) -> Iterator[_Finding]:
    """Fields the ``baseline`` standard forbids (only ``privileged`` allows them)."""
    privileged = Level.PRIVILEGED
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            yield _Finding(f"spec.{key}", f"{key}: true", privileged)
    for i, volume in enumerate(_list(spec.get("volumes"))):
        if isinstance(volume, dict) and volume.get("hostPath") is not None:
            yield _Finding(f"spec.volumes[{i}].hostPath", "a hostPath volume", privileged)
    pod_security = _dict(spec.get("securityContext"))
    yield from _security_context_findings("spec.securityContext", pod_security)
    for i, sysctl in enumerate(_list(pod_security.get("sysctls"))):
        name = _dict(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            yield _Finding(f"spec.securityContext.sysctls[{i}].name", f"sysctl {name}", privileged)
    for path, container in _containers(spec):
        security = _dict(container.get("securityContext"))
        yield from _security_context_findings(f"{path}.securityContext", security)
        if security.get("privileged") is True:
            yield _Finding(f"{path}.securityContext.privileged", "privileged: true", privileged)
        if security.get("procMount") not in (None, "Default"):
            yield _Finding(f"{path}.securityContext.procMount", f"procMount: {security['procMount']}", privileged)
        for j, port in enumerate(_list(container.get("ports"))):
            if _dict(port).get("hostPort"):
                yield _Finding(f"{path}.ports[{j}].hostPort", "a hostPort", privileged)
    for key, value in _dict(metadata.get("annotations")).items():
        if str(key).startswith(APPARMOR_ANNOTATION) and value != "runtime/default" and not _is_localhost(value):
            yield _Finding(f"metadata.annotations['{key}']", f"AppArmor profile {value}", privileged)


def _is_localhost(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("localhost/")


def _security_context_findings(path: str, security: Mapping[str, Any]) -> Iterator[_Finding]:
    """The baseline checks a pod's and a container's securityContext share."""
    privileged = Level.PRIVILEGED
    if _dict(security.get("windowsOptions")).get("hostProcess") is True:
        yield _Finding(f"{path}.windowsOptions.hostProcess", "windowsOptions.hostProcess: true", privileged)
    seccomp = _dict(security.get("seccompProfile")).get("type")
    if seccomp is not None and seccomp not in SECCOMP_TYPES:
        yield _Finding(f"{path}.seccompProfile.type", f"seccompProfile type {seccomp}", privileged)
    apparmor = _dict(security.get("appArmorProfile")).get("type")
    if apparmor is not None and apparmor not in APPARMOR_TYPES:
        yield _Finding(f"{path}.appArmorProfile.type", f"appArmorProfile type {apparmor}", privileged)
    selinux = _dict(security.get("seLinuxOptions"))
    if selinux.get("type") not in (None, *SELINUX_TYPES):
        yield _Finding(f"{path}.seLinuxOptions.type", f"seLinuxOptions type {selinux['type']}", privileged)
    for key in ("user", "role"):
        if selinux.get(key):
            yield _Finding(f"{path}.seLinuxOptions.{key}", f"a seLinuxOptions {key}", privileged)
    added = _dict(security.get("capabilities")).get("add")
    for i, capability in enumerate(_list(added)):
        if _capability(capability) not in BASELINE_CAPABILITIES:
            yield _Finding(f"{path}.capabilities.add[{i}]", f"adding capability {capability}", privileged)


def _capability(name: Any) -> str:
    return str(name).removeprefix("CAP_")


def _restricted_findings(spec: Mapping[str, Any]) -> Iterator[_Finding]:
    """Fields the ``restricted`` standard forbids beyond ``baseline`` (``baseline`` allows them)."""
    baseline = Level.BASELINE
    for i, volume in enumerate(_list(spec.get("volumes"))):
        kinds = [key for key in _dict(volume) if key != "name" and key != "hostPath"]
        for kind in kinds:
            if kind not in RESTRICTED_VOLUMES:
                yield _Finding(f"spec.volumes[{i}].{kind}", f"a {kind} volume", baseline)
    pod_security = _dict(spec.get("securityContext"))
    if pod_security.get("runAsUser") == 0:
        yield _Finding("spec.securityContext.runAsUser", "runAsUser: 0 (root)", baseline)
    pod_seccomp = _dict(pod_security.get("seccompProfile")).get("type")
    root_at_pod = False
    for path, container in _containers(spec):
        security = _dict(container.get("securityContext"))
        where = f"{path}.securityContext"
        escalation = security.get("allowPrivilegeEscalation")
        if escalation is not False and not (escalation is None and _escalates_anyway(security)):  # said already
            yield _Finding(f"{where}.allowPrivilegeEscalation", "allowPrivilegeEscalation other than false", baseline)
        if security.get("runAsUser") == 0:
            yield _Finding(f"{where}.runAsUser", "runAsUser: 0 (root)", baseline)
        if security.get("runAsNonRoot") is False:
            yield _Finding(f"{where}.runAsNonRoot", "runAsNonRoot: false", baseline)
        elif security.get("runAsNonRoot") is None and pod_security.get("runAsNonRoot") is not True:
            root_at_pod = True
        if security.get("seccompProfile") is None and pod_seccomp is None:
            yield _Finding(f"{where}.seccompProfile", "no seccompProfile (here or for the pod)", baseline)
        yield from _restricted_capabilities(f"{where}.capabilities", _dict(security.get("capabilities")))
    if root_at_pod:
        yield _Finding("spec.securityContext.runAsNonRoot", "runAsNonRoot other than true", baseline)


def _restricted_capabilities(path: str, capabilities: Mapping[str, Any]) -> Iterator[_Finding]:
    if "ALL" not in {_capability(c) for c in _list(capabilities.get("drop"))}:
        yield _Finding(f"{path}.drop", "capabilities.drop without ALL", Level.BASELINE)
    for i, capability in enumerate(_list(capabilities.get("add"))):
        name = _capability(capability)
        if name in BASELINE_CAPABILITIES and name not in RESTRICTED_CAPABILITIES:
            yield _Finding(f"{path}.add[{i}]", f"adding capability {capability}", Level.BASELINE)


def _identity_violations(spec: Mapping[str, Any], policy: Policy) -> Iterator[Violation]:
    """kubenas's own rules on top of the level: who the pod runs as, and its root filesystem."""
    allowed = {DEFAULT_SERVICE_ACCOUNT, *policy.service_accounts}
    for key in ("serviceAccountName", "serviceAccount"):
        name = spec.get(key)
        if name and name not in allowed:
            message = _forbidden(f"{key} {name!r}", policy, "service_accounts", f"[{name}]")
            yield Violation(f"spec.{key}", message)
    if not policy.service_account_token:
        if spec.get("automountServiceAccountToken") is True:
            message = _forbidden("automountServiceAccountToken: true", policy, "service_account_token", "true")
            yield Violation("spec.automountServiceAccountToken", message)
        for path in _projected_tokens(spec):
            message = _forbidden("a projected service-account token", policy, "service_account_token", "true")
            yield Violation(path, message)
    if not policy.writable_root_filesystem:
        for path, container in _containers(spec):
            if _dict(container.get("securityContext")).get("readOnlyRootFilesystem") is False:
                message = _forbidden("readOnlyRootFilesystem: false", policy, "writable_root_filesystem", "true")
                yield Violation(f"{path}.securityContext.readOnlyRootFilesystem", message)


def _projected_tokens(spec: Mapping[str, Any]) -> Iterator[str]:
    for i, volume in enumerate(_list(spec.get("volumes"))):
        sources = _dict(_dict(volume).get("projected")).get("sources")
        for j, source in enumerate(_list(sources)):
            if _dict(source).get("serviceAccountToken") is not None:
                yield f"spec.volumes[{i}].projected.sources[{j}].serviceAccountToken"


# --------------------------------------------------------------------------- helpers


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, container) of every container: init (sidecars included), regular, ephemeral."""
    for key in CONTAINER_LISTS:
        for i, container in enumerate(_list(spec.get(key))):
            if isinstance(container, dict):
                yield f"spec.{key}[{i}]", container


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
