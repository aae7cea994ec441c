"""Intermediate metrics through a real Prometheus (PromQL path) drive the early-stopping rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome, metrics_result
from loopback import free_port
from operator_harness import EVENTS, EXP, JOBS, TRIALS, Operator, eventually, experiment, index_of

STEPS = 5


class TrialEndpoint:
    """A trial's /metrics endpoint (what the SDK serves), with values the test sets."""

    def __init__(self) -> None:
        self.step = 0
        self.accuracy = 0.0
        self.extra: dict[str, float] = {}
        self.final_step: int | None = None
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> TrialEndpoint:
        app = web.Application()
        app.router.add_get("/metrics", self.serve)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def serve(self, _: web.Request) -> web.Response:
        values = {"accuracy": self.accuracy, **self.extra}
        text = (
            "# TYPE kubenas_trial_metric gauge\n"
            + "".join(f'kubenas_trial_metric{{name="{k}"}} {v}\n' for k, v in values.items())
            + f"# TYPE kubenas_trial_step gauge\nkubenas_trial_step {self.step}\n"
        )
        if self.final_step is not None:
            text += f"# TYPE kubenas_trial_final_step gauge\nkubenas_trial_final_step {self.final_step}\n"
        return web.Response(text=text, content_type="text/plain")


async def early_stopped(kubelet: Kubelet) -> list[dict[str, Any]]:
    """The Trials that ended EarlyStopped (none yet: an empty list, so ``eventually`` waits)."""
    return [t for t in await kubelet.items(TRIALS) if (t.get("status") or {}).get("phase") == "EarlyStopped"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "early_stopping",
    [
        pytest.param({"rule": "median", "minEpochs": 2, "minTrials": 2}, id="median"),
        pytest.param({"rule": "asha", "minEpochs": 2, "reductionFactor": 2}, id="asha"),
    ],
)
async def test_prometheus_curves_and_early_stopping(
    cluster: Emulator,
    operator: Operator,
    prometheus_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    early_stopping: dict[str, Any],
) -> None:
    monkeypatch.setenv("KUBENAS_PROMETHEUS_URL", prometheus_server.url)

    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        good = index_of(job) < 2
        async with TrialEndpoint() as endpoint:
            pod = f"{job['metadata']['name']}-pod"  # the fake kubelet's pod name
            prometheus_server.add_target(f"127.0.0.1:{endpoint.port}", pod=pod, namespace=NAMESPACE)
            if good:
                endpoint.final_step = STEPS
            elif index_of(job) == 3:
                # A poor trial whose training ends at step 2: it reports it, then spends a while
                # finishing (a test evaluation, an export). The rules must leave it to finish.
                endpoint.final_step = 2
                for step in (1, 2):
                    endpoint.step, endpoint.accuracy = step, 0.1
                    await asyncio.sleep(1.2)
                await asyncio.sleep(8)
                return metrics_result(accuracy=0.1)
            for step in range(1, 10_000):
                endpoint.step, endpoint.accuracy = step, (0.8 + 0.01 * step if good else 0.1)
                await asyncio.sleep(1.2)
                if good and step >= STEPS:
                    return metrics_result(accuracy=endpoint.accuracy)
        raise AssertionError("unreachable")

    body = experiment(
        budget={"maxTrials": 4, "parallelTrials": 2, "maxFailedTrials": 0},
        metrics={"source": "prometheus"},
        earlyStopping=early_stopping,
    )
    await operator.start()
    async with Kubelet(str(cluster.url), behaviour, running_first=True) as k:
        await k.request("POST", EXP, body)

        stopped = await eventually(lambda: early_stopped(k), timeout=90)

        async def finishing_trial_ended() -> dict[str, Any] | None:
            trial = next((t for t in await k.items(TRIALS) if t["metadata"]["name"] == "exp-3"), None)
            phase = ((trial or {}).get("status") or {}).get("phase")
            return trial if phase in ("Succeeded", "EarlyStopped", "Failed") else None

        finishing = await eventually(finishing_trial_ended, timeout=90)
        assert finishing["status"]["phase"] == "Succeeded", finishing["status"]
        assert finishing["status"]["finalStep"] == 2
        trials = {t["metadata"]["name"]: t for t in await k.items(TRIALS)}
        for name in ("exp-0", "exp-1"):
            assert trials[name]["status"]["finalStep"] == STEPS
            curve = trials[name]["status"]["curve"]
            assert curve and [p["step"] for p in curve] == sorted({p["step"] for p in curve}), curve
            assert all(abs(p["value"] - (0.8 + 0.01 * p["step"])) < 1e-9 for p in curve), curve
            assert trials[name]["status"]["phase"] == "Succeeded"
            if early_stopping["rule"] == "asha":  # kept at rung 2 (at least): recorded, never reopened
                assert trials[name]["status"].get("rung", 0) >= 2, trials[name]["status"]
        assert stopped[0]["status"]["reason"] == "EarlyStopped"
        assert early_stopping["rule"] in stopped[0]["status"]["message"]
        assert stopped[0]["metadata"]["name"] == "exp-2"
        reasons = {e["reason"] for e in await k.items(EVENTS)}
        assert "TrialEarlyStopped" in reasons
        jobs = {j["metadata"]["name"] for j in await k.items(JOBS)}
        assert stopped[0]["metadata"]["name"] not in jobs


@pytest.mark.slow
async def test_a_stop_early_constraint_stops_a_trial_on_its_reported_value(
    cluster: Emulator, operator: Operator, prometheus_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trials report params at step 0 through Prometheus; the heavy one is stopped there, the light one runs."""
    monkeypatch.setenv("KUBENAS_PROMETHEUS_URL", prometheus_server.url)

    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        heavy = index_of(job) == 0
        async with TrialEndpoint() as endpoint:
            pod = f"{job['metadata']['name']}-pod"
            prometheus_server.add_target(f"127.0.0.1:{endpoint.port}", pod=pod, namespace=NAMESPACE)
            endpoint.extra = {"params": 5000.0 if heavy else 500.0}
            for step in range(0, 10_000):
                endpoint.step, endpoint.accuracy = step, 0.5
                await asyncio.sleep(1.2)
                if not heavy and step >= 4:
                    return metrics_result(accuracy=0.5, params=500.0)
        raise AssertionError("unreachable")

    body = experiment(
        budget={"maxTrials": 2, "parallelTrials": 2, "maxFailedTrials": 0},
        metrics={"source": "prometheus"},
        objective={
            "metric": "accuracy",
            "goal": "maximize",
            "constraints": [{"metric": "params", "max": 1000, "stopEarly": True}],
        },
        earlyStopping={"rule": "none"},
    )
    await operator.start()
    async with Kubelet(str(cluster.url), behaviour, running_first=True) as k:
        await k.request("POST", EXP, body)

        (heavy,) = await eventually(lambda: early_stopped(k), timeout=90)
        assert heavy["metadata"]["name"] == "exp-0"
        assert heavy["status"]["reported"] == {"params": 5000.0}
        assert heavy["status"]["message"].startswith("infeasible: params = 5000"), heavy["status"]["message"]
        jobs = {j["metadata"]["name"] for j in await k.items(JOBS)}
        assert "exp-0" not in jobs
