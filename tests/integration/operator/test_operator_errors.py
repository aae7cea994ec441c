"""Every reconcile error ends in a visible state: a condition, an Event, a failed Trial; never a silent retry loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kmock_cluster import Emulator, Kubelet
from operator_harness import EVENTS, TRIALS, Operator, by_width, eventually, experiment, finished, status_of

IMAGE_REQUIRED = 'Job.batch "exp-0" is invalid: spec.template.spec.containers[0].image: Required value'
ANNOTATION_TOO_LONG = (
    'Job.batch "exp-1" is invalid: spec.template.annotations: Too long: must have at most 262144 bytes'
)
TRIAL_REFUSED = 'Trial.kubenas.io "exp-0" is invalid: spec.parameters.width: Invalid value: "integer"'


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


async def event_reasons(k: Kubelet) -> list[str]:
    return [e["reason"] for e in await k.items(EVENTS)]


async def test_a_job_the_server_refuses_in_the_dry_run_makes_the_spec_invalid(
    cluster: Emulator, operator: Operator
) -> None:
    cluster.refuse_creates["jobs"] = (1, IMAGE_REQUIRED, True)
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        await k.request("POST", "/apis/kubenas.io/v1alpha1/namespaces/team/experiments", experiment())
        status = await eventually(lambda: finished(k), timeout=10)
        assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec")
        valid = condition(status, "Valid")
        assert valid["status"] == "False" and IMAGE_REQUIRED in valid["message"], valid
        assert "ExperimentFailed" in await event_reasons(k)
        assert await k.items(TRIALS) == []  # refused before any trial was spent
        await asyncio.sleep(1.5)  # several resync periods: nothing is retried for this generation
        assert cluster.refused["jobs"] == 1 and cluster.dry_runs["jobs"] == 0
        assert cluster.requests["create", "jobs"] == 0


async def test_a_job_refused_for_one_trial_fails_that_trial_with_the_servers_message(
    cluster: Emulator, operator: Operator
) -> None:
    cluster.refuse_creates["jobs"] = (1, ANNOTATION_TOO_LONG, False)  # the dry run passes, the real create not
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        await k.request(
            "POST",
            "/apis/kubenas.io/v1alpha1/namespaces/team/experiments",
            experiment(budget={"maxTrials": 3, "parallelTrials": 1, "maxFailedTrials": 1}),
        )
        status = await eventually(lambda: finished(k), timeout=20)
        trials = {t["metadata"]["name"]: t["status"] for t in await k.items(TRIALS)}
        refused = trials["exp-0"]
        assert (refused["phase"], refused["reason"]) == ("Failed", "InvalidTemplate"), refused
        assert ANNOTATION_TOO_LONG in refused["message"]
        assert status["phase"] == "Succeeded" and status["trials"]["failed"] == 1
        assert cluster.dry_runs["jobs"] == 1 and cluster.refused["jobs"] == 1
        assert "TrialFailed" in await event_reasons(k)


async def test_a_trial_the_server_refuses_makes_the_spec_invalid(cluster: Emulator, operator: Operator) -> None:
    cluster.refuse_creates["trials"] = (1, TRIAL_REFUSED, True)
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        await k.request("POST", "/apis/kubenas.io/v1alpha1/namespaces/team/experiments", experiment())
        status = await eventually(lambda: finished(k), timeout=10)
        assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec")
        assert TRIAL_REFUSED in condition(status, "Valid")["message"]
        await asyncio.sleep(1.5)
        assert cluster.refused["trials"] == 1 and cluster.requests["create", "trials"] == 0


async def test_persistent_api_errors_are_shown_then_cleared(cluster: Emulator, operator: Operator) -> None:
    cluster.fail_creates["trials"] = 3  # 500s: transient, retried with backoff
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        await k.request("POST", "/apis/kubenas.io/v1alpha1/namespaces/team/experiments", experiment())
        shown = await eventually(lambda: _synced_false(k), timeout=10)
        assert shown["reason"] == "ApiUnavailable" and "injected failure creating trials" in shown["message"]
        assert "ApiUnavailable" in await event_reasons(k)
        status = await eventually(lambda: finished(k), timeout=30)
        assert status["phase"] == "Succeeded"
        synced = condition(status, "Synced")
        assert synced["status"] == "True" and synced["reason"] == "Reconciled", synced


async def _synced_false(k: Kubelet) -> dict[str, Any] | None:
    synced = condition(await status_of(k), "Synced")
    return synced if synced.get("status") == "False" else None


HOSTILE_SPECS = [
    pytest.param(
        {"parameters": [{"name": "width", "type": "float", "min": -1e308, "max": 1e308}]},
        "parameters",
        id="huge-bounds",
    ),
    pytest.param({"algorithm": {"name": "NoSuchOptimizer"}}, "algorithm.name", id="unknown-algorithm"),
    pytest.param(
        {"trialTemplate": {"spec": {"containers": [{"name": "trial"}]}}}, "containers[0].image", id="no-image"
    ),
    pytest.param(
        {"parameters": [{"name": "width", "type": "categorical"}]}, "parameters[0].values", id="categorical-no-values"
    ),
    pytest.param({"budget": "lots"}, "budget", id="budget-not-an-object"),
]


@pytest.mark.parametrize(("spec", "field"), HOSTILE_SPECS)
async def test_a_hostile_spec_ends_invalid_naming_the_field(
    cluster: Emulator, operator: Operator, spec: dict[str, Any], field: str
) -> None:
    """What the emulator stores unchecked (a real server refuses most of it at apply) still ends visibly."""
    body = experiment()
    body["spec"].update(spec)
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        await k.request("POST", "/apis/kubenas.io/v1alpha1/namespaces/team/experiments", body)
        status = await eventually(lambda: finished(k), timeout=10)
        assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec"), status
        assert field in condition(status, "Valid")["message"], status
        assert await k.items(TRIALS) == []
