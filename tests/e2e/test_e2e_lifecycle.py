"""The operator's life on a real cluster: SIGKILL and restart mid-experiment, an Experiment
deleted while it runs, and a trial template the API server refuses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_cluster import (
    FINISHED_TRIAL,
    children,
    condition,
    delete_namespace,
    names,
    phase,
    quick_experiment,
    running_pods,
    status,
    summary,
    to_yaml,
    wait_finished,
    wait_for,
)
from kubeapi import Kube, path
from kubelet import TestKubelet

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(300)
def test_operator_killed_and_restarted(
    kube: Kube, kubectl: Callable[..., Any], crds: None, namespace: str, operator: Callable[..., Any]
) -> None:
    name, max_trials = "restart", 6
    op = operator(namespace)
    manifest = quick_experiment(name, seconds=4, max_trials=max_trials)
    kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))
    state = lambda: summary(kube, namespace, name)  # noqa: E731

    # 1. Killed while its first trials run.
    wait_for(lambda: running_pods(kube, namespace, name), 90, "a trial pod Running", state=state)
    op.kill()
    time.sleep(6)  # the trials end while no operator watches
    op.start()
    # 2. Killed again once some trials have finished and others were created.
    wait_for(
        lambda: (
            sum(phase(t) in FINISHED_TRIAL for t in children(kube, namespace, name)["trials"]) >= 2
            and len(children(kube, namespace, name)["trials"]) >= 4
        ),
        120,
        "4 trials, 2 finished",
        state=state,
    )
    op.kill()
    op.start()
    st = wait_finished(kube, namespace, name, 180, state=state)
    assert st["phase"] == "Succeeded", state()

    kids = children(kube, namespace, name)
    trials = kids["trials"]
    assert names(trials) == sorted(f"{name}-{i}" for i in range(max_trials)), names(trials)
    assert sorted(t["spec"]["index"] for t in trials) == list(range(max_trials))
    assert all(phase(t) == "Succeeded" for t in trials), state()
    configurations = {tuple(sorted(t["spec"]["parameters"].items())) for t in trials}
    assert len(configurations) == max_trials, "a configuration ran twice"
    # No orphan Job: each one belongs to a Trial, and the finished ones are deleted.
    trial_uids = {t["metadata"]["uid"] for t in trials}
    for job in kids["jobs"]:
        owners = {o["uid"] for o in job["metadata"].get("ownerReferences") or []}
        assert owners & trial_uids, f"Job {job['metadata']['name']} has no Trial owner"
    wait_for(lambda: not children(kube, namespace, name)["jobs"], 60, "no Job left", state=state)
    assert kube.get(path("v1", "configmaps", namespace, f"{name}-best"))["data"]["trial"] in names(trials)


@pytest.mark.timeout(300)
def test_experiment_deleted_while_running(
    kube: Kube,
    kubectl: Callable[..., Any],
    crds: None,
    kubelet: TestKubelet | None,
    namespace: str,
    operator: Callable[..., Any],
) -> None:
    name = "deleted"
    op = operator(namespace)
    kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(quick_experiment(name, seconds=300, max_trials=4)))
    state = lambda: summary(kube, namespace, name)  # noqa: E731
    wait_for(lambda: len(running_pods(kube, namespace, name)) == 2, 90, "2 trial pods Running", state=state)

    kids = children(kube, namespace, name)
    exp = kube.get(path("kubenas.io/v1alpha1", "experiments", namespace, name))
    assert not exp["metadata"].get("finalizers")
    for kind in ("trials", "configmaps"):
        for obj in kids[kind]:
            assert not obj["metadata"].get("finalizers"), obj["metadata"]
    for obj in kids["jobs"] + kids["pods"]:  # only Kubernetes' own Job-tracking finalizer
        assert set(obj["metadata"].get("finalizers") or []) <= {"batch.kubernetes.io/job-tracking"}, obj["metadata"]

    started = time.monotonic()
    kubectl("delete", "experiment", name, "-n", namespace, "--wait=false")
    print("just after the delete:", {k: len(v) for k, v in children(kube, namespace, name).items()})
    wait_for(
        lambda: (
            status(kube, namespace, name) == {}
            and kube.get_or_none(path("kubenas.io/v1alpha1", "experiments", namespace, name)) is None
            and not any(children(kube, namespace, name).values())
        ),
        90,
        "Experiment, Trials, Jobs, Pods and ConfigMaps gone (garbage collector)",
        interval=1.0,
        state=lambda: {k: names(v) for k, v in children(kube, namespace, name).items()},
    )
    elapsed = time.monotonic() - started
    if kubelet is not None:
        wait_for(lambda: not [k for k in kubelet.running() if k.startswith(f"{namespace}/")], 15, "processes killed")
    print(f"experiment and its children gone in {elapsed:.1f}s")

    # With the operator down, the namespace still deletes cleanly: nothing of ours holds a finalizer.
    op.kill()
    started = time.monotonic()
    delete_namespace(kube, namespace, timeout=90)
    print(f"namespace gone in {time.monotonic() - started:.1f}s")


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("template", "words"),
    [
        pytest.param(
            {"metadata": {"labels": {"team": "not a label value!"}}},
            ("Invalid value", "not a label value!"),
            id="label",
        ),
        pytest.param({"env": [{"name": "BAD=NAME", "value": "1"}]}, ("Invalid value", "BAD=NAME"), id="env-name"),
    ],
)
def test_template_the_api_server_refuses(
    template: dict[str, Any],
    words: tuple[str, ...],
    kube: Kube,
    kubectl: Callable[..., Any],
    crds: None,
    namespace: str,
    operator: Callable[..., Any],
) -> None:
    name = "refused"
    manifest = quick_experiment(name, seconds=1, max_trials=6, parallel=2)
    trial_template = manifest["spec"]["trialTemplate"]
    if "metadata" in template:
        trial_template["metadata"] = template["metadata"]
    if "env" in template:
        trial_template["spec"]["containers"][0]["env"] = template["env"]
    operator(namespace)
    kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))  # the CRD cannot see it: accepted
    state = lambda: summary(kube, namespace, name)  # noqa: E731

    def visible() -> str | None:
        valid = condition(status(kube, namespace, name), "Valid")
        if valid is not None and valid.get("status") == "False":
            return f"Valid=False: {valid.get('message')}"
        for trial in children(kube, namespace, name)["trials"]:
            st = trial.get("status") or {}
            if st.get("reason") == "InvalidTemplate":
                return f"{trial['metadata']['name']} InvalidTemplate: {st.get('message')}"
        return None

    started = time.monotonic()
    seen = wait_for(visible, 30, "Valid=False or a Trial InvalidTemplate", state=state)
    print(f"visible in {time.monotonic() - started:.1f}s: {seen}")
    assert all(w in seen for w in words), seen

    # No retry loop: the experiment settles, no Job exists, and the Trial count stops growing.
    def settled() -> tuple[int, ...] | None:
        before = len(children(kube, namespace, name)["trials"])
        time.sleep(5)  # five resync periods of the test operator
        kids = children(kube, namespace, name)
        return None if len(kids["trials"]) != before or kids["jobs"] else (before,)

    (count,) = wait_for(settled, 60, "a stable Trial count and no Job", state=state)
    budget = manifest["spec"]["budget"]
    assert count <= budget["maxTrials"], state()
    st = status(kube, namespace, name)
    valid = condition(st, "Valid")
    assert st.get("phase") == "Failed" or (valid or {}).get("status") == "False", state()


@pytest.mark.timeout(240)
def test_failed_trials_get_their_reason_from_the_real_pod_and_job(
    kube: Kube, kubectl: Callable[..., Any], crds: None, namespace: str, operator: Callable[..., Any]
) -> None:
    """activeDeadlineSeconds is enforced by the Job controller; a crash's log tail is the pod's message."""
    deadline = quick_experiment("deadline", seconds=300, max_trials=1, parallel=1)
    deadline["spec"]["trialTemplate"]["activeDeadlineSeconds"] = 3
    crash = quick_experiment("crash", max_trials=1, parallel=1)
    crash["spec"]["trialTemplate"]["spec"]["containers"][0]["command"] = [
        "python",
        "-c",
        "import sys; print('boom: the data set is empty', flush=True); sys.exit(3)",
    ]
    operator(namespace)
    for manifest in (deadline, crash):
        kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml(manifest))

    def finished_trial(name: str) -> dict[str, Any] | None:
        trials = children(kube, namespace, name)["trials"]
        done = [t for t in trials if phase(t) in FINISHED_TRIAL]
        return (done[0].get("status") or {}) if done else None

    st = wait_for(lambda: finished_trial("deadline"), 90, "the deadline trial ends")
    assert (st["phase"], st.get("reason")) == ("Failed", "DeadlineExceeded"), st
    st = wait_for(lambda: finished_trial("crash"), 90, "the crashing trial ends")
    assert (st["phase"], st.get("reason")) == ("Failed", "ExitCode"), st
    assert "boom: the data set is empty" in (st.get("message") or ""), st
