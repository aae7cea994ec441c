"""A gradient-based cell search on the operator: the operator restarted in each stage, nothing repeated.

The emulated trials answer by mode as the trial image does (docs/trial.md), without training.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from kmock_cluster import Emulator, Kubelet, Outcome, metrics_result
from operator_harness import CONFIGMAPS, EXP, TRIALS, Operator, eventually, experiment, finished, restart_in_each_stage

SEARCHES, TOP_K = 3, 2
SEEN: dict[str, list[dict[str, Any]]] = {}
CONV, SKIP = 3, 1  # operation indices of nor_conv_3x3 and skip_connect


def derived(params: dict[str, Any]) -> list[int]:
    """The cell a search derives: one per seed parity, so two distinct cells in all."""
    return [CONV] * 6 if int(params["seed"]) % 2 == 0 else [CONV, SKIP] * 3


async def by_mode(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
    SEEN.setdefault(params["mode"], []).append(params)
    await asyncio.sleep(random.uniform(0.8, 1.5))
    if params["mode"] == "gradient-search":
        cells = {f"cell_op_{edge}": op for edge, op in enumerate(derived(params))}
        return metrics_result(accuracy=0.3 + int(params["seed"]) / 1000, **cells)
    return metrics_result(accuracy=0.95 if "skip" not in params["cell"] else 0.9, params=1000.0)


def gradient_experiment() -> dict[str, Any]:
    return experiment(
        parameters=[{"name": "seed", "type": "int", "min": 0, "max": 99}],
        budget={"maxTrials": SEARCHES, "parallelTrials": 2, "maxFailedTrials": 0},
        gradientSearch={"search": {"epochs": 4, "search_method": "gdas"}, "topK": TOP_K, "retrain": {"epochs": 2}},
    )


async def test_restarted_in_every_stage_the_gradient_search_completes_with_nothing_repeated(
    cluster: Emulator, operator: Operator
) -> None:
    random.seed(5)
    SEEN.clear()
    await operator.start()
    async with Kubelet(str(cluster.url), by_mode) as k:
        await k.request("POST", EXP, gradient_experiment())
        await restart_in_each_stage(k, operator, ("CellSearch", "Retraining"))
        status = await eventually(lambda: finished(k), timeout=90)
        assert status["phase"] == "Succeeded", status
        assert status["reason"] == "BudgetSpent" and status["stage"] == "Retraining"

        trials = sorted(await k.items(TRIALS), key=lambda t: int(t["spec"]["index"]))
        modes = [t["spec"]["parameters"]["mode"] for t in trials]
        assert modes == ["gradient-search"] * SEARCHES + ["train"] * len(SEEN["train"]), modes
        assert status["progress"] == f"{len(trials)}/{len(trials)}"
        # Each trial's Job was created once, and each ran once: nothing repeated across the restarts.
        jobs = [name for action, name in cluster.writes if action == "CREATE" and name.startswith("jobs/")]
        assert sorted(jobs) == sorted(f"jobs/{t['metadata']['name']}" for t in trials)
        assert len(SEEN["gradient-search"]) == SEARCHES

        # The retrained cells are the distinct cells of the most accurate searches, best first.
        ranked = sorted(SEEN["gradient-search"], key=lambda p: -int(p["seed"]))
        expected = list(dict.fromkeys(tuple(derived(p)) for p in ranked))[:TOP_K]
        conv = "nor_conv_3x3"
        got = [tuple(CONV if op.startswith(conv) else SKIP for op in p["cell"].strip("|").replace("+", "|").split("|")
                     if op) for p in SEEN["train"]]
        assert got == expected and len(got) == len(SEEN["train"])
        assert all(p["epochs"] == 2 and "search_method" not in p for p in SEEN["train"])
        exported = await k.request("GET", f"{CONFIGMAPS}/exp-best")
        assert exported["data"]["trial"] == status["bestTrial"]["name"]
        assert exported["data"]["trial"] in {t["metadata"]["name"] for t in trials[SEARCHES:]}
