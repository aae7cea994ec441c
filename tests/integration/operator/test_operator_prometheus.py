"""Intermediate metrics through a real Prometheus (PromQL path) drive the early-stopping rules."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp import web
from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome, metrics_result
from operator_harness import EVENTS, EXP, JOBS, TRIALS, Operator, eventually, experiment, index_of

STEPS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TrialEndpoint:
    """A trial's /metrics endpoint (what the SDK serves), with values the test sets."""

    def __init__(self) -> None:
        self.step = 0
        self.accuracy = 0.0
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
        text = (
            "# TYPE kubenas_trial_metric gauge\n"
            f'kubenas_trial_metric{{name="accuracy"}} {self.accuracy}\n'
            "# TYPE kubenas_trial_step gauge\n"
            f"kubenas_trial_step {self.step}\n"
        )
        return web.Response(text=text, content_type="text/plain")


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

        async def early_stopped() -> list[dict[str, Any]]:
            trials = await k.items(TRIALS)
            return [t for t in trials if (t.get("status") or {}).get("phase") == "EarlyStopped"]

        stopped = await eventually(early_stopped, timeout=90)
        trials = {t["metadata"]["name"]: t for t in await k.items(TRIALS)}
        for name in ("exp-0", "exp-1"):
            curve = trials[name]["status"]["curve"]
            assert curve and [p["step"] for p in curve] == sorted({p["step"] for p in curve}), curve
            assert all(abs(p["value"] - (0.8 + 0.01 * p["step"])) < 1e-9 for p in curve), curve
            assert trials[name]["status"]["phase"] == "Succeeded"
            if early_stopping["rule"] == "asha":  # kept at rung 2 (at least): recorded, never reopened
                assert trials[name]["status"].get("rung", 0) >= 2, trials[name]["status"]
        assert stopped[0]["status"]["reason"] == "EarlyStopped"
        assert early_stopping["rule"] in stopped[0]["status"]["message"]
        assert stopped[0]["metadata"]["name"] in ("exp-2", "exp-3")
        reasons = {e["reason"] for e in await k.items(EVENTS)}
        assert "TrialEarlyStopped" in reasons
        jobs = {j["metadata"]["name"] for j in await k.items(JOBS)}
        assert stopped[0]["metadata"]["name"] not in jobs
