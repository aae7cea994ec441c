"""`kubenas run` of a manifest naming RegularizedEvolution or PolicyGradient (`spec.algorithm.name`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from run_helpers import records, run_kubenas, stub_manifest


@pytest.mark.parametrize("algorithm", ["RegularizedEvolution", "PolicyGradient"])
def test_a_manifest_naming_the_algorithm_runs_to_a_best_trial(
    tmp_path: Path, write_manifest: Callable[[dict[str, Any]], Path], algorithm: str
) -> None:
    manifest = stub_manifest(algorithm.lower(), max_trials=6, parallel=2, args=["--epochs", "1", "--sleep", "0"])
    manifest["spec"]["algorithm"] = {"name": algorithm, "seed": 3}
    result = run_kubenas("run", str(write_manifest(manifest)), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "runs" / algorithm.lower()
    lines = records(run_dir)
    assert len(lines) == 6 and all(r["phase"] == "Succeeded" for r in lines)
    configs = {json.dumps(r["parameters"], sort_keys=True) for r in lines}
    assert len(configs) == 6
    assert json.loads((run_dir / "best.json").read_text())["value"] == max(r["value"] for r in lines)
