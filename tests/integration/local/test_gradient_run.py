"""`kubenas run` of examples/digits-gradient.yaml with the real trainer: cell searches, retraining, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubenas.api.gradient import cell_of
from run_helpers import records, run_kubenas

EXAMPLE = Path(__file__).parents[3] / "examples" / "digits-gradient.yaml"


@pytest.mark.slow
def test_the_gradient_search_example_retrains_the_derived_cells_and_exports_one(
    tmp_path: Path, write_manifest
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    # Smaller than the example, same stages: 2 searches, the 2 distinct cells retrained.
    doc["spec"]["budget"]["maxTrials"] = 2
    doc["spec"]["gradientSearch"]["search"]["epochs"] = 3
    doc["spec"]["gradientSearch"]["retrain"] = {"epochs": 2}
    path = write_manifest(doc)
    result = run_kubenas("run", str(path), "--output", "runs", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "runs" / "digits-gradient"
    lines = sorted(records(run_dir), key=lambda r: r["index"])
    assert all(r["phase"] == "Succeeded" for r in lines), [(r["name"], r["phase"], r["message"]) for r in lines]
    searches = [r for r in lines if r["parameters"]["mode"] == "gradient-search"]
    retrained = [r for r in lines if r["parameters"]["mode"] == "train"]
    assert len(searches) == 2 and 1 <= len(retrained) <= 2
    assert all(r["index"] > s["index"] for r in retrained for s in searches)  # retraining waits for the searches

    # Each retrained cell is the one a search derived, most accurate search first, with its seed and shape.
    ranked = sorted(searches, key=lambda r: -r["metrics"]["accuracy"])
    cells = list(dict.fromkeys(cell_of(r["metrics"]) for r in ranked))
    assert [r["parameters"]["cell"] for r in retrained] == cells[: len(retrained)]
    first = retrained[0]["parameters"]
    assert first["seed"] == ranked[0]["parameters"]["seed"] and first["width"] == 8 and first["epochs"] == 2
    assert "arch_lr" not in first

    best = json.loads((run_dir / "best.json").read_text())
    assert best["trial"] in {r["name"] for r in retrained}
    architecture = json.loads((run_dir / "best" / "architecture.json").read_text())
    assert architecture["architecture"]["kind"] == "cell"
    assert architecture["architecture"]["cell"] == best["parameters"]["cell"]
    assert "BudgetSpent" in result.stdout
