"""The operator re-measures a noisy latency in a Job of its own before the trial may enter the Pareto front."""

from __future__ import annotations

from typing import Any

from kmock_cluster import Emulator, Kubelet, Outcome, metrics_result
from operator_harness import JOBS, TRIALS, Operator, eventually, experiment, finished

MEASURES = "kubenas.io/measures"
TARGET = {"node.kubernetes.io/instance-type": "c7g.large"}
MEASURE_RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


PARETO = {"strategy": "pareto", "metrics": [{"name": "accuracy", "goal": "maximize"},
                                           {"name": "latency_ms", "goal": "minimize"}]}


def pareto_experiment(**spec: Any) -> dict[str, Any]:
    body = experiment(**spec)
    body["spec"]["objective"] = PARETO
    return body


def measured_experiment(**spec: Any) -> dict[str, Any]:
    container = {"name": "trial", "image": "kubenas/trial:test",
                 "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}]}
    return pareto_experiment(
        budget={"maxTrials": 3, "parallelTrials": 3},
        trialTemplate={"spec": {"containers": [container],
                                "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "art"}}]}},
        export={"artifactVolume": "artifacts"},
        costMeasurement={"nodeSelector": TARGET, "resources": MEASURE_RESOURCES},
        **spec,
    )


async def test_noisy_latencies_are_measured_again_one_job_at_a_time_before_the_front(
    cluster: Emulator, operator: Operator
) -> None:
    measuring: list[str] = []
    jobs_seen: list[dict[str, Any]] = []
    overlaps: list[int] = []

    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        width = params["width"]
        if MEASURES not in job["metadata"]["labels"]:  # every trial's own measurement was disturbed
            return metrics_result(accuracy=width / 100, latency_ms=100.0, latency_noisy=1)
        jobs_seen.append(job)
        measuring.append(job["metadata"]["name"])
        overlaps.append(len(measuring))
        measuring.remove(job["metadata"]["name"])
        return metrics_result(latency_ms=width / 10, latency_ms_spread=0.03, latency_noisy=0)

    await operator.start()
    async with Kubelet(str(cluster.url), behaviour) as k:
        await k.request("POST", "/apis/kubenas.io/v1alpha1/namespaces/team/experiments", measured_experiment())
        status = await eventually(lambda: finished(k), timeout=30)
        trials = {t["metadata"]["name"]: t["status"] for t in await k.items(TRIALS)}
        assert status["phase"] == "Succeeded", status
        for trial in trials.values():
            assert trial["costMeasurements"] == 1 and trial["noisyMetrics"] == [], trial
            assert trial["metrics"]["latency_ms_trial"] == 100.0 and trial["metrics"]["latency_ms"] < 10
        # accuracy and latency both grow with width: each measured trial is on the front
        assert {m["name"] for m in status["paretoFront"]} == set(trials)
        assert len(jobs_seen) == 3 and max(overlaps) == 1
        assert not [j for j in await k.items(JOBS) if MEASURES in j["metadata"]["labels"]]  # deleted once read

    job = jobs_seen[0]
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    trial = job["metadata"]["labels"][MEASURES]
    assert job["metadata"]["name"] == f"{trial}-measure-1"
    assert container["command"] == ["python", "-m", "kubenas_trial.measure"] and container["args"] == []
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBENAS_MODEL_DIR"] == f"/artifacts/exp/{trial}"
    assert container["resources"] == MEASURE_RESOURCES and pod["spec"]["nodeSelector"] == TARGET
    assert "kubenas.io/trial" not in pod["metadata"]["labels"]  # neither observed nor scraped as the trial
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Trial"


async def test_without_an_artifact_volume_a_noisy_trial_stays_off_the_front(
    cluster: Emulator, operator: Operator
) -> None:
    started: list[dict[str, Any]] = []

    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        started.append(job)
        noisy = params["width"] % 2
        return metrics_result(accuracy=params["width"] / 100, latency_ms=1.0, latency_noisy=noisy)

    body = pareto_experiment(budget={"maxTrials": 4, "parallelTrials": 2})
    await operator.start()
    async with Kubelet(str(cluster.url), behaviour) as k:
        await k.request("POST", "/apis/kubenas.io/v1alpha1/namespaces/team/experiments", body)
        status = await eventually(lambda: finished(k), timeout=30)
        trials = {t["metadata"]["name"]: t["status"] for t in await k.items(TRIALS)}
        noisy = {name for name, t in trials.items() if t["noisyMetrics"]}
        assert not noisy & {m["name"] for m in status.get("paretoFront") or []}
        assert all("costMeasurements" not in t for t in trials.values())
        assert len(started) == 4 and not [j for j in started if MEASURES in j["metadata"]["labels"]]
