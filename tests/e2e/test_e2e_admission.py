"""Bad manifests are refused by ``kubectl apply`` with the rule's message: the real API server
(CRD schema, CEL rules, strict field validation) against the cases of tests/unit/invalid_manifests.py."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_cluster import ROOT, create_namespace, delete_namespace, to_yaml
from kubeapi import Kube

pytestmark = pytest.mark.e2e


def _invalid_manifests() -> Any:
    name = "invalid_manifests"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "unit" / "invalid_manifests.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


CASES = _invalid_manifests().CASES
VALID = _invalid_manifests().VALID
API_CASES = [c for c in CASES if c.apiserver]


@pytest.fixture(scope="module")
def admission_namespace(kube: Kube, crds: None) -> Iterator[str]:
    """One namespace for every case: each apply is refused, so nothing is left in it."""
    name = create_namespace(kube, "kn-e2e-admission-" + __import__("secrets").token_hex(3))
    yield name
    delete_namespace(kube, name)


def _in(doc: dict[str, Any], namespace: str) -> str:
    doc = dict(doc)
    doc["metadata"] = {**doc["metadata"], "namespace": namespace}
    return to_yaml(doc)


@pytest.mark.parametrize("base", sorted(VALID))
def test_valid_manifests_are_accepted(base: str, kubectl: Callable[..., Any], admission_namespace: str) -> None:
    """The control: each manifest the invalid cases patch is accepted as it is."""
    manifest = _in(VALID[base], admission_namespace)
    kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_refused(case: Any, kubectl: Callable[..., Any], admission_namespace: str) -> None:
    done = kubectl("apply", "-f", "-", input=_in(case.manifest(), admission_namespace), check=False)
    assert done.returncode != 0, f"accepted: {done.stdout}"
    message = done.stderr
    words = case.api_words or case.words
    missing = [w for w in words if w.lower() not in message.lower()]
    assert not missing, f"{missing} not in: {message}"
    field = case.api_path or case.path
    assert field in message, f"{field!r} not in: {message}"
