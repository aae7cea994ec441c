"""A test kubelet: runs the pods bound to its Node as local processes.

For control planes without nodes (a real kube-apiserver, controller-manager and scheduler,
no kubelet), the e2e suite registers one Node and plays its kubelet. The rest of the cluster
is real: the scheduler binds pods to the Node, the Job controller counts them and enforces
``activeDeadlineSeconds``, the garbage collector deletes them with their owners.

For each pod bound to the Node (``spec.nodeName``), the first container's ``command`` +
``args`` run as a local process, never through a shell (``python`` is this interpreter: the
venv's, where ``kubenas_trial`` is installed; no command means the trial image's entrypoint,
``python -m kubenas_trial``). Its environment is the container's (``value``, ``valueFrom``
fieldRef / resourceFieldRef / configMapKeyRef / secretKeyRef, ``envFrom``, ``$(VAR)``
references), with what a container runtime would isolate made local:

- ``KUBENAS_TERMINATION_LOG`` and the ``terminationMessagePath`` point to a per-pod temp file;
- ``KUBENAS_METRICS_PORT`` is a distinct free port (``KUBENAS_METRICS_ADDRESS`` 127.0.0.1);
  ``status.podIP`` is 127.0.0.1;
- volumes: downwardAPI, configMap and secret volumes are written to a per-pod temp dir,
  emptyDir is a temp dir, hostPath is the local path, and so is a persistentVolumeClaim bound
  to a hostPath or local PersistentVolume; env values and args that name a path under a mount
  are rewritten to the local path (so ``KUBENAS_PARAMETERS_FILE`` works);
- ``OMP_NUM_THREADS`` follows the container's CPU limit or request (unless set);
- there is no cluster DNS: a ``MASTER_ADDR`` naming a pod of a headless Service
  (``<pod>.<service>.<namespace>.svc``, a multi-pod trial's rank 0) becomes 127.0.0.1, where every
  pod of this Node runs (so two multi-pod trials at once would share one MASTER_PORT).

Pod status is patched as a kubelet does: Running (podIP, startTime, Ready conditions,
containerStatuses running), then on exit terminated with the exit code and the termination
file's content (≤ 4 KiB; with ``FallbackToLogsOnError``, the log tail when the file is empty
and the process failed) and phase Succeeded or Failed. A pod deleted while it runs gets its
process killed (SIGTERM, then SIGKILL after its grace period, at most 10 s), phase Failed
whatever its exit code (a real kubelet's terminal phase for a deleted pod), then the final
delete with grace period 0. Conditions the kubelet does not own (``DisruptionTarget``, which
the API server adds to an evicted pod) are kept in the status it writes. The Node's Ready
condition and its Lease stay fresh.

Run alone: ``python tests/e2e/kubelet.py [--kubeconfig FILE] [--node NAME]`` (Ctrl-C stops it
and deletes the Node).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kubeapi import ApiError, Kube, now_iso, now_micro, path

log = logging.getLogger("kubenas.e2e.kubelet")

LABEL = "kubenas.io/e2e-kubelet"
MESSAGE_LIMIT = 4096  # bytes of a termination message
LOG_TAIL_LINES, LOG_TAIL_BYTES = 80, 2048  # FallbackToLogsOnError, as the kubelet does
DEFAULT_COMMAND = ["python", "-m", "kubenas_trial"]  # the trial image's ENTRYPOINT
CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "110", "nvidia.com/gpu": "8", "ephemeral-storage": "100Gi"}
LEASE_SECONDS = 40
NOT_READY_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
# Pod conditions a kubelet writes; others (DisruptionTarget) belong to whoever added them.
OWN_CONDITIONS = frozenset({"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"})
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_POD_DNS_NAME = re.compile(r"[a-z0-9-]+\.[a-z0-9-]+\.[a-z0-9-]+\.svc(\.cluster\.local)?\.?")


def default_node_name() -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "local"
    return f"kubenas-e2e-{host}"[:63].rstrip("-")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def schedulable_nodes(kube: Kube) -> list[str]:
    """Ready, schedulable nodes without NoSchedule/NoExecute taints, other than test kubelets'."""
    names = []
    for node in kube.items("/api/v1/nodes"):
        meta, spec = node["metadata"], node.get("spec") or {}
        if LABEL in (meta.get("labels") or {}) or spec.get("unschedulable"):
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (node.get("status") or {}).get("conditions") or []
        )
        tainted = any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or [])
        if ready and not tainted:
            names.append(meta["name"])
    return names


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, unknown stay as they are."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(one, text)


def cpu_threads(container: Mapping[str, Any]) -> int | None:
    resources = container.get("resources") or {}
    raw = (resources.get("limits") or {}).get("cpu") or (resources.get("requests") or {}).get("cpu")
    if raw is None:
        return None
    raw = str(raw)
    cores = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
    return max(1, math.ceil(cores))


@dataclass
class PodRun:
    """One pod's local process and its files."""

    namespace: str
    name: str
    uid: str
    pod: dict[str, Any]
    workdir: Path
    termination_log: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    reaper: threading.Thread | None = None
    started_at: str = ""
    finished: bool = False
    deleting: bool = False
    deleted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class TestKubelet:
    """Registers a Node and runs the pods bound to it (see the module docstring).

    ``start()`` returns once the Node is schedulable; ``stop()`` kills every process and
    deletes the Node and its Lease. Logs of every pod stay readable (``pod_log``) until stop.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        kube: Kube,
        node_name: str | None = None,
        *,
        python: str = sys.executable,
        root: Path | None = None,
        capacity: Mapping[str, str] | None = None,
    ) -> None:
        self.kube = kube
        self.node = node_name or default_node_name()
        self.python = python
        self.root = Path(root or tempfile.mkdtemp(prefix="kubenas-e2e-kubelet."))
        self.capacity = dict(capacity or CAPACITY)
        self.runs: dict[str, PodRun] = {}  # by pod uid
        self.runs_lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.final_deletes: set[str] = set()  # uids of unknown pods already given their final delete
        self.errors: list[str] = []  # status writes the API server refused (a test can assert none)

    # --- lifecycle

    def start(self, ready_timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._delete_stale_nodes()
        self._register_node()
        self._renew_lease()
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._pod_loop, "pods")):
            thread = threading.Thread(target=target, name=f"kubelet-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        deadline = time.monotonic() + ready_timeout
        while (taints := self._taints_or_error()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if taints:
            raise RuntimeError(f"node {self.node} still has taints after {ready_timeout}s: {taints}")
        log.info("node %s is schedulable", self.node)

    def stop(self) -> None:
        self.stopping.set()
        with self.runs_lock:
            runs = list(self.runs.values())
        for run in runs:
            self._kill(run, grace=2.0)
        for thread in self.threads:
            thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.kube.delete(path("coordination.k8s.io/v1", "leases", "kube-node-lease", self.node))
        with contextlib.suppress(Exception):
            self.kube.delete(path("v1", "nodes", name=self.node))
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TestKubelet:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def pod_log(self, namespace: str, name: str) -> str:
        """The output of every local process run for that pod name (most recent last)."""
        with self.runs_lock:
            runs = [r for r in self.runs.values() if (r.namespace, r.name) == (namespace, name)]
        return "".join(r.log_file.read_text(errors="replace") for r in runs if r.log_file.exists())

    def running(self) -> list[str]:
        """``namespace/name`` of the pods whose process is alive."""
        with self.runs_lock:
            return [r.key for r in self.runs.values() if r.proc is not None and r.proc.poll() is None]

    # --- the Node and its Lease

    def _node_status(self) -> dict[str, Any]:
        now = now_iso()
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHasSufficient{r}", "message": "test kubelet"}
            for t, r in (("MemoryPressure", "Memory"), ("DiskPressure", "Disk"), ("PIDPressure", "PID"))
        ]
        conditions.append(
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubenas e2e test kubelet"}
        )
        for c in conditions:
            c.update(lastHeartbeatTime=now, lastTransitionTime=now)
        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "kubenas e2e test kubelet",
                "containerRuntimeVersion": "local-process://0",
                "kubeletVersion": "v0.0.0-kubenas-e2e",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def _register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    LABEL: "true",
                },
            },
            "spec": {},
            "status": self._node_status(),
        }
        try:
            self.kube.create(path("v1", "nodes"), body)
        except ApiError as err:
            if err.status != 409:
                raise
        self.kube.patch(path("v1", "nodes", name=self.node, sub="status"), {"status": self._node_status()})
        self._registered = time.monotonic()
        self._node_uid = self.kube.get(path("v1", "nodes", name=self.node))["metadata"]["uid"]

    def _delete_stale_nodes(self) -> None:
        """Test kubelets' Nodes whose Lease nobody renews (a session that was killed).

        Without a node lifecycle controller nothing marks them NotReady, so the scheduler would
        keep binding pods to them.
        """
        for node in self.kube.items(path("v1", "nodes"), labelSelector=LABEL):
            name = node["metadata"]["name"]
            if name == self.node:
                continue
            lease = self.kube.get_or_none(path("coordination.k8s.io/v1", "leases", "kube-node-lease", name)) or {}
            renewed = (lease.get("spec") or {}).get("renewTime")
            if renewed is None or time.time() - _epoch(renewed) > 3 * LEASE_SECONDS:
                log.info("deleting stale test kubelet node %s (lease renewed %s)", name, renewed)
                self.kube.delete(path("v1", "nodes", name=name))

    def _renew_lease(self) -> None:
        lease_path = path("coordination.k8s.io/v1", "leases", "kube-node-lease", self.node)
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}
        try:
            self.kube.patch(lease_path, {"spec": spec})
        except ApiError as err:
            if err.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self._node_uid}
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                "spec": spec,
            }
            self.kube.create(path("coordination.k8s.io/v1", "leases", "kube-node-lease"), body)

    def _taints_or_error(self) -> list[Any]:
        try:
            return self._lift_not_ready_taints()
        except Exception as err:  # an API server that restarts
            return [f"{type(err).__name__}: {err}"]

    def _lift_not_ready_taints(self) -> list[dict[str, Any]]:
        """The Node's NoSchedule/NoExecute taints, once not-ready ones older than 5 s are lifted.

        The NodeTaint admission plugin taints every new Node not-ready; the node lifecycle
        controller lifts it once the Node is Ready. Control planes that run without that
        controller never do: after 5 s, the test kubelet lifts it itself.
        """
        node = self.kube.get(path("v1", "nodes", name=self.node))
        taints = (node.get("spec") or {}).get("taints") or []
        if time.monotonic() - self._registered > 5:
            kept = [t for t in taints if t.get("key") not in NOT_READY_TAINTS]
            if kept != taints:
                log.info("node %s: lifting %s", self.node, [t for t in taints if t not in kept])
                self.kube.patch(path("v1", "nodes", name=self.node), {"spec": {"taints": kept or None}})
                taints = kept
        return [t for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")]

    def _heartbeat_loop(self) -> None:
        beats = 0
        while not self.stopping.wait(5.0):
            beats += 1
            try:
                self._renew_lease()
                if beats % 4 == 0:
                    status_path = path("v1", "nodes", name=self.node, sub="status")
                    self.kube.patch(status_path, {"status": self._node_status()})
                    self._lift_not_ready_taints()
            except ApiError as err:
                if err.status == 404:  # the Node was deleted under us: register again
                    with contextlib.suppress(Exception):
                        self._register_node()
                log.warning("heartbeat: %s", err)
            except Exception as err:
                log.warning("heartbeat: %s", err)

    # --- pods

    def _pods_path(self) -> str:
        return "/api/v1/pods?fieldSelector=" + f"spec.nodeName%3D{self.node}"

    def _pod_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                listed = self.kube.get(self._pods_path())
                pods = listed.get("items") or []
                seen = {p["metadata"]["uid"] for p in pods}
                self.final_deletes.clear()  # a final delete that failed is tried again on each list
                for pod in pods:
                    self._handle(pod)
                self._forget_missing(seen)
                version = listed["metadata"]["resourceVersion"]
                for event in self.kube.watch(self._pods_path(), version, timeout_seconds=30):
                    if self.stopping.is_set():
                        return
                    if event["type"] == "BOOKMARK":
                        continue
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        self._gone(pod["metadata"]["uid"])
                    else:
                        self._handle(pod)
            except Exception as err:  # 410 Gone, a dropped connection, an API server restart: list again
                if not self.stopping.is_set():
                    log.info("pod watch: %s; listing again", err)
                    self.stopping.wait(1.0)

    def _forget_missing(self, seen: set[str]) -> None:
        with self.runs_lock:
            missing = [uid for uid in self.runs if uid not in seen]
        for uid in missing:
            self._gone(uid)

    def _gone(self, uid: str) -> None:
        """The pod object is gone (force-deleted, or the final delete went through): its process must be too."""
        with self.runs_lock:
            run = self.runs.get(uid)
        if run is not None and not run.deleted:
            run.deleted = True
            self._kill(run, grace=0.0)

    def _handle(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        phase = (pod.get("status") or {}).get("phase")
        with self.runs_lock:
            run = self.runs.get(uid)
        if run is not None:
            run.pod = pod  # conditions others add (DisruptionTarget) are kept in the status we write
        if meta.get("deletionTimestamp"):
            if run is None:
                if uid not in self.final_deletes:
                    self.final_deletes.add(uid)
                    self._final_delete(pod)
            elif not run.deleting:
                run.deleting = True
                grace = float(pod["spec"].get("terminationGracePeriodSeconds") or 30)
                threading.Thread(target=self._delete_running, args=(run, min(grace, 10.0)), daemon=True).start()
            return
        if run is not None or phase in ("Succeeded", "Failed"):
            return
        if phase == "Running":  # bound to this Node by an earlier kubelet that is gone
            self._patch_status(pod, self._orphaned_status(pod))
            return
        self._start(pod)

    def _start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        workdir = Path(tempfile.mkdtemp(prefix=f"{meta['namespace']}.{meta['name']}.", dir=self.root))
        run = PodRun(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            pod=pod,
            workdir=workdir,
            termination_log=workdir / "termination-log",
            log_file=workdir / "output.log",
        )
        with self.runs_lock:
            self.runs[run.uid] = run
        container = spec["containers"][0]
        try:
            argv, env, cwd = self._process_spec(pod, container, run)
        except Exception as err:  # a configMap or secret that does not exist, a bad fieldRef...
            self._fail_to_start(run, "CreateContainerConfigError", str(err))
            return
        run.log_file.write_text(f"$ {' '.join(argv)}\n")
        run.started_at = now_iso()
        try:
            with open(run.log_file, "ab") as out:
                run.proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed with its children
                )
        except OSError as err:
            self._fail_to_start(run, "StartError", f"failed to start {argv[0]!r}: {err}")
            return
        log.info("%s: started pid %s: %s", run.key, run.proc.pid, " ".join(argv))
        self._patch_status(pod, self._running_status(pod, run))
        run.reaper = threading.Thread(target=self._reap, args=(run,), name=f"reap-{run.key}", daemon=True)
        run.reaper.start()

    def _reap(self, run: PodRun) -> None:
        assert run.proc is not None
        code = run.proc.wait()
        if code < 0:
            code = 128 - code  # killed by a signal: 128 + signal number, as a container runtime says
        with run.lock:
            if run.finished:
                return
            run.finished = True
        log.info("%s: exited %s", run.key, code)
        if not run.deleted:
            self._patch_status(run.pod, self._terminated_status(run, code))

    def _delete_running(self, run: PodRun, grace: float) -> None:
        """A graceful delete: stop the process, report its end, then the final delete (grace period 0)."""
        self._kill(run, grace)
        if run.reaper is not None:
            run.reaper.join(timeout=30)
        if not run.deleted:
            self._final_delete(run.pod)

    def _kill(self, run: PodRun, grace: float) -> None:
        proc = run.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        # The process group may hold children that outlived the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _final_delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        body["preconditions"] = {"uid": meta["uid"]}
        try:
            self.kube.delete(path("v1", "pods", meta["namespace"], meta["name"]), body)
        except ApiError as err:
            if err.status != 409:  # 409: a newer pod of the same name
                log.warning("%s/%s: final delete: %s", meta["namespace"], meta["name"], err)

    def _fail_to_start(self, run: PodRun, reason: str, message: str) -> None:
        log.warning("%s: %s: %s", run.key, reason, message)
        run.finished = True
        run.log_file.write_text(f"{reason}: {message}\n")
        status = self._terminated_status(run, 128, reason=reason, message=message[:MESSAGE_LIMIT])
        self._patch_status(run.pod, status)

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"metadata": {"uid": meta["uid"]}, "status": status}
        try:
            self.kube.patch(path("v1", "pods", meta["namespace"], meta["name"], sub="status"), body)
        except ApiError as err:
            if err.status == 404:
                return
            message = f"{meta['namespace']}/{meta['name']}: status {status.get('phase')}: {err}"
            log.warning("%s", message)
            self.errors.append(message)

    # --- what runs, and with which environment

    def _process_spec(
        self, pod: dict[str, Any], container: dict[str, Any], run: PodRun
    ) -> tuple[list[str], dict[str, str], str]:
        mounts = self._mounts(pod, container, run)
        # The termination message file is the runtime's bind mount: here a file in the pod's temp dir.
        mounts[container.get("terminationMessagePath") or "/dev/termination-log"] = str(run.termination_log)

        def local(value: str) -> str:
            for mount_path in sorted(mounts, key=len, reverse=True):
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    return mounts[mount_path] + value[len(mount_path.rstrip("/")) :]
            return value

        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            for key, value in self._env_from(pod, source).items():
                env[prefix + key] = value
        for entry in container.get("env") or []:
            if "valueFrom" in entry:
                value = self._value_from(pod, container, entry["valueFrom"])
                if value is None:
                    continue
            else:
                value = expand(str(entry.get("value", "")), env)
            env[entry["name"]] = local(value)
        env.setdefault("HOSTNAME", pod["metadata"]["name"])
        if _POD_DNS_NAME.fullmatch(env.get("MASTER_ADDR", "")):
            env["MASTER_ADDR"] = "127.0.0.1"  # the cluster DNS's answer, had there been one: the pod runs here
        threads = cpu_threads(container)
        if threads is not None:
            env.setdefault("OMP_NUM_THREADS", str(threads))
        # What a container runtime isolates and this host shares: a file, a port.
        env["KUBENAS_TERMINATION_LOG"] = str(run.termination_log)
        env["KUBENAS_METRICS_PORT"] = str(free_port())
        env["KUBENAS_METRICS_ADDRESS"] = "127.0.0.1"
        process_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER")}
        process_env["PATH"] = os.pathsep.join([str(Path(self.python).parent), process_env.get("PATH", "/usr/bin:/bin")])
        tmp = run.workdir / "tmp"
        tmp.mkdir()
        process_env["TMPDIR"] = str(tmp)
        process_env.update(env)

        command = list(container.get("command") or [])
        args = list(container.get("args") or [])
        if not command:
            command = list(DEFAULT_COMMAND)
        argv = [local(expand(str(a), env)) for a in [*command, *args]]
        if re.fullmatch(r"python(3(\.\d+)?)?", argv[0]):
            argv[0] = self.python
        elif "/" not in argv[0]:
            argv[0] = shutil.which(argv[0], path=process_env["PATH"]) or argv[0]
        working_dir = container.get("workingDir")
        cwd = working_dir if working_dir and os.path.isdir(working_dir) else str(run.workdir)
        return argv, process_env, cwd

    def _mounts(self, pod: dict[str, Any], container: dict[str, Any], run: PodRun) -> dict[str, str]:
        """mountPath → local path, with the content a kubelet would put there."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                continue
            if "hostPath" in volume:
                local = volume["hostPath"]["path"]
            elif "persistentVolumeClaim" in volume:
                local = self._claim_path(pod, volume["persistentVolumeClaim"]["claimName"])
            else:
                local = str(run.workdir / "volumes" / mount["name"])
                if not os.path.exists(local):
                    os.makedirs(local)
                    for name, content in self._volume_files(pod, volume).items():
                        target = Path(local) / name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(content)
            if mount.get("subPath"):
                local = os.path.join(local, mount["subPath"])
            mounts[mount["mountPath"]] = local
        return mounts

    def _claim_path(self, pod: dict[str, Any], claim: str) -> str:
        """A claim bound to a hostPath or local PersistentVolume is that local directory."""
        pvc = self.kube.get_or_none(path("v1", "persistentvolumeclaims", pod["metadata"]["namespace"], claim))
        if pvc is None or not (pvc.get("spec") or {}).get("volumeName"):
            raise RuntimeError(f'persistentvolumeclaim "{claim}" is not bound')
        pv = self.kube.get(path("v1", "persistentvolumes", name=pvc["spec"]["volumeName"]))
        local = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
        if not local:
            raise RuntimeError(
                f"volume {pv['metadata']['name']} is neither hostPath nor local: the test kubelet cannot mount it"
            )
        return str(local)

    def _volume_files(self, pod: dict[str, Any], volume: Mapping[str, Any]) -> dict[str, bytes]:
        projected = "projected" in volume
        sources: list[Mapping[str, Any]] = (volume["projected"].get("sources") or []) if projected else [volume]
        files: dict[str, bytes] = {}
        for source in sources:
            if "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    if "fieldRef" in item:
                        value = self._field(pod, item["fieldRef"]["fieldPath"])
                    else:
                        value = self._resource(pod, None, item.get("resourceFieldRef") or {})
                    files[item["path"]] = (value or "").encode()
            for kind in ("configMap", "secret"):
                if kind in source:
                    files.update(self._key_files(pod, kind, source[kind]))
        return files

    def _key_files(self, pod: dict[str, Any], kind: str, ref: Mapping[str, Any]) -> dict[str, bytes]:
        data = self._data(pod, kind, ref.get("name") or ref.get("secretName") or "", bool(ref.get("optional")))
        items = ref.get("items")
        if not items:
            return {k: v.encode() for k, v in data.items()}
        return {i["path"]: data[i["key"]].encode() for i in items if i["key"] in data}

    def _data(self, pod: dict[str, Any], kind: str, name: str, optional: bool) -> dict[str, str]:
        plural = "configmaps" if kind in ("configMap", "configMapRef", "configMapKeyRef") else "secrets"
        obj = self.kube.get_or_none(path("v1", plural, pod["metadata"]["namespace"], name))
        if obj is None:
            if optional:
                return {}
            raise RuntimeError(f'{plural[:-1]} "{name}" not found')
        data = dict(obj.get("data") or {})
        if plural == "secrets":
            import base64

            data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        return data

    def _env_from(self, pod: dict[str, Any], source: Mapping[str, Any]) -> dict[str, str]:
        for kind in ("configMapRef", "secretRef"):
            if kind in source:
                ref = source[kind]
                return self._data(pod, kind, ref["name"], bool(ref.get("optional")))
        return {}

    def _value_from(self, pod: dict[str, Any], container: dict[str, Any], ref: Mapping[str, Any]) -> str | None:
        if "fieldRef" in ref:
            return self._field(pod, ref["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in ref:
            return self._resource(pod, container, ref["resourceFieldRef"])
        for kind in ("configMapKeyRef", "secretKeyRef"):
            if kind in ref:
                key_ref = ref[kind]
                data = self._data(pod, kind, key_ref["name"], bool(key_ref.get("optional")))
                if key_ref["key"] not in data:
                    if key_ref.get("optional"):
                        return None
                    raise RuntimeError(f"couldn't find key {key_ref['key']} in {key_ref['name']}")
                return data[key_ref["key"]]
        return None

    def _field(self, pod: dict[str, Any], field_path: str) -> str:
        meta = pod["metadata"]
        m = re.fullmatch(r"metadata\.(annotations|labels)\['(.+)'\]", field_path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        if field_path in ("metadata.annotations", "metadata.labels"):
            pairs = (meta.get(field_path.split(".")[1]) or {}).items()
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(pairs))
        simple = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": pod["spec"].get("nodeName"),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
        }
        if field_path not in simple:
            raise RuntimeError(f"unsupported fieldPath {field_path!r}")
        return str(simple[field_path] or "")

    def _resource(self, pod: dict[str, Any], container: Mapping[str, Any] | None, ref: Mapping[str, Any]) -> str:
        if container is None or ref.get("containerName"):
            name = ref.get("containerName")
            container = next((c for c in pod["spec"]["containers"] if c["name"] == name), pod["spec"]["containers"][0])
        kind, _, resource = str(ref.get("resource", "")).partition(".")
        raw = ((container.get("resources") or {}).get(kind) or {}).get(resource)
        if raw is None:  # unset limits default to the node's allocatable
            raw = self.capacity.get(resource, "0")
        return str(_quantity(str(raw), str(ref.get("divisor") or "1")))

    # --- pod status, as a kubelet writes it

    def _containers(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        return list(pod["spec"]["containers"])

    def _conditions(self, pod: dict[str, Any], ready: bool, reason: str | None = None) -> list[dict[str, Any]]:
        now = now_iso()
        out = []
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"):
            status = "True" if (kind not in ("Ready", "ContainersReady") or ready) else "False"
            if kind == "PodReadyToStartContainers" and reason == "PodCompleted":
                status = "False"
            cond: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": now}
            if status == "False" and reason:
                cond["reason"] = reason
            out.append(cond)
        return out

    def _container_status(self, container: Mapping[str, Any], state: dict[str, Any], ready: bool) -> dict[str, Any]:
        return {
            "name": container["name"],
            "image": container.get("image") or "local",
            "imageID": "",
            "containerID": f"local://{self.node}/{container['name']}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": 0,
            "state": state,
        }

    def _init_statuses(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        """Init containers are not run: each is reported as completed."""
        done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now_iso(), "finishedAt": now_iso()}}
        return [self._container_status(c, done, False) for c in pod["spec"].get("initContainers") or []]

    def _running_status(self, pod: dict[str, Any], run: PodRun) -> dict[str, Any]:
        state = {"running": {"startedAt": run.started_at}}
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.started_at,
            "conditions": self._conditions(pod, ready=True),
            "containerStatuses": [self._container_status(c, state, True) for c in self._containers(pod)],
        }
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = self._init_statuses(pod)
        return status

    def _terminated_status(
        self, run: PodRun, code: int, *, reason: str | None = None, message: str | None = None
    ) -> dict[str, Any]:
        pod = run.pod
        trial = pod["spec"]["containers"][0]
        if message is None:
            message = self._message(run, trial, code)
        others = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") not in OWN_CONDITIONS]
        finished = now_iso()
        started = run.started_at or finished
        statuses = []
        for i, container in enumerate(self._containers(pod)):
            exit_code = code if i == 0 else 0
            terminated: dict[str, Any] = {
                "exitCode": exit_code,
                "reason": (reason or ("Completed" if exit_code == 0 else "Error")) if i == 0 else "Completed",
                "startedAt": started,
                "finishedAt": finished,
                "containerID": f"local://{self.node}/{container['name']}",
            }
            if i == 0 and message:
                terminated["message"] = message
            statuses.append(self._container_status(container, {"terminated": terminated}, False))
        status: dict[str, Any] = {
            "phase": "Succeeded" if code == 0 and not run.deleting else "Failed",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": started,
            "conditions": self._conditions(pod, ready=False, reason="PodCompleted") + others,
            "containerStatuses": statuses,
        }
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = self._init_statuses(pod)
        return status

    def _orphaned_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        run = PodRun(
            namespace=pod["metadata"]["namespace"],
            name=pod["metadata"]["name"],
            uid=pod["metadata"]["uid"],
            pod=pod,
            workdir=self.root,
            termination_log=self.root / "none",
            log_file=self.root / "none",
        )
        message = "the test kubelet that ran this pod is gone"
        return self._terminated_status(run, 137, reason="ContainerStatusUnknown", message=message)

    def _message(self, run: PodRun, container: Mapping[str, Any], code: int) -> str:
        message = ""
        if run.termination_log.exists():
            message = run.termination_log.read_bytes()[:MESSAGE_LIMIT].decode("utf-8", "replace")
        if not message and code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = run.log_file.read_bytes().splitlines(keepends=True)[1:]  # not our "$ argv" line
            tail = b"".join(lines[-LOG_TAIL_LINES:])[-LOG_TAIL_BYTES:]
            message = tail.decode("utf-8", "replace")
        return message


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _quantity(raw: str, divisor: str) -> int:
    """A resource quantity divided by a divisor, rounded up (as the downward API does)."""
    return math.ceil(_parse_quantity(raw) / _parse_quantity(divisor))


_SUFFIXES = {
    "m": 1e-3,
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def _parse_quantity(raw: str) -> float:
    m = re.fullmatch(r"([0-9.eE+-]+?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", raw.strip())
    if not m:
        raise ValueError(f"not a quantity: {raw!r}")
    return float(m.group(1)) * _SUFFIXES[m.group(2) or ""]


def main(argv: Iterable[str] | None = None, *, on_ready: Callable[[TestKubelet], None] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or ~/.kube/config")
    parser.add_argument("--node", default=None, help=f"node name (default {default_node_name()})")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    kubelet = TestKubelet(Kube(args.kubeconfig), args.node)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with kubelet:
        if on_ready is not None:
            on_ready(kubelet)
        log.info("node %s ready; Ctrl-C stops", kubelet.node)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
