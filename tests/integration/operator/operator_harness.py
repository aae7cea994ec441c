"""Shared pieces of the operator tests: the restartable operator, API paths, a default Experiment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kmock_cluster import NAMESPACE, Kubelet, Outcome, metrics_result
from kopf.testing import KopfRunner
from kubenas import api

FAST = {
    "KUBENAS_DEBOUNCE_SECONDS": "0.05",
    "KUBENAS_RESYNC_SECONDS": "0.5",
    "KUBENAS_METRICS_POLL_SECONDS": "0.2",
    "KUBENAS_RETRY_SECONDS": "0.3",
    "KUBENAS_UNSCHEDULABLE_SECONDS": "0.5",
    "KUBENAS_REQUEST_TIMEOUT": "10",
    "KUBENAS_OPERATOR_METRICS_PORT": "0",  # tests that scrape it choose a free port
}


class Operator:
    """The real operator (``kopf run -m kubenas.controller.handlers``) in a thread, restartable."""

    def __init__(self, *extra_args: str) -> None:
        self.runner: KopfRunner | None = None
        self.outputs: list[str] = []
        self.extra_args = list(extra_args)  # e.g. --liveness=...

    async def start(self) -> None:
        assert self.runner is None
        args = ["run", "--standalone", "-A", "--verbose", *self.extra_args, "-m", "kubenas.controller.handlers"]
        self.runner = KopfRunner(args, timeout=30, reraise=False)
        await asyncio.get_running_loop().run_in_executor(None, self.runner.__enter__)

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await asyncio.get_running_loop().run_in_executor(None, runner.__exit__, None, None, None)
            self.outputs.append(runner.output)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns a truthy value (or raises nothing falsy) within ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except AssertionError as err:
            last = err
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {last}")


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


async def restart_in_each_stage(k: Kubelet, operator: Operator, stages: tuple[str, ...]) -> None:
    """Stop the operator as soon as the experiment shows each stage, and start it again after a pause
    in which the trials go on (and may finish) without it."""
    for stage in stages:

        async def reached(stage: str = stage) -> bool:
            return (await status_of(k)).get("stage") == stage

        await eventually(reached, timeout=90)
        await operator.stop()
        await asyncio.sleep(0.5)
        await operator.start()


def index_of(job: dict[str, Any]) -> int:
    return int(job["metadata"]["name"].rsplit("-", 1)[1])
