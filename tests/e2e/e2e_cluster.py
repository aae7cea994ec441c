"""What the e2e tests share: the kubectl and helm binaries, the operator as a subprocess, waits,
Experiment manifests shrunk to test size, and reads of an experiment's objects."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubeapi import ApiError, Kube, now_micro, path
from kubenas import plan
from kubenas.api import Experiment, ExperimentPhase, TrialPhase

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CRDS = ROOT / "crds"
CHART = ROOT / "helm" / "kubenas"
KUBENAS = Path(sys.executable).with_name("kubenas")

GROUP_VERSION = "kubenas.io/v1alpha1"
LABEL_EXPERIMENT = "kubenas.io/experiment"

# Fast reconciles (docs/operator.md, operator/kubenas/controller/settings.py); no Prometheus: trials'
# final results come from termination messages, curves are not recorded.
FAST_OPERATOR_ENV = {
    "KUBENAS_DEBOUNCE_SECONDS": "0.1",
    "KUBENAS_RESYNC_SECONDS": "1",
    "KUBENAS_METRICS_POLL_SECONDS": "1",
    "KUBENAS_RETRY_SECONDS": "1",
    "KUBENAS_UNSCHEDULABLE_SECONDS": "120",
    "KUBENAS_REQUEST_TIMEOUT": "15",
    "KUBENAS_OPERATOR_METRICS_PORT": "0",
}

T = TypeVar("T")
FINISHED_EXPERIMENT = frozenset(str(p) for p in ExperimentPhase if p.is_finished)
FINISHED_TRIAL = frozenset(str(p) for p in TrialPhase if p.is_finished)
NAMESPACE_TIMEOUT = 120.0  # seconds a namespace may take to be gone after its delete


def tool(name: str) -> str | None:
    """``tools/<name>`` (make kubectl / make helm), else the one on PATH."""
    local = ROOT / "tools" / name
    return str(local) if local.exists() else shutil.which(name)


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check``, a non-zero exit fails the test with its output."""
    done = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=timeout, env=None if env is None else dict(env)
    )
    if check and done.returncode != 0:
        output = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        raise AssertionError(f"`{' '.join(argv)}` exited {done.returncode}\n{output}")
    return done


def wait_for(
    check: Callable[[], T], timeout: float, what: str, *, interval: float = 0.5, state: Callable[[], Any] | None = None
) -> T:
    """Poll ``check`` until it returns something truthy; after ``timeout`` fail, saying ``what`` and ``state()``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except AssertionError as err:
            last = err
        if time.monotonic() >= deadline:
            detail = state() if state is not None else last
            raise AssertionError(f"not within {timeout:g}s: {what}\nlast: {detail}")
        time.sleep(interval)


class Operator:
    """``kubenas operator --namespace NS`` as a subprocess: started, SIGKILLed, restarted; its log in a file."""

    def __init__(self, namespace: str, kubeconfig: str, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / f"operator-{namespace}.log"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Operator:
        assert self.proc is None or self.proc.poll() is not None, "the operator is already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBENAS_")}
        env.update(FAST_OPERATOR_ENV)
        env.update(self.extra_env)
        env["KUBECONFIG"] = self.kubeconfig
        argv = [str(KUBENAS), "operator", "--namespace", self.namespace, "--metrics-port", "0", "--verbose"]
        self.starts += 1
        with open(self.log_path, "ab") as out:
            out.write(f"\n===== start {self.starts}: {' '.join(argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final writes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 0) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:] if tail else text


# --- namespaces


def create_namespace(kube: Kube, name: str) -> str:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubenas.io/e2e": "true"}}}
    kube.create(path("v1", "namespaces"), body)
    # Pods are refused until the namespace's ServiceAccount exists (the controller-manager creates it).
    try:
        wait_for(lambda: kube.get_or_none(path("v1", "serviceaccounts", name, "default")), 60, f"{name}/default SA")
    except BaseException:
        with contextlib.suppress(Exception):
            kube.delete(path("v1", "namespaces", name=name))
        raise
    return name


def delete_namespace(kube: Kube, name: str, timeout: float = NAMESPACE_TIMEOUT) -> None:
    """Delete and wait until it is gone; fail naming what still holds it."""
    kube.delete(path("v1", "namespaces", name=name))

    def gone() -> bool:
        return kube.get_or_none(path("v1", "namespaces", name=name)) is None

    def state() -> Any:
        ns = kube.get_or_none(path("v1", "namespaces", name=name)) or {}
        return {"finalizers": (ns.get("spec") or {}).get("finalizers"), "status": ns.get("status")}

    wait_for(gone, timeout, f"namespace {name} deleted", interval=1.0, state=state)


# --- manifests


def load(path_: Path) -> dict[str, Any]:
    return yaml.safe_load(path_.read_text())


def shrink(manifest: Mapping[str, Any], *, max_trials: int = 3, parallel: int = 2, epochs: int = 2) -> dict[str, Any]:
    """A copy small enough for a test: fewer trials, epochs and samples; ``$KUBENAS_E2E_TRIAL_IMAGE`` as the image."""
    doc = copy.deepcopy(dict(manifest))
    doc["metadata"].pop("namespace", None)
    budget = doc["spec"].setdefault("budget", {})
    budget["maxTrials"] = min(int(budget.get("maxTrials", max_trials)), max_trials)
    budget["parallelTrials"] = min(int(budget.get("parallelTrials", 1)), parallel, budget["maxTrials"])
    containers = doc["spec"]["trialTemplate"]["spec"]["containers"]
    trial = containers[0]
    trial["args"] = [_fewer_epochs(str(a), epochs) for a in trial.get("args") or []]
    image = os.environ.get("KUBENAS_E2E_TRIAL_IMAGE")
    if image:
        trial["image"] = image
    for section, stages in (("oneShot", ("supernet", "retrain")), ("gradientSearch", ("search", "retrain"))):
        staged = doc["spec"].get(section)
        if staged:  # its stages' epochs are its own parameters, not the template's args
            for stage in stages:
                settings = staged.get(stage) or {}
                if "epochs" in settings:
                    settings["epochs"] = min(int(settings["epochs"]), epochs)
            staged["topK"] = 1
    return doc


def planned_trials(manifest: Mapping[str, Any]) -> int:
    """The trials an example runs at most: maxTrials, or a staged experiment's trials in all its stages."""
    return plan.planned_trials(Experiment.model_validate(manifest).spec)


# Trainer parameters (docs/trial.md) capped in the shrunk copies, besides epochs.
CAPS = {"max_train_samples": 1000, "latency_repeats": 10}


def _fewer_epochs(arg: str, epochs: int) -> str:
    for name, cap in {"epochs": epochs, **CAPS}.items():
        arg = re.sub(rf"(?<![A-Za-z0-9_]){name}=(\d+)", lambda m, n=name, c=cap: f"{n}={min(int(m.group(1)), c)}", arg)
    return arg


def to_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False)


# --- reads


def experiment(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get_or_none(path(GROUP_VERSION, "experiments", namespace, name))


def status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return (experiment(kube, namespace, name) or {}).get("status") or {}


def children(kube: Kube, namespace: str, name: str) -> dict[str, list[dict[str, Any]]]:
    """The Experiment's Trials, Jobs, Pods and ConfigMaps, by its label."""
    selector = {"labelSelector": f"{LABEL_EXPERIMENT}={name}"}
    return {
        "trials": kube.items(path(GROUP_VERSION, "trials", namespace), **selector),
        "jobs": kube.items(path("batch/v1", "jobs", namespace), **selector),
        "pods": kube.items(path("v1", "pods", namespace), **selector),
        "configmaps": kube.items(path("v1", "configmaps", namespace), **selector),
    }


def phase(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def running_pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [p for p in children(kube, namespace, name)["pods"] if phase(p) == "Running"]


def wait_finished(
    kube: Kube,
    namespace: str,
    name: str,
    timeout: float,
    what: str = "the experiment finishes",
    *,
    interval: float = 0.5,
    state: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """The Experiment's status once its phase is a finished one (Succeeded, Failed, Stopped)."""
    return wait_for(
        lambda: (s := status(kube, namespace, name)).get("phase") in FINISHED_EXPERIMENT and s,
        timeout,
        what,
        interval=interval,
        state=state or (lambda: summary(kube, namespace, name)),
    )


def names(objs: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


def condition(exp_status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in exp_status.get("conditions") or [] if c.get("type") == kind), None)


def summary(kube: Kube, namespace: str, name: str) -> str:
    """One paragraph about an experiment, for failure messages."""
    st = status(kube, namespace, name)
    kids = children(kube, namespace, name)
    trials = [
        f"{t['metadata']['name']}:{(t.get('status') or {}).get('phase')}"
        f"({(t.get('status') or {}).get('reason') or ''} {((t.get('status') or {}).get('message') or '')[:200]})"
        for t in kids["trials"]
    ]
    pods = [f"{p['metadata']['name']}:{(p.get('status') or {}).get('phase')}" for p in kids["pods"]]
    return (
        f"phase={st.get('phase')} reason={st.get('reason')} message={st.get('message')!r}\n"
        f"conditions={st.get('conditions')}\ntrials={trials}\njobs={names(kids['jobs'])}\npods={pods}"
    )


QUICK_TRIAL = """
import sys, time
import kubenas_trial
params = kubenas_trial.parameters()
x = float(params["x"])
kubenas_trial.report(1, accuracy=x)
time.sleep(float(sys.argv[1]))
kubenas_trial.finish(accuracy=x)
"""


def quick_experiment(
    name: str, *, seconds: float = 2.0, max_trials: int = 4, parallel: int = 2, **spec: Any
) -> dict[str, Any]:
    """An Experiment whose trials use the trial SDK without training: report, sleep ``seconds``, finish."""
    doc: dict[str, Any] = {
        "apiVersion": GROUP_VERSION,
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "accuracy", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "algorithm": {"name": "RandomSearch", "seed": 1},
            "budget": {"maxTrials": max_trials, "parallelTrials": parallel},
            "earlyStopping": {"rule": "none"},
            "trialTemplate": {
                "activeDeadlineSeconds": 600,
                "spec": {
                    "containers": [
                        {
                            "name": "trial",
                            "image": os.environ.get("KUBENAS_E2E_TRIAL_IMAGE", "ghcr.io/kubenas/trial:0.1.0"),
                            "command": ["python", "-c", QUICK_TRIAL, str(seconds)],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        }
                    ]
                },
            },
        },
    }
    doc["spec"].update(spec)
    return doc


class SessionLock:
    """One e2e session per cluster at a time: a Lease other sessions wait for.

    Two sessions would apply their own CRDs over each other's and, on a cluster without nodes,
    run each other's pods on test kubelets that go away with their session. A session that
    died leaves a Lease nobody renews: it is taken over once ``DURATION`` seconds old.
    """

    NAME, NAMESPACE, DURATION = "kubenas-e2e-session", "default", 60

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.identity = f"{socket.gethostname()}-{os.getpid()}"
        self.path = path("coordination.k8s.io/v1", "leases", self.NAMESPACE, self.NAME)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spec(self) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.DURATION, "renewTime": now_micro()}

    def _try(self) -> str | None:
        """None once the Lease is ours; else who holds it."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.NAME}}
        try:
            self.kube.create(path("coordination.k8s.io/v1", "leases", self.NAMESPACE), {**body, "spec": self._spec()})
            return None
        except ApiError as err:
            if err.status != 409:
                raise
        lease = self.kube.get(self.path)
        spec = lease.get("spec") or {}
        holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
        age = time.time() - _parse_time(renewed) if renewed else float("inf")
        if holder not in (None, "", self.identity) and age < int(spec.get("leaseDurationSeconds") or self.DURATION):
            return f"{holder} (renewed {age:.0f}s ago)"
        patch = {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": self._spec()}
        try:
            self.kube.patch(self.path, patch)  # a stale resourceVersion is 409: someone else took it first
        except ApiError as err:
            if err.status == 409:
                return "another session, just now"
            raise
        return None

    def acquire(self, timeout: float = 1800.0, notify: Callable[[str], None] = print) -> None:
        deadline = time.monotonic() + timeout
        told = False
        while (holder := self._try()) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"another e2e session holds the cluster for more than {timeout:g}s: {holder}")
            if not told:
                notify(f"e2e: waiting for another session on this cluster to end: lease {self.NAMESPACE}/{self.NAME}"
                       f" held by {holder}")  # fmt: skip
                told = True
            time.sleep(5)
        self._thread = threading.Thread(target=self._renew, name="e2e-session-lock", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.DURATION / 4):
            with contextlib.suppress(Exception):  # an API server restart: the next renewal comes in time
                self.kube.patch(self.path, {"spec": {"renewTime": now_micro()}})

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        lease = self.kube.get_or_none(self.path)
        if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            body = {"kind": "DeleteOptions", "apiVersion": "v1"}
            body["preconditions"] = {"resourceVersion": lease["metadata"]["resourceVersion"]}
            with contextlib.suppress(ApiError):
                self.kube.delete(self.path, body)


def _parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (Time or MicroTime)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- volumes


def local_claim(kube: Kube, namespace: str, claim: str, directory: str, access_mode: str) -> str:
    """PVC ``claim``, bound to a new hostPath PersistentVolume on ``directory``; returns the PV's name.

    The PV is cluster-scoped: the caller deletes it (the namespace's deletion does not).
    """
    pv_name = f"{namespace}-{claim}"[:63]
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {"kubenas.io/e2e": "true"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": [access_mode],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": directory, "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {
            "accessModes": [access_mode],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    kube.create(path("v1", "persistentvolumes"), pv)
    try:
        kube.create(path("v1", "persistentvolumeclaims", namespace), pvc)
        claim_path = path("v1", "persistentvolumeclaims", namespace, claim)
        wait_for(lambda: (kube.get(claim_path).get("status") or {}).get("phase") == "Bound", 60, f"PVC {claim} Bound")
    except BaseException:
        kube.delete(path("v1", "persistentvolumes", name=pv_name))
        raise
    return pv_name
