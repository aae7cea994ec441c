"""Multi-pod trials (trialTemplate.replicas) with the real operator against the API emulator."""

from __future__ import annotations

import asyncio
from typing import Any

from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome, completion_index, metrics_result
from operator_harness import EXP, JOBS, TRIALS, Operator, eventually, experiment, finished, index_of

SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def test_two_pod_trials_record_rank_0s_result_and_a_failing_rank(cluster: Emulator, operator: Operator) -> None:
    """Trial 0: both ranks succeed, rank 0 reports. Trial 1: rank 1 crashes while rank 0 still trains."""
    seen: dict[str, dict[str, Any]] = {}  # what each trial's pods saw while they ran
    kubelet: list[Kubelet] = []

    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        trial, rank = job["metadata"]["name"], completion_index(job)
        if rank == 0:  # the Service exists while the pods run
            seen[trial] = {"job": job, "service": await kubelet[0].request("GET", f"{SERVICES}/{trial}")}
        if index_of(job) == 1:
            if rank == 0:
                await asyncio.sleep(3600)  # still training when its peer fails: the Job stops it
            await asyncio.sleep(0.3)
            return Outcome(exit_code=3, message="Traceback (most recent call last):\nValueError: rank 1 boom")
        return metrics_result(accuracy=params["width"] / 100) if rank == 0 else Outcome(message="")

    await operator.start()
    async with Kubelet(str(cluster.url), behaviour) as k:
        kubelet.append(k)
        body = experiment(
            budget={"maxTrials": 2, "parallelTrials": 2, "maxFailedTrials": 2}, trialTemplate={"replicas": 2}
        )
        body["spec"]["trialTemplate"]["spec"] = {"containers": [{"name": "trial", "image": "kubenas/trial:test"}]}
        await k.request("POST", EXP, body)
        status = await eventually(lambda: finished(k), timeout=60)  # 4 pods; an operator start takes 15 s at load 16
        trials = {t["metadata"]["name"]: t for t in await k.items(TRIALS)}

        ok, failed = trials["exp-0"], trials["exp-1"]
        assert ok["status"]["phase"] == "Succeeded", ok["status"]
        assert ok["status"]["metrics"] == {"accuracy": ok["spec"]["parameters"]["width"] / 100}  # rank 0's result
        assert failed["status"]["phase"] == "Failed", failed["status"]
        assert failed["status"]["reason"] == "ExitCode"
        assert failed["status"]["message"] == "rank 1: exit code 3: ValueError: rank 1 boom"
        assert status["trials"]["succeeded"] == 1 and status["trials"]["failed"] == 1

        # The Job: Indexed, one pod per rank, any failing rank fails it; pods in the Service's subdomain.
        job = seen["exp-0"]["job"]
        spec = job["spec"]
        assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
        assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (0, 0)
        assert spec["template"]["spec"]["subdomain"] == "exp-0"
        env = env_of(job)
        assert env["MASTER_ADDR"] == f"exp-0-0.exp-0.{NAMESPACE}.svc"
        assert (env["MASTER_PORT"], env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("29500", "2", "1", "2")
        index = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
        assert env["NODE_RANK"] == env["RANK"] == index

        # The Service: headless, selecting the trial's pods, owned by the Trial, gone once the trial ended.
        service = seen["exp-0"]["service"]
        assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
        assert service["spec"]["selector"]["kubenas.io/trial"] == "exp-0"
        assert service["spec"]["ports"][0]["port"] == 29500
        owner = service["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Trial", "exp-0", ok["metadata"]["uid"])

        async def cleaned_up() -> bool:
            return not await k.items(SERVICES) and not await k.items(JOBS)

        await eventually(cleaned_up, timeout=10)
