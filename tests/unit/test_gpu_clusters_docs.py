"""docs/gpu-clusters.md: its Kueue manifest is valid, and its trial Jobs go to the LocalQueue it defines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from kubenas import api, validation, workload

DOC = Path(__file__).resolve().parents[2] / "docs" / "gpu-clusters.md"


def _documents() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return [d for block in blocks for d in yaml.safe_load_all(block) if isinstance(d, dict) and "kind" in d]


def test_the_kueue_experiment_is_valid_and_its_jobs_wait_in_its_local_queue() -> None:
    docs = _documents()
    queues = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "LocalQueue"}
    cluster_queues = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterQueue"}
    assert all(d["spec"]["clusterQueue"] in cluster_queues for d in docs if d["kind"] == "LocalQueue")
    [raw] = [d for d in docs if d["kind"] == "Experiment" and d["spec"].get("queueName")]
    raw["metadata"]["uid"] = "uid"
    experiment = api.Experiment.model_validate(raw)
    assert validation.experiment_problems(experiment.spec, None) == []
    assert (experiment.metadata.namespace, experiment.spec.queue) in queues
    trial = api.Trial.model_validate(workload.build_trial(experiment, "digits-queued-0", 0, {"lr": 0.001}))
    trial.metadata.uid = "trial-uid"
    job = workload.build_job(experiment, trial)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][api.QUEUE_LABEL] == "gpus"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[workload.CHECKPOINT_DIR_ENV] == "/artifacts/digits-queued/checkpoints/digits-queued-0"
