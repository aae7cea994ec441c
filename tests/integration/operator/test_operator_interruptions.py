"""Interrupted trials against the real operator: Kueue's suspend and admit cycle, and a disrupted pod.

The emulator has no Kueue and no Job controller: the test admits and preempts Jobs as Kueue does
(``spec.suspend``), and the fake kubelet plays the Job controller (no pods for a suspended Job,
a replacement pod for one its ``podFailurePolicy`` ignores).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome, metrics_result, run_trainer
from kubenas import api, workload
from loopback import free_port
from operator_harness import (
    EVENTS,
    EXP,
    JOBS,
    TRIALS,
    Operator,
    eventually,
    experiment,
    finished,
    status_of,
)

ROOT = Path(__file__).resolve().parents[3]
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
EPOCHS = 10  # digits: about a second on a quiet machine, long enough for the 0.2 s metric polls


def printer_column(kind: str, name: str, obj: dict[str, Any]) -> Any:
    """What ``kubectl get`` shows in column ``name`` of the generated CRD for ``obj``."""
    crd = yaml.safe_load((ROOT / "crds" / f"{kind}.{api.GROUP}.yaml").read_text())
    path = next(c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"] if c["name"] == name)
    value: Any = obj
    for key in path.strip(".").split("."):
        value = (value or {}).get(key)
    return value


async def phases(k: Kubelet) -> dict[str, str]:
    return {t["metadata"]["name"]: (t.get("status") or {}).get("phase", "") for t in await k.items(TRIALS)}


async def suspend(k: Kubelet, job: str, value: bool) -> None:
    """What Kueue does: admit a Job (``suspend: false``) or preempt it (``suspend: true``)."""
    await k.request("PATCH", f"{JOBS}/{job}", {"spec": {"suspend": value}}, patch=True)


async def test_kueue_admits_queued_trials_and_a_preempted_trial_is_queued_again(
    cluster: Emulator, operator: Operator
) -> None:
    release = {name: asyncio.Event() for name in ("exp-0", "exp-1", "exp-2")}

    async def held(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        await release[job["metadata"]["name"]].wait()
        return metrics_result(accuracy=params["width"] / 100)

    body = experiment(budget={"maxTrials": 3, "parallelTrials": 2, "maxFailedTrials": 0}, queueName="gpus")
    await operator.start()
    async with Kubelet(str(cluster.url), held, running_first=True) as k:
        await k.request("POST", EXP, body)
        jobs = await eventually(lambda: _at_least(k.items(JOBS), 2))
        for job in jobs:
            assert job["metadata"]["labels"][api.QUEUE_LABEL] == "gpus"
            assert job["spec"]["suspend"] is True
        await eventually(lambda: _queued(k, 2))
        await asyncio.sleep(2)  # several reconciles, longer than the 0.5 s unschedulable limit
        assert await phases(k) == {"exp-0": "Queued", "exp-1": "Queued"}  # parallelTrials holds; not Unschedulable
        assert all(j["spec"]["suspend"] for j in await k.items(JOBS))  # the operator never admits a Job
        assert await k.items(PODS) == []
        exp_obj = await k.request("GET", f"{EXP}/exp")
        assert printer_column("experiments", "Queued", exp_obj) == 2

        await suspend(k, "exp-0", False)  # Kueue admits exp-0
        await eventually(lambda: _phase_is(k, "exp-0", "Running"))
        assert (await status_of(k))["trials"]["queued"] == 1

        await suspend(k, "exp-0", True)  # Kueue preempts it: its pod is deleted
        await eventually(lambda: _phase_is(k, "exp-0", "Queued"))
        trial = await k.request("GET", f"{TRIALS}/exp-0")
        assert trial["status"]["requeues"] == 1 and trial["status"].get("startTime")
        await eventually(lambda: _no_pods(k, "exp-0"))
        assert (await status_of(k))["trials"]["failed"] == 0

        await suspend(k, "exp-0", False)  # admitted again: it runs to the end
        release["exp-0"].set()
        await eventually(lambda: _phase_is(k, "exp-0", "Succeeded"))
        await eventually(lambda: _phase_is(k, "exp-2", "Queued"))  # the freed slot is filled, queued
        for name in ("exp-1", "exp-2"):
            await suspend(k, name, False)
            release[name].set()
        status = await eventually(lambda: finished(k), timeout=30)
        assert status["phase"] == "Succeeded", status
        assert status["trials"]["failed"] == 0 and status["trials"]["succeeded"] == 3
        assert (await k.request("GET", f"{TRIALS}/exp-0"))["status"]["requeues"] == 1
        events = [e for e in await k.items(EVENTS) if e["reason"] == "TrialRequeued"]
        assert len(events) == 1 and "exp-0" in events[0]["message"]


@pytest.mark.slow
async def test_a_disrupted_pod_resumes_from_its_checkpoint_with_one_curve(
    cluster: Emulator, operator: Operator, tmp_path: Path
) -> None:
    """The real trainer as the pod's process: killed mid-training, its replacement resumes after the saved epoch."""
    volume = tmp_path / "volume"  # the artifact volume, as mounted at /artifacts in every pod of the trial
    logs: list[Path] = []

    async def trainer(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value", "") for e in container["env"]}
        mounted = {
            name: env[name].replace("/artifacts/", f"{volume}/", 1)
            for name in (workload.CHECKPOINT_DIR_ENV, "KUBENAS_OUTPUT_DIR")
        }
        logs.append(tmp_path / f"pod-{len(logs)}.log")
        return await run_trainer(job, {"KUBENAS_METRICS_ADDRESS": "127.0.0.1", **mounted}, timeout=600, log=logs[-1])

    body = experiment(
        parameters=[{"name": "lr", "type": "float", "min": 0.01, "max": 0.05, "scale": "log"}],
        budget={"maxTrials": 1, "parallelTrials": 1, "maxFailedTrials": 0},
        metrics={"port": free_port(), "source": "direct"},
        export={"artifactVolume": "artifacts"},
    )
    body["spec"]["trialTemplate"]["spec"] = {
        "containers": [
            {
                "name": "trial",
                "image": "kubenas/trial:test",
                "command": ["python", "-m", "kubenas_trial"],
                "args": [
                    "--param=dataset=digits",
                    "--param=model=mlp",
                    f"--param=epochs={EPOCHS}",
                    "--param=batch_size=16",
                    "--param=hidden_units=16",
                    "--param=lr=${parameters.lr}",
                ],
                "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}],
            }
        ],
        "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "nas-artifacts"}}],
    }
    await operator.start()
    async with Kubelet(str(cluster.url), trainer, running_first=True) as k:
        await k.request("POST", EXP, body)
        before = await eventually(lambda: _curve_reaches(k, "exp-0", 2), timeout=300)
        await k.disrupt("exp-0-pod", message="Eviction API: evicting")  # the Job ignores it and replaces the pod
        status = await eventually(lambda: finished(k), timeout=600)
        assert status["phase"] == "Succeeded", status
        assert status["trials"]["failed"] == 0
        trial = (await k.request("GET", f"{TRIALS}/exp-0"))["status"]
        assert trial["phase"] == "Succeeded" and trial["disruptions"] == 1, trial
        assert trial["metrics"]["epochs"] == EPOCHS
        # the new pod started after the last epoch the first one saved, not from the start
        [resumed] = re.findall(r"resuming after epoch (\d+)", logs[1].read_text())
        assert int(resumed) >= before[-1] > 1, (resumed, before)
        steps = [p["step"] for p in trial["curve"]]  # as polled: some steps may be missed, none repeated
        assert steps == sorted(set(steps)), steps  # one curve: no step twice, none reset
        assert steps[: len(before)] == before and steps[-1] > int(resumed)  # ... continued by the new pod
        events = [e["message"] for e in await k.items(EVENTS) if e["reason"] == "TrialDisrupted"]
        assert len(events) == 1 and "pod exp-0-pod was disrupted (EvictionByEvictionAPI" in events[0], events
        assert (volume / "exp" / "checkpoints" / "exp-0").is_dir()


async def _at_least(items: Any, n: int) -> list[dict[str, Any]] | None:
    got = await items
    return got if len(got) >= n else None


async def _queued(k: Kubelet, n: int) -> bool:
    return (await status_of(k)).get("trials", {}).get("queued") == n


async def _phase_is(k: Kubelet, name: str, phase: str) -> bool:
    return (await phases(k)).get(name) == phase


async def _no_pods(k: Kubelet, job: str) -> bool:
    return not [p for p in await k.items(PODS) if p["metadata"]["labels"].get("job-name") == job]


async def _curve_reaches(k: Kubelet, name: str, step: int) -> list[int] | None:
    trial = next((t for t in await k.items(TRIALS) if t["metadata"]["name"] == name), {})
    status = trial.get("status") or {}
    steps = [p["step"] for p in status.get("curve") or []]
    return steps if steps and steps[-1] >= step else None

