"""A one-shot Experiment on the operator: the operator restarted in each stage, nothing repeated.

The emulated trials answer by mode as the trial image does (docs/trial.md), without training.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from kmock_cluster import Emulator, Kubelet, Outcome, metrics_result
from operator_harness import CONFIGMAPS, EXP, TRIALS, Operator, eventually, experiment, finished, restart_in_each_stage

SUBNETS, BATCH, TOP_K = 8, 3, 2  # the whole space: widths 8..32 x blocks 1..2
SEEN: dict[str, list[dict[str, Any]]] = {}


def inherited(subnet: dict[str, Any]) -> float:
    return int(subnet["width"]) / 100 + int(subnet["blocks"]) / 1000


async def by_mode(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
    mode = params["mode"]
    SEEN.setdefault(mode, []).append(params)
    if mode == "supernet-train":
        await asyncio.sleep(1.5)
        return metrics_result(accuracy=0.9, accuracy_smallest=0.8)
    await asyncio.sleep(random.uniform(0.5, 1.0))
    if mode == "supernet-eval":
        subnets = json.loads(params["subnets"])
        result: dict[str, float] = {"subnets": len(subnets)}
        for i, subnet in enumerate(subnets):
            result |= {f"{i}.accuracy": inherited(subnet), f"{i}.params": 1000.0, f"{i}.latency_noisy": 0.0}
        return metrics_result(**result)
    return metrics_result(accuracy=inherited(params) - 0.005, params=1000.0)


def one_shot_experiment() -> dict[str, Any]:
    body = experiment(
        parameters=[
            {"name": "width", "type": "categorical", "values": [8, 16, 24, 32]},
            {"name": "blocks", "type": "int", "min": 1, "max": 2},
        ],
        budget={"maxTrials": SUBNETS, "parallelTrials": 2, "maxFailedTrials": 0},
        oneShot={"batchSize": BATCH, "topK": TOP_K, "supernet": {"epochs": 3}, "retrain": {"epochs": 2}},
        export={"artifactVolume": "artifacts"},
    )
    template = body["spec"]["trialTemplate"]["spec"]
    template["containers"][0]["volumeMounts"] = [{"name": "artifacts", "mountPath": "/artifacts"}]
    template["volumes"] = [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "kubenas-artifacts"}}]
    return body


async def test_restarted_in_every_stage_the_one_shot_experiment_completes_with_nothing_repeated(
    cluster: Emulator, operator: Operator
) -> None:
    random.seed(3)
    SEEN.clear()
    await operator.start()
    async with Kubelet(str(cluster.url), by_mode) as k:
        await k.request("POST", EXP, one_shot_experiment())
        await restart_in_each_stage(k, operator, ("SupernetTraining", "SubnetSearch", "Retraining"))
        status = await eventually(lambda: finished(k), timeout=90)
        assert status["phase"] == "Succeeded", status
        assert status["reason"] == "BudgetSpent" and status["stage"] == "Retraining"

        trials = sorted(await k.items(TRIALS), key=lambda t: int(t["spec"]["index"]))
        modes = [t["spec"]["parameters"]["mode"] for t in trials]
        assert modes == ["supernet-train"] + ["supernet-eval"] * 3 + ["train"] * TOP_K, modes
        assert status["progress"] == f"{len(trials)}/{len(trials)}"
        # Each trial's Job was created once, and each ran once: nothing repeated across the restarts.
        jobs = [name for action, name in cluster.writes if action == "CREATE" and name.startswith("jobs/")]
        assert sorted(jobs) == sorted(f"jobs/{t['metadata']['name']}" for t in trials)
        assert [len(SEEN[m]) for m in ("supernet-train", "supernet-eval", "train")] == [1, 3, TOP_K]

        # The search evaluated every subnet once, from the supernet trial's directory on the artifact volume.
        subnets = [json.dumps(s, sort_keys=True) for p in SEEN["supernet-eval"] for s in json.loads(p["subnets"])]
        assert len(subnets) == len(set(subnets)) == SUBNETS
        assert {p["supernet"] for p in SEEN["supernet-eval"]} == {"/artifacts/exp/exp-0"}
        # The best two by inherited accuracy were retrained; the best retrained one is exported.
        retrained = sorted((p["width"], p["blocks"]) for p in SEEN["train"])
        assert retrained == [(32, 1), (32, 2)]
        best = trials[-TOP_K:][[t["spec"]["parameters"]["blocks"] for t in trials[-TOP_K:]].index(2)]
        assert status["bestTrial"]["name"] == best["metadata"]["name"]
        exported = await k.request("GET", f"{CONFIGMAPS}/exp-best")
        assert exported["data"]["trial"] == best["metadata"]["name"]


async def test_without_an_artifact_volume_a_one_shot_experiment_is_a_spec_problem(
    cluster: Emulator, operator: Operator
) -> None:
    body = one_shot_experiment()
    del body["spec"]["export"]
    await operator.start()
    async with Kubelet(str(cluster.url), by_mode) as k:
        await k.request("POST", EXP, body)
        status = await eventually(lambda: finished(k), timeout=60)
        assert status["reason"] == "InvalidSpec" and "export.artifactVolume" in status["message"]
        assert not await k.items(TRIALS)
