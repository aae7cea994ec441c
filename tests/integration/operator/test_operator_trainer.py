"""The real trainer (``python -m kubenas_trial``) as the trial pods' process, metrics scraped directly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kmock_cluster import Emulator, Kubelet, Outcome, run_trainer
from loopback import free_port
from operator_harness import CONFIGMAPS, EXP, TRIALS, Operator, eventually, experiment, finished, index_of


def trials_by_index(trials: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {t["spec"]["index"]: t for t in trials}


@pytest.mark.slow
async def test_real_trainer_runs_as_the_pod_process(cluster: Emulator, operator: Operator) -> None:
    port = free_port()

    async def trainer(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        # Both trials run at once on this one host: only the first may own the metrics port.
        env = {"KUBENAS_METRICS_ADDRESS": "127.0.0.1"} | ({} if index_of(job) == 0 else {"KUBENAS_METRICS_PORT": "0"})
        return await run_trainer(job, env)

    body = experiment(
        parameters=[
            {"name": "hidden_units", "type": "int", "min": 4, "max": 32, "scale": "log"},
            {"name": "lr", "type": "float", "min": 0.005, "max": 0.1, "scale": "log"},
        ],
        budget={"maxTrials": 2, "parallelTrials": 2, "maxFailedTrials": 0},
        metrics={"port": port, "source": "direct"},
    )
    body["spec"]["objective"]["additionalMetrics"] = ["params"]
    body["spec"]["trialTemplate"]["spec"]["containers"][0].update(
        command=["python", "-m", "kubenas_trial"],
        args=[
            "--param=dataset=iris",
            "--param=model=mlp",
            "--param=epochs=300",  # long enough (a few seconds) for the 0.2 s metric polls to catch it running
            "--param=batch_size=16",
            "--param=hidden_units=${parameters.hidden_units}",
            "--param=lr=${parameters.lr}",
        ],
    )
    await operator.start()
    async with Kubelet(str(cluster.url), trainer, running_first=True) as k:
        await k.request("POST", EXP, body)
        # 46 s on a quiet 2-core machine; over 150 s when other jobs share it.
        status = await eventually(lambda: finished(k), timeout=300)
        assert status["phase"] == "Succeeded", status
        trials = await k.items(TRIALS)
        assert len(trials) == 2
        for t in trials:
            assert t["status"]["phase"] == "Succeeded", t["status"]
            assert 0.0 <= t["status"]["metrics"]["accuracy"] <= 1.0
            assert t["status"]["metrics"]["params"] > 0
        assert trials_by_index(trials)[0]["status"].get("curve"), "no intermediate metric was scraped"
        cm = await k.request("GET", f"{CONFIGMAPS}/exp-best")
        best = next(t for t in trials if t["metadata"]["name"] == status["bestTrial"]["name"])
        assert json.loads(cm["data"]["parameters.json"]) == best["spec"]["parameters"]
