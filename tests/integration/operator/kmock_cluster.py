"""The test's half of the cluster: an API emulator with server-side metadata, and a fake kubelet.

kmock stores objects but assigns no uid, resourceVersion, creationTimestamp or generation
and has no Job controller, scheduler, kubelet or garbage collector. ``Emulator`` adds the
metadata (and optimistic concurrency on merge patches that carry a resourceVersion);
``Kubelet`` plays the Job controller, scheduler, kubelet and garbage collector for trial Jobs,
ending each trial as a test-supplied ``behaviour`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kmock
from kmock._internal.k8s import KubernetesError
from kubenas import api

NAMESPACE = "team"
RESOURCES: dict[str, tuple[str, bool, set[str]]] = {
    f"{api.GROUP}/{api.VERSION}/experiments": ("Experiment", True, {"status"}),
    f"{api.GROUP}/{api.VERSION}/trials": ("Trial", True, {"status"}),
    "batch/v1/jobs": ("Job", True, {"status"}),
    "v1/pods": ("Pod", True, {"status"}),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/services": ("Service", True, set()),
    "v1/events": ("Event", True, set()),
    "v1/namespaces": ("Namespace", False, set()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, set()),
}
VERBS = {"list", "watch", "get", "patch", "create", "delete", "update"}


def now_iso(delta: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).isoformat().replace("+00:00", "Z")


class Emulator(kmock.KubernetesEmulator):
    """kmock plus what an API server adds: uid, resourceVersion, creationTimestamp, generation.

    A merge patch that names a stale ``metadata.resourceVersion`` gets 409 Conflict.
    ``fail_creates`` maps a plural to a count of POSTs to refuse with 500 (crash points).
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        self.fail_creates: dict[str, int] = {}
        # plural -> (POSTs to refuse with 422 Invalid, the server's message, whether dry runs are refused too)
        self.refuse_creates: dict[str, tuple[int, str, bool]] = {}
        self.refused: Counter[str] = Counter()  # plural -> POSTs refused by refuse_creates
        self.dry_runs: Counter[str] = Counter()  # plural -> POSTs with dryRun=All (answered, never stored)
        self.writes: list[tuple[str, str]] = []  # (action, "plural/name") of every write
        self.conflict_updates: dict[str, int] = {}  # plural -> PATCHes to refuse with 409 Conflict
        self.expire_watches: dict[str, int] = {}  # plural -> watches to end with 410 Gone after the initial list
        self.undiscoverable: set[str] = set()  # plurals left out of discovery (as a CRD not installed yet)
        self.forbid_lists: set[str] = set()  # plurals whose LIST answers 403 Forbidden (as missing RBAC would)
        self.requests: Counter[tuple[str, str]] = Counter()  # (action, plural) of every request
        self.by_agent: Counter[tuple[str, str, str]] = Counter()  # (kopf|kubenas|other, action, plural)
        for path, (kind, namespaced, subresources) in RESOURCES.items():
            info = self.resources[path]
            info.kind, info.namespaced, info.verbs, info.subresources = kind, namespaced, VERBS, subresources

    def _get_resources(self) -> list[Any]:
        return [r for r in super()._get_resources() if r.plural not in self.undiscoverable]

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action == kmock.action.CREATE:
            plural = request.resource.plural
            dry_run = (request.params or {}).get("dryRun") == "All"
            refusals, message, dry_runs_too = self.refuse_creates.get(plural, (0, "", True))
            if refusals > 0 and (dry_runs_too or not dry_run):
                self.refuse_creates[plural] = (refusals - 1, message, dry_runs_too)
                self.refused[plural] += 1
                raise KubernetesError(422, "Invalid", message)
            if dry_run:  # admitted, not stored, not counted as a write
                self.dry_runs[plural] += 1
                return aiohttp.web.json_response(request.data)
        if request.resource is not None:
            self.requests[str(request.action.value), request.resource.plural] += 1
            self.by_agent[_agent(request.headers), str(request.action.value), request.resource.plural] += 1
            if request.action == kmock.action.LIST and request.resource.plural in self.forbid_lists:
                raise KubernetesError(403, "Forbidden", f"injected: cannot list {request.resource.plural}")
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
            self.writes.append((str(request.action.value), f"{request.resource.plural}/{name}"))
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                plural = request.resource.plural
                if self.fail_creates.get(plural, 0) > 0:
                    self.fail_creates[plural] -= 1
                    raise KubernetesError(500, "InternalError", f"injected failure creating {plural}")
                meta = request.data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now_iso())
                meta["resourceVersion"] = str(next(self._versions))
                meta["generation"] = 1
            elif request.action == kmock.action.UPDATE:
                plural = request.resource.plural
                if self.conflict_updates.get(plural, 0) > 0:
                    self.conflict_updates[plural] -= 1
                    raise KubernetesError(409, "Conflict", f"injected conflict on {plural}/{request.name}")
                self._stamp_update(request)
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        """kmock ignores labelSelector; an API server filters lists by it (and large benchmarks depend on it)."""
        payload = await super()._serve_list(request)
        selector = (request.params or {}).get("labelSelector")
        if selector and isinstance(payload, dict):
            payload["items"] = [o for o in payload["items"] if _selected(o, selector)]
        return payload

    async def _serve_watch(self, request: Any) -> Any:
        plural = request.resource.plural if request.resource is not None else ""
        if self.expire_watches.get(plural, 0) > 0:
            self.expire_watches[plural] -= 1
            yield b""
            gone = {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version",
            }
            yield {"type": "ERROR", "object": gone}
            return
        async for event in super()._serve_watch(request):
            yield event

    def _stamp_update(self, request: Any) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        current = dict(self.objects[key].raw.get("metadata") or {})
        meta = request.data.setdefault("metadata", {}) if request.data is not None else {}
        if not isinstance(meta, dict):
            return
        wanted = meta.get("resourceVersion")
        if wanted is not None and wanted != current.get("resourceVersion"):
            raise KubernetesError(409, "Conflict", "the object has been modified; apply to the latest version")
        meta["resourceVersion"] = str(next(self._versions))
        if "spec" in request.data and request.subresource is None:
            meta["generation"] = int(current.get("generation") or 1) + 1


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key) != value
        elif "=" in term:
            key, value = term.split("=", 1)
            ok = labels.get(key.rstrip("=")) == value
        elif term.startswith("!"):
            ok = term[1:] not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


def _agent(headers: Any) -> str:
    agent = str((headers or {}).get("User-Agent") or (headers or {}).get("user-agent") or "")
    return "kopf" if agent.startswith("kopf") else "kubenas" if agent.startswith("kubenas-operator") else "other"


@dataclass(frozen=True)
class Outcome:
    """How the fake kubelet ends a trial.

    kind: ``exit`` (exit_code + message), ``oom``, ``deadline``, ``unschedulable``, ``image`` or ``hang``.
    """

    kind: str = "exit"
    exit_code: int = 0
    message: str = ""
    delay: float = 0.0


Behaviour = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Outcome]]
"""(parameters, job) -> Outcome; may run a real process. For a pod of an Indexed Job, the job's
template carries that pod's completion index (:func:`completion_index`)."""

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def completion_index(job: dict[str, Any]) -> int | None:
    """The completion index of the pod a behaviour is asked about (None: not an Indexed Job)."""
    raw = job["spec"]["template"]["metadata"].get("annotations", {}).get(COMPLETION_INDEX)
    return None if raw is None else int(raw)


def _for_index(job: dict[str, Any], index: int) -> dict[str, Any]:
    """``job`` as pod ``index`` of an Indexed Job sees it: the index annotation on its template."""
    template = {**job["spec"]["template"]}
    meta = {**template["metadata"]}
    meta["annotations"] = {**meta.get("annotations", {}), COMPLETION_INDEX: str(index)}
    template["metadata"] = meta
    return {**job, "spec": {**job["spec"], "template": template}}


def metrics_result(**values: float) -> Outcome:
    return Outcome(message=json.dumps(values))


class Kubelet:
    """Plays the Job controller, scheduler, kubelet and garbage collector over HTTP.

    Every Job gets one Pod; the Pod runs (podIP 127.0.0.1) until ``behaviour`` returns,
    then the Pod and Job get the states a real cluster gives them. An Indexed Job gets one Pod
    per index (``<job>-<i>-pod``, the index annotated as the Job controller does); it completes
    when every index succeeded and fails at the first pod that fails, its other pods stopped
    (what ``backoffLimitPerIndex: 0`` with ``maxFailedIndexes: 0`` does). A suspended Job (a
    queue has not admitted it) gets no Pod, and loses its Pods when suspended again. A Pod that
    failed with a condition the Job's ``podFailurePolicy`` ignores (``DisruptionTarget``, set by
    :meth:`disrupt`) is replaced by a new one (``<job>-pod-<attempt>``), as the Job controller does.
    """

    def __init__(self, url: str, behaviour: Behaviour, interval: float = 0.05, *, running_first: bool = False) -> None:
        self.url = url.rstrip("/")
        self.running_first = running_first  # the pod runs while ``behaviour`` does (a real process)
        self.behaviour = behaviour
        self.interval = interval
        self.paused = False
        self._running: dict[str, asyncio.Task[None]] = {}
        self._attempts: Counter[str] = Counter()  # job name -> pods created for it
        self._ranks: dict[str, dict[int, int | None]] = {}  # Indexed Job -> index -> exit code (None: running)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Kubelet:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        tasks = [t for t in [self._task, *self._running.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert self._session is not None
        await self._session.close()

    async def request(self, method: str, path: str, body: Any = None, patch: bool = False) -> Any:
        assert self._session is not None
        headers = {"Content-Type": "application/merge-patch+json" if patch else "application/json"}
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.url + path, data=data, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]}")
            return json.loads(text) if text else None

    async def items(self, path: str) -> list[dict[str, Any]]:
        return (await self.request("GET", path))["items"]

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(RuntimeError, aiohttp.ClientError):
                if not self.paused:
                    await self._tick()
            await asyncio.sleep(self.interval)

    async def _tick(self) -> None:
        jobs = {j["metadata"]["name"]: j for j in await self.items(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")}
        pods = await self.items(f"/api/v1/namespaces/{NAMESPACE}/pods")
        for pod in pods:  # garbage collection by owner
            if pod["metadata"]["labels"].get("job-name") not in jobs:
                await self.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}")
                task = self._running.pop(pod["metadata"]["name"], None)
                if task is not None:
                    task.cancel()
        for name, job in jobs.items():
            mine = [p for p in pods if p["metadata"]["labels"].get("job-name") == name]
            if job["spec"].get("suspend"):
                await self._suspend(job, mine)
                continue
            if any(not _ignored_failure(job, p) for p in mine) or _ended(job):
                continue
            if _condition(job, "Suspended"):
                resumed = {"type": "Suspended", "status": "False", "reason": "JobResumed"}
                await self._job_status(name, {"conditions": [resumed]})
            if job["spec"].get("completionMode") == "Indexed":
                await self._start_indexed(job)
                continue
            self._attempts[name] += 1
            attempt = self._attempts[name]
            pod_name = f"{name}-pod" if attempt == 1 else f"{name}-pod-{attempt}"
            await self.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", _pod(job, pod_name))
            self._running[pod_name] = asyncio.create_task(self._run(job, pod_name))

    async def _suspend(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        """The Job controller on a suspended Job: its Pods deleted, condition Suspended."""
        for pod in pods:
            task = self._running.pop(pod["metadata"]["name"], None)
            if task is not None:
                task.cancel()
            await self.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}")
        if not _condition(job, "Suspended"):
            suspended = {"type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended"}
            await self._job_status(job["metadata"]["name"], {"conditions": [suspended], "active": 0})

    async def disrupt(self, pod_name: str, reason: str = "EvictionByEvictionAPI", message: str = "evicted") -> None:
        """End a Pod as a disruption does: its process killed, phase Failed, condition ``DisruptionTarget``."""
        task = self._running.pop(pod_name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}"
        pod = await self.request("GET", path)
        container = pod["spec"]["containers"][0]["name"]
        state = {"terminated": {"exitCode": 143, "reason": "Error", "finishedAt": now_iso()}}
        cond = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_iso(),
        }
        status = {"phase": "Failed", "conditions": [cond], "containerStatuses": [{"name": container, "state": state}]}
        await self._pod_status(pod_name, status)

    async def _start_indexed(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        self._ranks[name] = dict.fromkeys(range(int(job["spec"]["completions"])))
        for index in self._ranks[name]:
            seen = _for_index(job, index)
            pod_name = f"{name}-{index}-pod"
            await self.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", _pod(seen, pod_name))
            self._running[pod_name] = asyncio.create_task(self._run(seen, pod_name))

    async def _run(self, job: dict[str, Any], pod_name: str) -> None:
        template = job["spec"]["template"]
        params = json.loads(template["metadata"]["annotations"]["kubenas.io/parameters"])
        if self.running_first:
            await self._pod_status(pod_name, _running(job))
        outcome = await self.behaviour(params, job)
        if outcome.kind == "unschedulable":
            await self._pod_status(pod_name, _unschedulable())
            return
        await self._pod_status(pod_name, _running(job))
        if outcome.kind == "image":
            await self._pod_status(pod_name, _waiting(job, "ImagePullBackOff", "Back-off pulling image"))
            return
        if outcome.kind == "hang":
            return
        await asyncio.sleep(outcome.delay)
        await self.finish(job, pod_name, outcome)

    async def finish(self, job: dict[str, Any], pod_name: str, outcome: Outcome) -> None:
        name = job["metadata"]["name"]
        index = completion_index(job)
        if index is not None:
            await self._finish_index(job, pod_name, index, outcome)
            return
        if outcome.kind == "deadline":
            await self._pod_status(pod_name, _terminated(job, 143, "Error", "", phase="Failed"))
            cond = {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
            }
            await self._job_status(name, {"conditions": [cond], "failed": 1, "active": 0})
            return
        code = 137 if outcome.kind == "oom" else outcome.exit_code
        reason = "OOMKilled" if outcome.kind == "oom" else ("Completed" if code == 0 else "Error")
        phase = "Succeeded" if code == 0 else "Failed"
        await self._pod_status(pod_name, _terminated(job, code, reason, outcome.message, phase=phase))
        if code == 0:
            cond = {"type": "Complete", "status": "True"}
            status = {"conditions": [cond], "succeeded": 1, "active": 0, "completionTime": now_iso()}
        else:
            cond = {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
            status = {"conditions": [cond], "failed": 1, "active": 0}
        await self._job_status(name, status)

    async def _finish_index(self, job: dict[str, Any], pod_name: str, index: int, outcome: Outcome) -> None:
        name = job["metadata"]["name"]
        code = 137 if outcome.kind == "oom" else outcome.exit_code
        reason = "OOMKilled" if outcome.kind == "oom" else ("Completed" if code == 0 else "Error")
        ranks = self._ranks[name]
        ranks[index] = code
        phase = "Failed" if code else "Succeeded"
        await self._pod_status(pod_name, _terminated(job, code, reason, outcome.message, phase=phase))
        if code != 0:
            for other, other_code in ranks.items():  # the Job controller stops the other pods
                if other_code is None:
                    ranks[other] = 143
                    task = self._running.pop(f"{name}-{other}-pod", None)
                    if task is not None:
                        task.cancel()
                    stopped = _terminated(job, 143, "Error", "", phase="Failed")
                    await self._pod_status(f"{name}-{other}-pod", stopped)
            cond = {
                "type": "Failed",
                "status": "True",
                "reason": "MaxFailedIndexesExceeded",
                "message": "Job has exceeded the specified maximal number of failed indexes",
            }
            await self._job_status(name, {"conditions": [cond], "failed": 1, "failedIndexes": str(index), "active": 0})
        elif all(c == 0 for c in ranks.values()):
            done = {"type": "Complete", "status": "True"}
            status = {"conditions": [done], "succeeded": len(ranks), "active": 0, "completionTime": now_iso()}
            await self._job_status(name, {**status, "completedIndexes": ",".join(map(str, ranks))})

    async def _pod_status(self, pod: str, status: dict[str, Any]) -> None:
        await self.request("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/status", {"status": status}, True)

    async def _job_status(self, job: str, status: dict[str, Any]) -> None:
        path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job}/status"
        await self.request("PATCH", path, {"status": status}, True)


def _condition(job: dict[str, Any], kind: str) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _ended(job: dict[str, Any]) -> bool:
    return any(_condition(job, kind) for kind in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"))


def _ignored_failure(job: dict[str, Any], pod: dict[str, Any]) -> bool:
    """A failed Pod that a podFailurePolicy Ignore rule matches by condition: the Job replaces it, uncounted."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return False
    conditions = {(c.get("type"), c.get("status")) for c in status.get("conditions") or []}
    rules = ((job.get("spec") or {}).get("podFailurePolicy") or {}).get("rules") or []
    return any(
        rule.get("action") == "Ignore"
        and any((p.get("type"), p.get("status", "True")) in conditions for p in rule.get("onPodConditions") or [])
        for rule in rules
    )


def _pod(job: dict[str, Any], name: str) -> dict[str, Any]:
    template = job["spec"]["template"]
    meta = template["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {**meta.get("labels", {}), "job-name": job["metadata"]["name"]},
            "annotations": meta.get("annotations", {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job["metadata"]["name"],
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
        "status": {"phase": "Pending"},
    }


def _container(job: dict[str, Any]) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["name"]


def _running(job: dict[str, Any]) -> dict[str, Any]:
    state = {"running": {"startedAt": now_iso()}}
    return {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "startTime": now_iso(),
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": _container(job), "state": state, "ready": True, "restartCount": 0}],
    }


def _waiting(job: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": message}}
    return {"phase": "Pending", "containerStatuses": [{"name": _container(job), "state": state, "ready": False}]}


def _unschedulable() -> dict[str, Any]:
    cond = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "lastTransitionTime": now_iso(),
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    }
    return {"phase": "Pending", "conditions": [cond]}


def _terminated(job: dict[str, Any], code: int, reason: str, message: str, *, phase: str) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "reason": reason, "message": message, "finishedAt": now_iso()}}
    return {"phase": phase, "containerStatuses": [{"name": _container(job), "state": state, "ready": False}]}


async def run_trainer(
    job: dict[str, Any], extra_env: dict[str, str], timeout: float = 120, log: Path | None = None
) -> Outcome:
    """Run the real trial image entry point as the pod's process; its termination file is the message.

    ``log``: where its standard output goes (discarded without one).
    """
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    with tempfile.TemporaryDirectory() as tmp:
        env["KUBENAS_TERMINATION_LOG"] = os.path.join(tmp, "termination-log")
        env.pop("KUBENAS_PARAMETERS_FILE", None)  # the downward-API volume does not exist here
        full_env = {**os.environ, **env, **extra_env}
        argv = [sys.executable, *container.get("command", ["-m", "kubenas_trial"])[1:], *container.get("args", [])]
        with open(log or os.devnull, "ab") as out:
            proc = await asyncio.create_subprocess_exec(*argv, env=full_env, stdout=out, stderr=asyncio.subprocess.PIPE)
            try:
                _, err = await asyncio.wait_for(proc.communicate(), timeout)
            finally:  # the pod was deleted or disrupted (the task cancelled): its process ends with it
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        path = env["KUBENAS_TERMINATION_LOG"]
        message = Path(path).read_text() if os.path.exists(path) else err.decode()[-2000:]
        return Outcome(exit_code=proc.returncode or 0, message=message)
