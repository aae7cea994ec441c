"""docs/gpu-clusters.md: its manifests are valid: the multi-node trial's Indexed Job and Service, the Kueue
LocalQueue its trial Jobs go to."""

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


def test_the_multi_node_experiment_builds_an_indexed_job_of_two_pods_with_two_processes_each() -> None:
    [raw] = [d for d in _documents() if d["kind"] == "Experiment" and d["spec"]["trialTemplate"].get("replicas")]
    raw["metadata"]["uid"] = "uid"
    experiment = api.Experiment.model_validate(raw)
    assert validation.experiment_problems(experiment.spec, None) == []
    trial = api.Trial.model_validate(workload.build_trial(experiment, "digits-ddp-0", 0, {"lr": 0.001}))
    trial.metadata.uid = "trial-uid"
    job, service = workload.build_job(experiment, trial), workload.build_service(experiment, trial)
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("2", "2", "4")  # as the page says
    assert env["MASTER_ADDR"] == "digits-ddp-0-0.digits-ddp-0.nas.svc" and "RANK" not in env
    assert service is not None and service["metadata"]["name"] == job["spec"]["template"]["spec"]["subdomain"]


def test_the_peer_network_policy_admits_trial_pods() -> None:
    [policy] = [d for d in _documents() if d["kind"] == "NetworkPolicy"]
    selector = policy["spec"]["podSelector"]["matchExpressions"]
    assert selector == [{"key": workload.LABEL_TRIAL, "operator": "Exists"}]
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"] == selector
