"""Crash safety: the operator stopped and restarted at several points of a running experiment."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from kmock_cluster import Emulator, Kubelet, Outcome, metrics_result
from operator_harness import EXP, JOBS, TRIALS, Operator, eventually, experiment, finished

MAX_TRIALS = 9


async def by_width_slowly(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
    await asyncio.sleep(random.uniform(0.05, 0.3))
    return metrics_result(accuracy=params["width"] / 100)


def created(cluster: Emulator, plural: str) -> list[str]:
    return [name for action, name in cluster.writes if action == "CREATE" and name.startswith(f"{plural}/")]


async def assert_exact_outcome(k: Kubelet, cluster: Emulator) -> dict[str, Any]:
    status = await eventually(lambda: finished(k), timeout=60)
    trials = await k.items(TRIALS)
    assert status["phase"] == "Succeeded", status
    assert sorted(int(t["spec"]["index"]) for t in trials) == list(range(MAX_TRIALS))
    for t in trials:  # no lost result: every trial has the metrics its configuration earns
        assert t["status"]["phase"] == "Succeeded", t["status"]
        assert t["status"]["metrics"]["accuracy"] == t["spec"]["parameters"]["width"] / 100
    best = max(trials, key=lambda t: t["status"]["metrics"]["accuracy"])
    assert status["bestTrial"]["name"] == best["metadata"]["name"]
    assert status["trials"]["succeeded"] == MAX_TRIALS
    # No duplicates: every Job name was only ever created for one trial; no orphans left.
    job_posts = created(cluster, "jobs")
    assert set(job_posts) == {f"jobs/exp-{i}" for i in range(MAX_TRIALS)}
    await eventually(lambda: _no_jobs(k))
    return status


async def _no_jobs(k: Kubelet) -> bool:
    return not await k.items(JOBS)


async def _finished_trials(k: Kubelet) -> int:
    return sum((t.get("status") or {}).get("phase") == "Succeeded" for t in await k.items(TRIALS))


async def test_restarts_at_several_points(cluster: Emulator, operator: Operator) -> None:
    random.seed(7)
    await operator.start()
    async with Kubelet(str(cluster.url), by_width_slowly) as k:
        body = experiment(budget={"maxTrials": MAX_TRIALS, "parallelTrials": 3, "maxFailedTrials": 0})
        await k.request("POST", EXP, body)
        await eventually(lambda: k.items(TRIALS))  # right after the first creates
        await operator.restart()
        for done in (2, 5):  # mid-run, with trials finishing while the operator is away
            await eventually(lambda done=done: _at_least(_finished_trials(k), done), timeout=30)
            await operator.stop()
            await asyncio.sleep(0.4)
            await operator.start()
        await assert_exact_outcome(k, cluster)
        await operator.restart()  # after completion: nothing more happens
        await asyncio.sleep(1.0)
        assert len(await k.items(TRIALS)) == MAX_TRIALS


async def test_crash_between_trial_and_job_create(cluster: Emulator, operator: Operator) -> None:
    cluster.fail_creates["jobs"] = 10_000  # every Job create fails: Trials exist without their Job
    cluster.fail_creates["trials"] = 2  # and a couple of Trial creates fail first
    await operator.start()
    async with Kubelet(str(cluster.url), by_width_slowly) as k:
        await k.request("POST", EXP, experiment(budget={"maxTrials": MAX_TRIALS, "parallelTrials": 3}))
        await eventually(lambda: _equals(len_of(k.items(TRIALS)), 3))
        await asyncio.sleep(0.5)
        assert len(await k.items(TRIALS)) == 3 and not await k.items(JOBS)
        await operator.stop()
        cluster.fail_creates.clear()
        await operator.start()
        await assert_exact_outcome(k, cluster)


async def _at_least(value: Any, n: int) -> bool:
    return (await value) >= n


async def _equals(value: Any, n: int) -> bool:
    return (await value) == n


async def len_of(value: Any) -> int:
    return len(await value)


async def test_410_gone_watches_and_409_conflicts_are_survived(cluster: Emulator, operator: Operator) -> None:
    for plural in ("experiments", "trials", "jobs", "pods"):
        cluster.expire_watches[plural] = 2
    cluster.conflict_updates |= {"experiments": 3, "trials": 3}
    await operator.start()
    async with Kubelet(str(cluster.url), by_width_slowly) as k:
        await k.request("POST", EXP, experiment(budget={"maxTrials": MAX_TRIALS, "parallelTrials": 3}))
        await assert_exact_outcome(k, cluster)
    assert not any(cluster.expire_watches.values()) and not any(cluster.conflict_updates.values())
