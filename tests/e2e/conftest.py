"""Fixtures of the end-to-end suite: a real cluster from ``$KUBECONFIG`` (``make e2e``).

Nothing here runs in ``make test``: tests/e2e is outside the default testpaths, and an e2e test
collected without ``-m e2e`` (``pytest tests/``) or an explicit tests/e2e path is skipped.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_cluster import CRDS, Operator, SessionLock, create_namespace, delete_namespace, run, summary, tool
from kubeapi import Kube, path
from kubelet import TestKubelet, schedulable_nodes

E2E_DIR = Path(__file__).resolve().parent


def _explicit(config: pytest.Config) -> bool:
    markexpr = (config.getoption("markexpr", "") or "").replace(" ", "")
    if "e2e" in markexpr and "note2e" not in markexpr:
        return True
    for arg in config.args:
        target = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if target == E2E_DIR or E2E_DIR in target.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _explicit(config):
        return
    skip = pytest.mark.skip(reason="end-to-end tests run with `make e2e` (pytest -m e2e tests/e2e)")
    for item in items:
        if E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
        for w in ("setup", "call")
    )


# --- the cluster


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    value = os.environ.get("KUBECONFIG")
    if not value:
        pytest.skip("KUBECONFIG is not set: the e2e tests need a cluster")
    return value


@pytest.fixture(scope="session")
def kube(kubeconfig: str) -> Kube:
    try:
        client = Kube(kubeconfig)
    except Exception as err:
        pytest.skip(f"cannot load KUBECONFIG={kubeconfig}: {err}")
    why = client.ready(timeout=10)
    if why is not None:
        pytest.skip(f"cluster at {client.host} (KUBECONFIG={kubeconfig}) is not reachable: {why}")
    return client


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    found = tool("kubectl")
    if found is None:
        pytest.skip("kubectl missing: run `make kubectl`")
    return found


@pytest.fixture(scope="session")
def helm_bin() -> str:
    found = tool("helm")
    if found is None:
        pytest.skip("helm missing: run `make helm`")
    return found


@pytest.fixture(scope="session")
def kubectl(kubectl_bin: str, kubeconfig: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl(*args, input=None, check=True, kubeconfig=None)``."""

    def call(
        *args: str, input: str | None = None, check: bool = True, config: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": config or kubeconfig}
        return run([kubectl_bin, *args], input=input, check=check, env=env, timeout=timeout)

    return call


@pytest.fixture(scope="session")
def helm(helm_bin: str, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    cache = tmp_path_factory.mktemp("helm")

    def call(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "HELM_CACHE_HOME": str(cache / "cache"),
            "HELM_CONFIG_HOME": str(cache / "config"),
            "HELM_DATA_HOME": str(cache / "data"),
        }
        return run([helm_bin, *args], check=check, env=env, timeout=180)

    return call


@pytest.fixture(scope="session")
def session_lock(kube: Kube) -> Iterator[SessionLock]:
    """This session owns the cluster's e2e lease (another session's tests wait until it ends)."""
    lock = SessionLock(kube)
    lock.acquire(notify=lambda message: print(message, file=sys.__stderr__, flush=True))
    yield lock
    lock.release()


@pytest.fixture(scope="session")
def crds(kube: Kube, kubectl: Callable[..., Any], session_lock: SessionLock) -> None:
    """The CRDs from crds/, applied once and Established (left installed: deleting them would delete data)."""
    kubectl("apply", "-f", str(CRDS))
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/experiments.kubenas.io", "crd/trials.kubenas.io"
    )


@pytest.fixture(scope="session")
def kubelet(kube: Kube, session_lock: SessionLock) -> Iterator[TestKubelet | None]:
    """Our test kubelet when the cluster has no schedulable node (``KUBENAS_E2E_KUBELET``: auto, always, never)."""
    mode = os.environ.get("KUBENAS_E2E_KUBELET", "auto")
    nodes = schedulable_nodes(kube)
    if mode == "never" or (mode == "auto" and nodes):
        logging.getLogger("kubenas.e2e").info("real nodes %s: no test kubelet", nodes)
        yield None
        return
    test_kubelet = TestKubelet(kube)
    test_kubelet.start()
    try:
        yield test_kubelet
    finally:
        test_kubelet.stop()
    if test_kubelet.errors:  # pod status writes the API server refused: a test kubelet bug
        warnings.warn("test kubelet: " + "; ".join(test_kubelet.errors[:10]), stacklevel=1)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


# --- per test: a namespace and operators


def _namespace_name(request: pytest.FixtureRequest) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower().removeprefix("test_"))
    slug = "-".join(filter(None, slug.split("-")))[:36].strip("-")
    return f"kn-e2e-{slug}-{secrets.token_hex(3)}"


def dump(kube: Kube, kubectl: Callable[..., Any], namespace: str, kubelet: TestKubelet | None) -> None:
    """What a failed test leaves in its namespace, printed into the test's report."""
    print(f"\n===== namespace {namespace}")
    got = kubectl("get", "experiments,trials,jobs,pods,configmaps,events", "-n", namespace, "-o", "wide", check=False)
    print(got.stdout[-6000:], got.stderr[-2000:])
    for exp in kube.items(path("kubenas.io/v1alpha1", "experiments", namespace)):
        print(f"--- experiment {exp['metadata']['name']}:\n{summary(kube, namespace, exp['metadata']['name'])}")
    if kubelet is not None:
        for pod in kube.items(path("v1", "pods", namespace)):
            text = kubelet.pod_log(namespace, pod["metadata"]["name"])
            if text:
                print(f"--- pod {pod['metadata']['name']} output (tail):\n{text[-1500:]}")


@pytest.fixture
def namespace(
    request: pytest.FixtureRequest, kube: Kube, kubectl: Callable[..., Any], kubelet: TestKubelet | None
) -> Iterator[str]:
    """A fresh namespace, deleted after the test (waiting until it is gone)."""
    name = create_namespace(kube, _namespace_name(request))
    yield name
    if _failed(request):
        dump(kube, kubectl, name, kubelet)
    delete_namespace(kube, name)


@pytest.fixture
def operator(
    request: pytest.FixtureRequest, kubeconfig: str, log_dir: Path, namespace: str
) -> Iterator[Callable[..., Operator]]:
    """``operator(namespace, config=None, env=None)`` starts ``kubenas operator --namespace NS``.

    Every operator started is stopped after the test, before its namespace is deleted.
    """
    started: list[Operator] = []

    def start(namespace: str, config: str | None = None, env: dict[str, str] | None = None) -> Operator:
        op = Operator(namespace, config or kubeconfig, log_dir, env).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    if _failed(request):
        for op in started:
            print(f"\n===== operator log {op.log_path} (tail)\n{op.log(tail=12000)}")
