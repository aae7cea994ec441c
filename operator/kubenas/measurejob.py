"""Trial → the batch/v1 Job that measures its latency again from its saved model: pure functions, no I/O.

The Job is the trial's own Job (same image, volumes, security settings, queue) with the trial
container turned into ``python -m kubenas_trial.measure`` on the trial's artifact directory,
placed and sized by ``spec.costMeasurement`` (``nodeSelector``, ``tolerations``, ``resources``).
It is owned by the Trial and labelled with the experiment but not as a trial pod, so it is
neither observed as the trial nor scraped for its metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubenas import api, workload

LABEL_MEASURES = "kubenas.io/measures"
COMMAND = ["python", "-m", "kubenas_trial.measure"]
MODEL_DIR_ENV = "KUBENAS_MODEL_DIR"
DEADLINE_SECONDS = 600


def job_name(trial_name: str, attempt: int) -> str:
    """``<trial>-measure-<attempt>``: one Job per attempt, so a retry never meets its predecessor."""
    return f"{trial_name}-measure-{attempt}"


def attempt_of(name: str, trial_name: str) -> int | None:
    """The attempt a measurement Job named ``name`` made for ``trial_name`` (None: not such a name)."""
    suffix = name.removeprefix(job_name(trial_name, 0).removesuffix("0"))
    return int(suffix) if suffix != name and suffix.isdigit() else None


def model_dir(trial_job: Mapping[str, Any]) -> str | None:
    """Where the trial wrote its model (its container's KUBENAS_OUTPUT_DIR), or None without an artifact volume."""
    container = trial_job["spec"]["template"]["spec"]["containers"][0]
    return next((e.get("value") for e in container.get("env") or [] if e.get("name") == workload.OUTPUT_DIR_ENV), None)


def can_measure(experiment: api.Experiment) -> bool:
    """Whether trials of ``experiment`` leave a model a measurement Job can read (on an artifact volume)."""
    containers = experiment.spec.trial_template.spec.get("containers") or []
    volume = experiment.spec.export.artifact_volume
    return volume is not None and bool(containers) and any(
        isinstance(m, Mapping) and m.get("name") == volume for m in containers[0].get("volumeMounts") or []
    )


def spec_problem(experiment: api.Experiment) -> str:
    """Why the operator cannot do what ``spec.costMeasurement`` asks, or "" (a cluster-only rule)."""
    if experiment.spec.cost_measurement.remeasure == api.Remeasure.ALWAYS and not can_measure(experiment):
        return ("costMeasurement.remeasure: Always needs each trial's model: set export.artifactVolume to a volume "
                "the trial container mounts")
    return ""


def build_measurement_job(experiment: api.Experiment, trial: api.Trial, attempt: int) -> dict[str, Any]:
    """The Job measuring ``trial``'s latency (attempt ``attempt``), owned by the Trial.

    Raises:
        ValueError: the trial writes no artifacts (no ``export.artifactVolume`` mounted by the trial container).
    """
    job = workload.build_job(experiment, trial)
    directory = model_dir(job)
    if directory is None:
        raise ValueError("the trial's model is not on an artifact volume (export.artifactVolume)")
    policy = experiment.spec.cost_measurement
    labels = {**workload.child_labels(experiment.metadata.name), LABEL_MEASURES: trial.name}

    pod = job["spec"]["template"]
    pod["metadata"]["labels"] = {
        k: v for k, v in (pod["metadata"].get("labels") or {}).items() if k != workload.LABEL_TRIAL
    } | labels
    annotations = pod["metadata"].get("annotations") or {}
    pod["metadata"]["annotations"] = {k: v for k, v in annotations.items() if not k.startswith("prometheus.io/")}
    pod_spec = pod["spec"]
    pod_spec.pop("subdomain", None)
    if policy.node_selector:
        pod_spec["nodeSelector"] = {**(pod_spec.get("nodeSelector") or {}), **policy.node_selector}
    if policy.tolerations:
        pod_spec["tolerations"] = [*(pod_spec.get("tolerations") or []), *policy.tolerations]

    container = pod_spec["containers"][0]
    container["command"] = list(COMMAND)
    container["args"] = []
    container.pop("ports", None)
    env = [e for e in container.get("env") or [] if e.get("name") != MODEL_DIR_ENV]
    container["env"] = [*env, {"name": MODEL_DIR_ENV, "value": directory}]
    if policy.resources is not None:
        container["resources"] = dict(policy.resources)

    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": DEADLINE_SECONDS,
        "template": pod,
    }
    # The trial Job's other labels (e.g. its queue's) stay: a queue admits the measurement like any workload.
    job_labels = {k: v for k, v in job["metadata"]["labels"].items() if k != workload.LABEL_TRIAL} | labels
    if job["spec"].get("suspend"):
        spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(trial.name, attempt),
            "namespace": experiment.metadata.namespace,
            "labels": job_labels,
            "ownerReferences": job["metadata"]["ownerReferences"],
        },
        "spec": spec,
    }
