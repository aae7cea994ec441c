"""apply→first Job on a real API server: kubenas's operator beside a trivial kopf operator, same run.

Needs a cluster in ``$KUBECONFIG`` where you may create namespaces and CRDs (a kind or
dev cluster; the CRDs in crds/ are applied if missing). Both operators run at once, each as
its own process serving its own fresh namespace, and their applies alternate so both see
the same load; the harness watches Jobs in each namespace and stamps the moment each
Experiment's first Job appears, measured from just before its POST. The trivial operator
(benchmarks/trivial_operator.py) has kopf's default settings and creates one Job.

    python benchmarks/apply_latency.py                 # 10 single applies, then 50 at once, for each operator
    python benchmarks/apply_latency.py --single 20 --burst 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "kubenas.io", "v1alpha1", "experiments"


def experiment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "accuracy", "goal": "maximize"},
            "parameters": [{"name": "width", "type": "int", "min": 1, "max": 50}],
            "budget": {"maxTrials": 1, "parallelTrials": 1},
            "trialTemplate": {"spec": {"containers": [{"name": "trial", "image": "busybox", "command": ["true"]}]}},
        },
    }


def ensure_crds() -> None:
    ext = kubernetes.client.ApiextensionsV1Api()
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as err:
            if err.status != 409:
                raise
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        for _ in range(100):
            crd = ext.read_custom_resource_definition(name)
            if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
                break
            time.sleep(0.1)


class JobClock:
    """Watches Jobs in a namespace and records when each experiment's first Job appeared."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._watch = kubernetes.watch.Watch()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.5)  # the watch is established before anything is applied

    def _run(self) -> None:
        try:
            self._stream()
        except Exception:  # the namespace is deleted under the watch at the end
            if not self._stopping:
                raise

    def _stream(self) -> None:
        batch = kubernetes.client.BatchV1Api()
        for event in self._watch.stream(batch.list_namespaced_job, self.namespace, timeout_seconds=3600):
            labels = event["object"].metadata.labels or {}
            exp = labels.get("kubenas.io/experiment")
            if exp and event["type"] == "ADDED":
                with self._cond:
                    self.seen.setdefault(exp, time.perf_counter())
                    self._cond.notify_all()

    def wait(self, names: list[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(n in self.seen for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in self.seen]
                    raise TimeoutError(f"no Job within {timeout}s for {missing[:5]}")
                self._cond.wait(left)

    def stop(self) -> None:
        self._stopping = True
        self._watch.stop()


def apply_and_time(namespace: str, clock: JobClock, names: list[str]) -> list[float]:
    """POST every experiment at once (one thread each), then seconds from each POST to its first Job."""
    custom = kubernetes.client.CustomObjectsApi()
    posted: dict[str, float] = {}

    def post(name: str) -> None:
        posted[name] = time.perf_counter()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, experiment(name))

    with ThreadPoolExecutor(max_workers=min(len(names), 50)) as pool:
        list(pool.map(post, names))
    clock.wait(names)
    return [clock.seen[n] - posted[n] for n in names]


def start_operator(kind: str, namespace: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBENAS_OPERATOR_METRICS_PORT": "0"}
    if kind == "trivial":
        cmd = [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "--namespace",
            namespace,
            str(ROOT / "benchmarks" / "trivial_operator.py"),
        ]
    else:
        cmd = [sys.executable, "-m", "kubenas.cli", "operator", "--namespace", namespace]
    log = open(ROOT / f"benchmarks/.apply_latency.{kind}.log", "wb")  # noqa: SIM115 (lives as long as the process)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


class Served:
    """One operator process serving a fresh namespace, with a Job clock on that namespace."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.namespace = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
        kubernetes.client.CoreV1Api().create_namespace({"metadata": {"name": self.namespace}})
        self.clock = JobClock(self.namespace)
        self.process = start_operator(kind, self.namespace)

    def time(self, names: list[str]) -> list[float]:
        return apply_and_time(self.namespace, self.clock, names)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.clock.stop()
        kubernetes.client.CoreV1Api().delete_namespace(self.namespace)


def measure(single: int, burst: int) -> dict[str, dict[str, list[float]]]:
    """Both operators run at once; their applies alternate, so both see the same machine and server load."""
    served = [Served("trivial"), Served("kubenas")]
    results: dict[str, dict[str, list[float]]] = {s.kind: {"single": [], "burst": []} for s in served}
    try:
        for s in served:
            s.time(["warmup"])  # the operator is up and its watches are running
        for i in range(single):
            for s in served:
                results[s.kind]["single"] += s.time([f"single-{i}"])
                time.sleep(0.3)
        for s in served:
            results[s.kind]["burst"] = s.time([f"burst-{i}" for i in range(burst)])
            time.sleep(2)
        return results
    finally:
        for s in served:
            s.close()


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):,.0f} ms, p95 {p95:,.0f} ms, max {ms[-1]:,.0f} ms (n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single", type=int, default=10, help="experiments applied one at a time")
    parser.add_argument("--burst", type=int, default=50, help="experiments applied at once")
    args = parser.parse_args()
    if not os.environ.get("KUBECONFIG"):
        print("apply_latency: skipped (no $KUBECONFIG: it needs a real API server)")
        return 0
    kubernetes.config.load_kube_config()
    ensure_crds()
    results = measure(args.single, args.burst)
    for mode in ("single", "burst"):
        ratio = statistics.median(results["kubenas"][mode]) / statistics.median(results["trivial"][mode])
        for kind in ("trivial", "kubenas"):
            print(f"{mode:6} {kind:8} {summary(results[kind][mode])}")
        print(f"{mode:6} kubenas / trivial (p50): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
