"""The kstatus conditions (Reconciling, Ready, Stalled) the operator writes, as Flux and kubectl wait read them."""

from __future__ import annotations

import asyncio
from typing import Any

from kmock_cluster import Emulator, Kubelet, Outcome, metrics_result
from operator_harness import EXP, Operator, eventually, experiment, finished


def kstatus(obj: dict[str, Any]) -> str:
    """What cli-utils' kstatus (Flux ``wait: true``, ``kubectl apply --wait``) computes for a custom resource.

    Its generic rules: a status behind the spec's generation is InProgress; then, in the
    order of the conditions, ``Reconciling=True`` is InProgress and ``Stalled=True`` Failed;
    anything else is Current.
    """
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is not None and observed != obj["metadata"].get("generation"):
        return "InProgress"
    for condition in status.get("conditions") or []:
        if condition["type"] == "Reconciling" and condition["status"] == "True":
            return "InProgress"
        if condition["type"] == "Stalled" and condition["status"] == "True":
            return "Failed"
    return "Current"


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """(status, reason) by condition type."""
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions") or []}


async def test_kstatus_conditions_through_an_experiments_life(cluster: Emulator, operator: Operator) -> None:
    gate = asyncio.Event()

    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        await gate.wait()
        return metrics_result(accuracy=params["width"] / 100)

    await operator.start()
    async with Kubelet(str(cluster.url), behaviour) as k:

        async def get(name: str = "exp") -> dict[str, Any]:
            return await k.request("GET", f"{EXP}/{name}")

        async def running() -> dict[str, Any] | None:
            obj = await get()
            return obj if conditions(obj).get("Running", ("",))[0] == "True" else None

        await k.request("POST", EXP, experiment(budget={"maxTrials": 4, "parallelTrials": 2}))
        obj = await eventually(running)
        assert kstatus(obj) == "InProgress"
        assert conditions(obj)["Reconciling"] == ("True", "TrialsRunning")
        assert conditions(obj)["Ready"] == ("False", "TrialsRunning")
        assert conditions(obj)["Stalled"] == ("False", "NotStalled")
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1

        # A spec change while trial creates keep failing: the operator's own Synced condition
        # fits beside the planner's eight, and observedGeneration follows the spec once acted on.
        cluster.fail_creates["trials"] = 3
        await k.request("PATCH", f"{EXP}/exp", {"spec": {"budget": {"parallelTrials": 3}}}, patch=True)

        async def synced(value: str) -> dict[str, Any] | None:
            obj = await get()
            return obj if conditions(obj).get("Synced", ("",))[0] == value else None

        obj = await eventually(lambda: synced("False"), timeout=15)
        assert kstatus(obj) == "InProgress"
        obj = await eventually(lambda: synced("True"), timeout=15)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
        assert len(obj["status"]["conditions"]) == 9
        assert all(c["observedGeneration"] == 2 for c in obj["status"]["conditions"] if c["type"] != "Synced")
        assert kstatus(obj) == "InProgress"

        gate.set()
        status = await eventually(lambda: finished(k), timeout=30)
        obj = await get()
        assert status["phase"] == "Succeeded", status
        assert kstatus(obj) == "Current"
        assert conditions(obj)["Ready"] == ("True", "BudgetSpent")
        assert conditions(obj)["Reconciling"] == ("False", "BudgetSpent")
        assert conditions(obj)["Stalled"] == ("False", "NotStalled")
        assert conditions(obj)["Synced"] == ("True", "Reconciled")


async def test_an_invalid_spec_is_stalled(cluster: Emulator, operator: Operator) -> None:
    await operator.start()
    async with Kubelet(str(cluster.url), lambda p, j: asyncio.sleep(0, metrics_result(accuracy=0.5))) as k:
        await k.request("POST", EXP, experiment("bad", algorithm={"name": "NoSuchOptimizer"}))
        await eventually(lambda: finished(k, "bad"))
        obj = await k.request("GET", f"{EXP}/bad")
        assert kstatus(obj) == "Failed"
        assert conditions(obj)["Stalled"] == ("True", "InvalidSpec")
        assert conditions(obj)["Ready"] == ("False", "InvalidSpec")
        assert conditions(obj)["Reconciling"] == ("False", "InvalidSpec")
        stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
        assert "NoSuchOptimizer" in stalled["message"]
