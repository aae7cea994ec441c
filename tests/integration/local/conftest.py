"""Fixtures for the local runner's tests (helpers live in run_helpers.py: conftest names clash across directories)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(document: dict[str, Any]) -> Path:
        path = tmp_path / f"{document['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    return write


@pytest.fixture(autouse=True)
def bugs_show_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kubenas` run by these tests lets an unforeseen exception through instead of its one-line last resort."""
    monkeypatch.setenv("KUBENAS_DEBUG", "1")
