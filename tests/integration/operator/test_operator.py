"""The real kopf operator against the API emulator, with the test playing kubelet."""

from __future__ import annotations

import json
from typing import Any

from conftest import Operator, eventually
from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome, metrics_result
from kubenas import api

EXP = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NAMESPACE}/experiments"
TRIALS = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NAMESPACE}/trials"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
EVENTS = f"/api/v1/namespaces/{NAMESPACE}/events"


def experiment(name: str = "exp", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": [{"name": "width", "type": "int", "min": 1, "max": 50}],
        "algorithm": {"seed": 1},
        "budget": {"maxTrials": 4, "parallelTrials": 2, "maxFailedTrials": 3},
        "trialTemplate": {"spec": {"containers": [{"name": "trial", "image": "kubenas/trial:test"}]}},
    }
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": api.API_VERSION,
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": body,
    }


async def by_width(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
    return metrics_result(accuracy=params["width"] / 100)


async def status_of(k: Kubelet, name: str = "exp") -> dict[str, Any]:
    return (await k.request("GET", f"{EXP}/{name}")).get("status") or {}


async def finished(k: Kubelet, name: str = "exp") -> dict[str, Any] | None:
    status = await status_of(k, name)
    return status if status.get("phase") in ("Succeeded", "Failed", "Stopped") else None


async def test_experiment_runs_to_succeeded_with_best_and_export(cluster: Emulator, operator: Operator) -> None:
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        await k.request("POST", EXP, experiment())
        status = await eventually(lambda: finished(k), timeout=30)
        trials = await k.items(TRIALS)
        assert status["phase"] == "Succeeded", status
        assert status["reason"] == "BudgetSpent"
        assert len(trials) == 4
        best = max(trials, key=lambda t: t["status"]["metrics"]["accuracy"])
        assert status["bestTrial"]["name"] == best["metadata"]["name"]
        assert status["trials"]["succeeded"] == 4
        cm = await k.request("GET", f"{CONFIGMAPS}/exp-best")
        assert cm["data"]["trial"] == best["metadata"]["name"]
        assert json.loads(cm["data"]["parameters.json"]) == best["spec"]["parameters"]
        assert cm["metadata"]["ownerReferences"][0]["kind"] == "Experiment"
        assert status["export"]["configMap"] == "exp-best"
        reasons = [e["reason"] for e in await k.items(EVENTS)]
        assert reasons.count("TrialCreated") == 4 and reasons.count("TrialSucceeded") == 4
        assert "ExperimentSucceeded" in reasons
        exp = await k.request("GET", f"{EXP}/exp")
        assert not exp["metadata"].get("finalizers")
