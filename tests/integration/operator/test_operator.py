"""The real kopf operator against the API emulator, with the test playing kubelet."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome, metrics_result
from kubenas.controller import settings
from operator_harness import (
    CONFIGMAPS,
    EVENTS,
    EXP,
    JOBS,
    TRIALS,
    Operator,
    by_width,
    eventually,
    experiment,
    finished,
    index_of,
    status_of,
)


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


async def trials_by_name(k: Kubelet) -> dict[str, dict[str, Any]]:
    return {t["metadata"]["name"]: t for t in await k.items(TRIALS)}


FAILURES = [
    ("ExitCode", Outcome(exit_code=3, message="Traceback: boom")),
    ("OOMKilled", Outcome(kind="oom")),
    ("DeadlineExceeded", Outcome(kind="deadline")),
    ("Unschedulable", Outcome(kind="unschedulable")),
    ("ImagePullBackOff", Outcome(kind="image")),
    ("MetricsMissing", metrics_result(loss=0.1)),
    ("InvalidResult", Outcome(message="accuracy is great")),
]


async def test_each_failure_kind_is_classified(cluster: Emulator, operator: Operator) -> None:
    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        i = index_of(job)
        return FAILURES[i][1] if i < len(FAILURES) else metrics_result(accuracy=0.5)

    await operator.start()
    async with Kubelet(str(cluster.url), behaviour) as k:
        n = len(FAILURES)
        await k.request(
            "POST", EXP, experiment(budget={"maxTrials": n + 1, "parallelTrials": n + 1, "maxFailedTrials": n})
        )
        status = await eventually(lambda: finished(k), timeout=30)
        trials = await trials_by_name(k)
        for i, (reason, _) in enumerate(FAILURES):
            t = trials[f"exp-{i}"]["status"]
            assert (t["phase"], t["reason"]) == ("Failed", reason), t
        assert trials["exp-0"]["status"]["message"] == "exit code 3: Traceback: boom"  # the log tail's last line
        assert trials["exp-0"]["status"]["exitCode"] == 3
        assert "Insufficient nvidia.com/gpu" in trials["exp-3"]["status"]["message"]
        assert status["phase"] == "Succeeded" and status["bestTrial"]["name"] == f"exp-{n}"
        assert await k.items(JOBS) == []  # finished Jobs are cleaned up, stuck ones deleted
        warnings = [e for e in await k.items(EVENTS) if e["reason"] == "TrialFailed"]
        assert len(warnings) == n and all(e["type"] == "Warning" for e in warnings)


async def test_a_noisy_latency_is_recorded_and_kept_off_the_front(cluster: Emulator, operator: Operator) -> None:
    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        i = index_of(job)  # exp-0 would dominate every trial, but its latency was disturbed
        return metrics_result(accuracy=0.99 if i == 0 else 0.5 + i / 10, latency_ms=0.5 if i == 0 else float(i),
                              latency_noisy=1 if i == 0 else 0)

    body = experiment(budget={"maxTrials": 3, "parallelTrials": 3})
    body["spec"]["objective"] = {"strategy": "pareto", "metrics": [
        {"name": "accuracy", "goal": "maximize"}, {"name": "latency_ms", "goal": "minimize"}]}
    await operator.start()
    async with Kubelet(str(cluster.url), behaviour) as k:
        await k.request("POST", EXP, body)
        status = await eventually(lambda: finished(k), timeout=30)
        trials = await trials_by_name(k)
        assert trials["exp-0"]["status"]["noisyMetrics"] == ["latency_ms"]
        assert not trials["exp-1"]["status"].get("noisyMetrics")
        assert status["phase"] == "Succeeded", status
        assert {m["name"] for m in status["paretoFront"]} == {"exp-1", "exp-2"}


async def test_max_failed_trials_fails_the_experiment(cluster: Emulator, operator: Operator) -> None:
    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        return Outcome(exit_code=1) if index_of(job) < 2 else Outcome(kind="hang")

    await operator.start()
    async with Kubelet(str(cluster.url), behaviour) as k:
        await k.request("POST", EXP, experiment(budget={"maxTrials": 10, "parallelTrials": 3, "maxFailedTrials": 1}))
        status = await eventually(lambda: finished(k), timeout=30)
        assert (status["phase"], status["reason"]) == ("Failed", "TooManyFailures")
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True" and failed["reason"] == "TooManyFailures"
        trials = await trials_by_name(k)
        assert all(t["status"]["phase"] in ("Failed", "Stopped") for t in trials.values())
        assert any(t["status"].get("reason") == "ExperimentFinished" for t in trials.values())
        assert await eventually(lambda: _no_jobs(k))


async def _no_jobs(k: Kubelet) -> bool:
    return not await k.items(JOBS)


async def test_invalid_spec_gets_valid_false_without_retry_loop(cluster: Emulator, operator: Operator) -> None:
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        bad_model = experiment("bad-model", budget={"maxTrials": 4, "parallelTrials": 2, "maxFailedTrials": 3})
        bad_model["spec"]["parameters"] = [{"name": "width", "type": "int", "min": 10, "max": 1}]
        await k.request("POST", EXP, bad_model)
        await k.request("POST", EXP, experiment("bad-algo", algorithm={"name": "NoSuchOptimizer"}))
        await k.request("POST", EXP, experiment("bad-pod", trialTemplate=PRIVILEGED_TEMPLATE))
        # kubectl apply accepts this one: `when` is schemaless, so the rule is the operator's (docs/reference.md)
        bad_when = [{"name": "width", "type": "int", "min": 1, "max": 50, "when": {"width": [2]}}]
        await k.request("POST", EXP, experiment("bad-when", parameters=bad_when))
        when_self = "spec.parameters[0].when.width: when must name another parameter, not the parameter itself"
        refused = (
            "spec.trialTemplate.spec.containers[0].securityContext.privileged: privileged: true is forbidden by the "
            f"restricted trial pod policy; allow it with the chart value trialPodPolicy.namespaces.{NAMESPACE}.level"
        )
        for name, needle in [
            ("bad-model", "parameters"),
            ("bad-algo", "NoSuchOptimizer"),
            ("bad-pod", refused),
            ("bad-when", when_self),
        ]:
            status = await eventually(lambda name=name: finished(k, name))
            valid = next(c for c in status["conditions"] if c["type"] == "Valid")
            assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec")
            assert valid["status"] == "False" and needle in valid["message"], valid
        writes = len(cluster.writes)
        await asyncio.sleep(1.5)  # three resync periods
        assert cluster.writes[writes:] == []
        assert await k.items(TRIALS) == []


PRIVILEGED_TEMPLATE = {
    "retain": True,
    "spec": {"containers": [{"name": "trial", "image": "kubenas/trial:test", "securityContext": {"privileged": True}}]},
}


async def test_trial_pod_policy_is_relaxed_per_namespace(
    cluster: Emulator, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    relaxed = {"namespaces": {NAMESPACE: {"level": "privileged"}}}
    monkeypatch.setenv(settings.TRIAL_POD_POLICY_ENV, json.dumps(relaxed))
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        await k.request("POST", EXP, experiment(trialTemplate=PRIVILEGED_TEMPLATE))
        status = await eventually(lambda: finished(k), timeout=30)
        assert (status["phase"], status["reason"]) == ("Succeeded", "BudgetSpent")
        pod = (await k.items(JOBS))[0]["spec"]["template"]["spec"]
        # The template's own field wins; the other defaults are still merged in.
        assert pod["containers"][0]["securityContext"] == {
            "privileged": True,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert pod["automountServiceAccountToken"] is False


async def count(k: Kubelet, path: str) -> int:
    return len(await k.items(path))


async def test_spec_changes_and_suspend_take_effect(cluster: Emulator, operator: Operator) -> None:
    gate = asyncio.Event()

    async def behaviour(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        await gate.wait()
        return metrics_result(accuracy=params["width"] / 100)

    async def patch_spec(spec: dict[str, Any]) -> None:
        await k.request("PATCH", f"{EXP}/exp", {"spec": spec}, patch=True)

    await operator.start()
    async with Kubelet(str(cluster.url), behaviour) as k:
        await k.request("POST", EXP, experiment(budget={"maxTrials": 6, "parallelTrials": 2}))
        await eventually(lambda: _equals(count(k, JOBS), 2))
        await asyncio.sleep(0.6)
        assert await count(k, TRIALS) == 2  # parallelTrials holds

        await patch_spec({"budget": {"parallelTrials": 3}})
        await eventually(lambda: _equals(count(k, JOBS), 3))

        await patch_spec({"suspend": True})
        await eventually(lambda: _condition(k, "Suspended", "True"))
        gate.set()  # running trials finish; no new ones start
        await eventually(lambda: _equals(_succeeded(k), 3))
        await asyncio.sleep(0.6)
        assert await count(k, TRIALS) == 3

        await patch_spec({"suspend": False})
        status = await eventually(lambda: finished(k), timeout=30)
        assert status["phase"] == "Succeeded" and status["trials"]["total"] == 6

        await patch_spec({"budget": {"maxTrials": 8}})  # a finished experiment resumes for a raised budget
        await eventually(lambda: _equals(_succeeded(k), 8), timeout=30)
        status = await eventually(lambda: finished(k))
        assert status["phase"] == "Succeeded" and await count(k, TRIALS) == 8


async def _equals(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def _succeeded(k: Kubelet) -> int:
    return sum(t.get("status", {}).get("phase") == "Succeeded" for t in await k.items(TRIALS))


async def _condition(k: Kubelet, kind: str, value: str) -> bool:
    conditions = (await status_of(k)).get("conditions") or []
    return any(c["type"] == kind and c["status"] == value for c in conditions)


async def test_target_value_and_max_duration_end_the_experiment(cluster: Emulator, operator: Operator) -> None:
    async def first_good_then_hang(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        return metrics_result(accuracy=0.5) if index_of(job) == 0 else Outcome(kind="hang")

    await operator.start()
    async with Kubelet(str(cluster.url), first_good_then_hang) as k:
        await k.request(
            "POST",
            EXP,
            experiment("target", objective={"targetValue": 0.4}, budget={"maxTrials": 20, "parallelTrials": 1}),
        )
        await k.request(
            "POST", EXP, experiment("clock", budget={"maxTrials": 20, "parallelTrials": 3, "maxDuration": "2s"})
        )
        target = await eventually(lambda: finished(k, "target"), timeout=30)
        assert (target["phase"], target["reason"]) == ("Succeeded", "TargetReached")
        clock = await eventually(lambda: finished(k, "clock"), timeout=30)
        assert clock["reason"] in ("MaxDurationReached", "NoSuccessfulTrial"), clock
        trials = [t for t in await k.items(TRIALS) if t["spec"]["experiment"] == "clock"]
        stopped = [t for t in trials if t["status"]["phase"] == "Stopped"]
        assert stopped and all(t["status"]["reason"] == "ExperimentFinished" for t in stopped)
        await eventually(lambda: _no_jobs(k))
