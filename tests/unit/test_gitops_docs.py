"""docs/gitops.md: its Argo CD Application and Flux Kustomization select real, valid example manifests."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubenas import validation

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "gitops.md"


def documents() -> list[dict[str, Any]]:
    """Every YAML document in the page's ```yaml blocks."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    return [d for block in blocks for d in yaml.safe_load_all(block) if isinstance(d, dict)]


def one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents() if d.get("kind") == kind]
    return found


def test_every_yaml_block_parses() -> None:
    kinds = {d.get("kind") for d in documents()}
    assert {"ConfigMap", "Application", "GitRepository", "Kustomization"} <= kinds


def test_the_argocd_application_applies_valid_experiments(capsys: pytest.CaptureFixture[str]) -> None:
    source = one("Application")["spec"]["source"]
    directory = ROOT / source["path"]
    excluded = source["directory"]["exclude"]
    files = sorted(p for p in directory.glob("*.yaml") if not fnmatch.fnmatch(p.name, excluded))
    assert len(files) >= 3 and all(p.name != excluded for p in files)
    assert (directory / excluded).exists()  # the exclusion names a real file
    assert validation.main([str(p) for p in files]) == 0, capsys.readouterr()
    assert one("Application")["spec"]["destination"]["namespace"] == "nas"


def test_the_flux_kustomization_applies_the_same_experiments() -> None:
    kustomization = one("Kustomization")["spec"]
    assert (ROOT / kustomization["path"]).is_dir()
    assert not (ROOT / kustomization["path"] / "kustomization.yaml").exists()  # Flux generates one
    assert kustomization["targetNamespace"] == "nas"
    assert kustomization["sourceRef"]["name"] == one("GitRepository")["metadata"]["name"]
    (patch,) = kustomization["patches"]
    deleted = yaml.safe_load(patch["patch"])
    assert deleted["$patch"] == "delete"
    names = {
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in (ROOT / kustomization["path"]).glob("*.yaml")
    }
    assert deleted["metadata"]["name"] in names
    assert deleted["metadata"]["name"] == Path(one("Application")["spec"]["source"]["directory"]["exclude"]).stem
