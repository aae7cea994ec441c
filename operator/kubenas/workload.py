"""Trial → batch/v1 Job manifest: pure functions, no I/O.

Parameters reach the trial three ways (docs/reference.md): JSON in env ``KUBENAS_PARAMETERS``,
a downward-API file projected from a pod annotation, and ``${parameters.NAME}`` inside
individual ``command``/``args`` items (never through a shell string). The kubelet expands
``$(VAR)`` and ``$$`` in env values, command and args, so the Job builder escapes every ``$``
of a value it puts there (:func:`kubelet_escape`): each route delivers the same bytes.
The local runner runs no kubelet and uses the same functions without that step.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubenas import api, podpolicy
from kubenas.api.oneshot import SUPERNET as ONE_SHOT_SUPERNET

LABEL_EXPERIMENT = "kubenas.io/experiment"
LABEL_TRIAL = "kubenas.io/trial"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubenas"
ANNOTATION_PARAMETERS = "kubenas.io/parameters"

PARAMETERS_VOLUME = "kubenas-parameters"
PARAMETERS_DIR = "/etc/kubenas"
PARAMETERS_FILE = "parameters.json"
TERMINATION_LOG = "/dev/termination-log"
# The trial contract's environment (docs/trial.md) that kubenas sets besides the parameters.
OUTPUT_DIR_ENV = "KUBENAS_OUTPUT_DIR"
TERMINATION_LOG_ENV = "KUBENAS_TERMINATION_LOG"
PARAMETERS_FILE_ENV = "KUBENAS_PARAMETERS_FILE"
METRICS_PORT_ENV = "KUBENAS_METRICS_PORT"
METRICS_PORT_NAME = "metrics"
# Where a trial saves what it needs to resume after its pod is replaced (docs/trial.md).
CHECKPOINT_DIR_ENV = "KUBENAS_CHECKPOINT_DIR"
CHECKPOINTS = "checkpoints"  # <artifact volume>/<experiment>/checkpoints/<trial>
# A pod that ends because of a disruption (eviction, preemption, node shutdown, taint manager) is
# replaced without counting against the Job's backoff limit: the trial resumes from its checkpoint.
DISRUPTION_TARGET = "DisruptionTarget"
IGNORE_DISRUPTIONS = {"action": "Ignore", "onPodConditions": [{"type": DISRUPTION_TARGET, "status": "True"}]}

# Multi-pod trials (trialTemplate.replicas > 1): what torch.distributed / torchrun read.
MASTER_PORT = 29500
RENDEZVOUS_PORT_NAME = "rendezvous"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
GPU_RESOURCE = "nvidia.com/gpu"

_PLACEHOLDER = re.compile(r"\$\{parameters\.([A-Za-z_][A-Za-z0-9_.-]*)\}")


def format_value(value: api.ParameterValue) -> str:
    """A parameter value as a command-line string (booleans as JSON ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def kubelet_escape(text: str) -> str:
    """``text`` as an env value, command or arg item the kubelet turns back into ``text``.

    The kubelet replaces ``$(VAR)`` by VAR's value and ``$$`` by ``$`` there, so each ``$`` doubles.
    """
    return text.replace("$", "$$")


def substitute_args(
    args: Sequence[str],
    parameters: Mapping[str, api.ParameterValue],
    *,
    encode: Callable[[str], str] = str,
) -> list[str]:
    """Replace ``${parameters.NAME}`` inside each arg with the parameter's value, passed through ``encode``.

    Each arg stays one argv item whatever the value contains, so no shell ever parses
    a value. A name that is not in ``parameters`` (an inactive conditional parameter)
    becomes the empty string; ``$${parameters.NAME}`` escapes to the literal text. Only the
    values are encoded (the Job builder passes :func:`kubelet_escape`), never the template's text.
    """

    def one(arg: str) -> str:
        parts = arg.split("$${")
        done = [_PLACEHOLDER.sub(lambda m: encode(_lookup(parameters, m.group(1))), part) for part in parts]
        return "${".join(done)

    return [one(str(arg)) for arg in args]


def _lookup(parameters: Mapping[str, api.ParameterValue], name: str) -> str:
    value = parameters.get(name)
    return "" if value is None else format_value(value)


def parameters_json(parameters: Mapping[str, api.ParameterValue]) -> str:
    """The canonical JSON form of a configuration (sorted keys, compact)."""
    return json.dumps(dict(parameters), sort_keys=True, separators=(",", ":"))


def trial_environment(
    experiment_name: str,
    trial_name: str,
    parameters: Mapping[str, api.ParameterValue],
    metrics_port: int,
) -> dict[str, str]:
    """The trial contract's input environment (docs/trial.md)."""
    return {
        "KUBENAS_PARAMETERS": parameters_json(parameters),
        "KUBENAS_TRIAL": trial_name,
        "KUBENAS_EXPERIMENT": experiment_name,
        METRICS_PORT_ENV: str(metrics_port),
    }


def processes_per_pod(container: Mapping[str, Any]) -> int:
    """NPROC_PER_NODE: the trial container's GPU limit (its request when no limit is written), else 1."""
    resources = container.get("resources") or {}
    for kind in ("limits", "requests"):
        raw = (resources.get(kind) or {}).get(GPU_RESOURCE)
        if raw is not None:
            try:
                return max(1, int(str(raw)))
            except ValueError:
                return 1  # not a whole number: the API server refuses such a GPU quantity anyway
    return 1


def rank_variables(nproc_per_node: int) -> tuple[str, ...]:
    """The variables whose value is the pod's rank (its completion index).

    RANK is the global rank only with one process per pod; with more, torchrun or the trainer
    derives each process's RANK from NODE_RANK.
    """
    return ("NODE_RANK", "RANK") if nproc_per_node == 1 else ("NODE_RANK",)


def distributed_environment(
    nnodes: int, nproc_per_node: int, master_addr: str, master_port: int, node_rank: int | None = None
) -> dict[str, str]:
    """What each pod (or local process) of an ``nnodes``-pod trial gets for ``torch.distributed``.

    With ``node_rank`` None the :func:`rank_variables` are left out (the Job builder gives them
    from the completion index); the local runner passes each process's rank.
    """
    env = {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "NNODES": str(nnodes),
        "NPROC_PER_NODE": str(nproc_per_node),
        "WORLD_SIZE": str(nnodes * nproc_per_node),
    }
    if node_rank is not None:
        env.update(dict.fromkeys(rank_variables(nproc_per_node), str(node_rank)))
    return env


def service_name(trial_name: str) -> str:
    """The headless Service of a multi-pod trial (a DNS-1035 label: it must start with a letter)."""
    return trial_name if trial_name[:1].isalpha() else f"t{trial_name}"


def master_address(trial_name: str, namespace: str | None) -> str:
    """Pod 0's stable DNS name: Indexed Job pods are named ``<job>-<index>`` within the Service's subdomain."""
    return f"{trial_name}-0.{service_name(trial_name)}.{namespace or 'default'}.svc"


def child_labels(experiment_name: str, trial_name: str | None = None) -> dict[str, str]:
    """Labels every child of an Experiment carries."""
    labels = {LABEL_EXPERIMENT: experiment_name, LABEL_MANAGED_BY: MANAGED_BY}
    if trial_name is not None:
        labels[LABEL_TRIAL] = trial_name
    return labels


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to ``owner`` (a raw object with apiVersion, kind and metadata).

    Raises:
        ValueError: the owner has no uid yet (it was never stored by the API server).
    """
    meta = owner.get("metadata") or {}
    if not meta.get("uid"):
        raise ValueError(f"{owner.get('kind')} {meta.get('name')!r} has no uid: it must be created first")
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
    }


def trial_parameters(
    parameters: Mapping[str, api.ParameterValue], supernet: str | None, output_dir: Callable[[str], str]
) -> dict[str, api.ParameterValue]:
    """A new trial's parameters; a one-shot search trial's also name the directory of its supernet.

    ``supernet`` is the trial that trained the supernet (``plan.CreateTrial.supernet``), or None;
    ``output_dir`` gives a trial's output directory as the new trial sees it (a backend's rule).
    """
    if supernet is None:
        return dict(parameters)
    return {**parameters, ONE_SHOT_SUPERNET: output_dir(supernet)}


def build_trial(experiment: api.Experiment, name: str, index: int, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The Trial object for a configuration, owned by its Experiment."""
    exp_meta = experiment.metadata
    owner = {
        "apiVersion": api.API_VERSION,
        "kind": "Experiment",
        "metadata": {"name": exp_meta.name, "uid": exp_meta.uid},
    }
    return {
        "apiVersion": api.API_VERSION,
        "kind": "Trial",
        "metadata": {
            "name": name,
            "namespace": exp_meta.namespace,
            "labels": child_labels(exp_meta.name, name),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": api.TrialSpec(experiment=exp_meta.name, index=index, parameters=dict(parameters)).to_wire(),
    }


def build_job(experiment: api.Experiment, trial: api.Trial) -> dict[str, Any]:
    """The batch/v1 Job that runs ``trial``, owned by the Trial.

    The first container of the template is the trial; user settings win over the
    secure defaults (merged field by field, :func:`podpolicy.apply_defaults`; whether the
    template may set them is the policy's check, not the builder's), but the ``KUBENAS_*``
    contract variables always win over the user's.
    """
    spec = experiment.spec
    template = spec.trial_template
    exp_name = experiment.metadata.name
    labels = child_labels(exp_name, trial.name)
    params = trial.spec.parameters
    port = spec.metrics.port

    pod_meta = copy.deepcopy(template.metadata or {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    annotations = dict(pod_meta.get("annotations") or {})
    annotations[ANNOTATION_PARAMETERS] = parameters_json(params)
    annotations.setdefault("prometheus.io/scrape", "true")
    annotations.setdefault("prometheus.io/port", str(port))
    annotations.setdefault("prometheus.io/path", spec.metrics.path)
    pod_meta["annotations"] = annotations

    pod_spec = copy.deepcopy(template.spec)
    pod_spec["restartPolicy"] = "Never"
    pod_spec["volumes"] = [v for v in pod_spec.get("volumes") or [] if v.get("name") != PARAMETERS_VOLUME]
    pod_spec["volumes"].append(_parameters_volume())
    containers = pod_spec.get("containers") or []
    if not containers:
        raise ValueError("trialTemplate.spec.containers is empty: the first container is the trial")
    env = trial_environment(exp_name, trial.name, params, port)
    experiment_dir = _experiment_dir(containers[0], experiment)
    if experiment_dir is not None:
        env[OUTPUT_DIR_ENV] = f"{experiment_dir}/{trial.name}"
        env[CHECKPOINT_DIR_ENV] = checkpoint_dir(experiment_dir, trial.name)
    replicas = template.replicas
    from_index: dict[str, str] = {}
    if replicas > 1:
        nproc = processes_per_pod(containers[0])
        address = master_address(trial.name, experiment.metadata.namespace)
        env.update(distributed_environment(replicas, nproc, address, MASTER_PORT))
        from_index = dict.fromkeys(rank_variables(nproc), f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']")
        pod_spec["subdomain"] = service_name(trial.name)
    containers[0] = _trial_container(containers[0], env, params, port, from_index)
    pod_spec["containers"] = containers
    pod_spec = podpolicy.apply_defaults(pod_spec)

    trial_raw = {"apiVersion": api.API_VERSION, "kind": "Trial", "metadata": trial.metadata.model_dump(by_alias=True)}
    job_spec: dict[str, Any] = {
        "backoffLimit": template.backoff_limit,
        "template": {"metadata": pod_meta, "spec": pod_spec},
    }
    if replicas > 1:
        # One pod per rank; a failure of any rank fails the Job at once (no rank is retried alone:
        # its peers' collective calls fail with it).
        del job_spec["backoffLimit"]
        indexed = {"completionMode": "Indexed", "completions": replicas, "parallelism": replicas}
        job_spec.update(indexed, backoffLimitPerIndex=0, maxFailedIndexes=0)
    if template.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = template.active_deadline_seconds
    # First: a disrupted pod must not reach a rule that fails the Job on its exit code.
    policy = job_spec.setdefault("podFailurePolicy", {"rules": []})
    policy["rules"] = [IGNORE_DISRUPTIONS, *policy["rules"]]
    job_labels = dict(labels)
    queue = spec.queue
    if queue is not None:  # Kueue admits the Job by unsuspending it; the operator never does
        job_labels[api.QUEUE_LABEL] = queue
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": trial.name,
            "namespace": experiment.metadata.namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(trial_raw)],
        },
        "spec": job_spec,
    }


def build_service(experiment: api.Experiment, trial: api.Trial) -> dict[str, Any] | None:
    """The headless Service giving a multi-pod trial's pods DNS names, owned by the Trial; None for one pod.

    Addresses are published before the pods are ready, so that rank 0's name resolves as soon as it runs.
    """
    if experiment.spec.trial_template.replicas <= 1:
        return None
    trial_raw = {"apiVersion": api.API_VERSION, "kind": "Trial", "metadata": trial.metadata.model_dump(by_alias=True)}
    labels = child_labels(experiment.metadata.name, trial.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(trial.name),
            "namespace": experiment.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(trial_raw)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": labels,
            "ports": [
                {"name": RENDEZVOUS_PORT_NAME, "port": MASTER_PORT, "targetPort": MASTER_PORT, "protocol": "TCP"}
            ],
        },
    }


def artifact_location(experiment: api.Experiment, trial_name: str) -> str | None:
    """Where a trial's artifacts go: ``<volume>:<path inside it>``, or None without an artifact volume."""
    volume = experiment.spec.export.artifact_volume
    return None if volume is None else f"{volume}:{experiment.metadata.name}/{trial_name}"


def checkpoint_dir(experiment_dir: str, trial_name: str) -> str:
    """A trial's checkpoint directory inside its experiment's directory on the artifact volume."""
    return f"{experiment_dir}/{CHECKPOINTS}/{trial_name}"


def trial_output_dir(experiment: api.Experiment, trial_name: str) -> str | None:
    """A trial's output directory as trial containers see it (on the artifact volume), or None without one."""
    containers = experiment.spec.trial_template.spec.get("containers") or []
    experiment_dir = _experiment_dir(containers[0], experiment) if containers else None
    return None if experiment_dir is None else f"{experiment_dir}/{trial_name}"


def one_shot_problem(experiment: api.Experiment) -> str:
    """Why the operator cannot run ``spec.oneShot`` here, or "" (a cluster-only rule)."""
    if experiment.spec.one_shot is not None and trial_output_dir(experiment, "supernet") is None:
        return ("oneShot needs export.artifactVolume, a volume the trial container mounts: the supernet checkpoint "
                "reaches the search trials there")
    return ""


def _experiment_dir(container: dict[str, Any], experiment: api.Experiment) -> str | None:
    """The experiment's directory on the artifact volume, as the trial container mounts it."""
    volume = experiment.spec.export.artifact_volume
    mount = next((m for m in container.get("volumeMounts") or [] if m.get("name") == volume), None)
    if volume is None or mount is None:
        return None
    return f"{mount['mountPath'].rstrip('/')}/{experiment.metadata.name}"


def _parameters_volume() -> dict[str, Any]:
    field = f"metadata.annotations['{ANNOTATION_PARAMETERS}']"
    return {
        "name": PARAMETERS_VOLUME,
        "downwardAPI": {"items": [{"path": PARAMETERS_FILE, "fieldRef": {"fieldPath": field}}]},
    }


def _trial_container(
    container: dict[str, Any],
    contract_env: dict[str, str],
    params: Mapping[str, Any],
    port: int,
    field_env: Mapping[str, str],
) -> dict[str, Any]:
    """The trial container with the contract: ``contract_env`` values and ``field_env`` (name → pod fieldPath)."""
    c = dict(container)
    for key in ("command", "args"):
        if c.get(key):
            c[key] = substitute_args(c[key], params, encode=kubelet_escape)
    termination_path = c.setdefault("terminationMessagePath", TERMINATION_LOG)
    # A crash before the trial writes its result still leaves the log tail for `kubectl describe`.
    c.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
    ours = {
        **contract_env,
        PARAMETERS_FILE_ENV: f"{PARAMETERS_DIR}/{PARAMETERS_FILE}",
        TERMINATION_LOG_ENV: termination_path,
    }
    user_env = [e for e in c.get("env") or [] if e.get("name") not in ours and e.get("name") not in field_env]
    # Our values are data (parameters, paths), never references to other variables.
    c["env"] = user_env + [{"name": k, "value": kubelet_escape(v)} for k, v in ours.items()]
    c["env"] += [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": f}}} for k, f in field_env.items()]
    ports = list(c.get("ports") or [])
    if not any(p.get("containerPort") == port for p in ports):
        taken = any(p.get("name") == METRICS_PORT_NAME for p in ports)
        name = "kubenas-metrics" if taken else METRICS_PORT_NAME
        ports.append({"name": name, "containerPort": port, "protocol": "TCP"})
    c["ports"] = ports
    mounts = [m for m in c.get("volumeMounts") or [] if m.get("name") != PARAMETERS_VOLUME]
    mounts.append({"name": PARAMETERS_VOLUME, "mountPath": PARAMETERS_DIR, "readOnly": True})
    c["volumeMounts"] = mounts
    return c
