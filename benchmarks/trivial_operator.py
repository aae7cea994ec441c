"""The floor for apply→first Job: a kopf operator that does nothing but create one Job per Experiment.

Run by ``benchmarks/apply_latency.py`` as ``kopf run --standalone --namespace NS trivial_operator.py``.
"""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes


@kopf.on.startup()
def configure(**_: Any) -> None:  # kopf's default settings: what a first operator looks like
    kubernetes.config.load_kube_config()


@kopf.on.create("kubenas.io", "v1alpha1", "experiments")
def create_job(name: str, namespace: str, body: kopf.Body, **_: Any) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-0", "labels": {"kubenas.io/experiment": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "trial", "image": "busybox", "command": ["true"]}],
                }
            },
        },
    }
    kopf.adopt(job, owner=body)
    kubernetes.client.BatchV1Api().create_namespaced_job(namespace, job)
