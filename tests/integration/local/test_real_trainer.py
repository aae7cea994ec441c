"""`kubenas run` with the real PyTorch trainer (`python -m kubenas_trial`) on the bundled digits data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_helpers import records, run_kubenas

EPOCHS = 6


def manifest(name: str) -> dict:
    return {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "accuracy", "goal": "maximize"},
            "parameters": [
                {"name": "lr", "type": "float", "min": 1e-5, "max": 0.03, "scale": "log"},
                {"name": "width", "type": "int", "min": 4, "max": 16},
            ],
            "algorithm": {"name": "RandomSearch", "seed": 2},
            "budget": {"maxTrials": 6, "parallelTrials": 2},
            "earlyStopping": {"rule": "asha", "minEpochs": 2, "reductionFactor": 2},
            "trialTemplate": {
                "activeDeadlineSeconds": 300,
                "spec": {
                    "containers": [
                        {
                            "name": "trial",
                            "image": "ghcr.io/kubenas/trial:0.1.0",
                            "command": ["python", "-m", "kubenas_trial"],
                            "args": [
                                "--param=dataset=digits",
                                f"--param=epochs={EPOCHS}",
                                "--param=batch_size=16",
                                "--param=latency_repeats=1",
                            ],
                        }
                    ]
                },
            },
        },
    }


@pytest.mark.slow
def test_early_stopping_saves_epochs_on_a_real_run(tmp_path: Path, write_manifest) -> None:
    path = write_manifest(manifest("real"))
    result = run_kubenas("run", str(path), "--output", "runs", cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "runs" / "real"
    lines = records(run_dir)
    assert len(lines) == 6

    stopped = [r for r in lines if r["phase"] == "EarlyStopped"]
    assert stopped, [(r["name"], r["phase"], r["curve"]) for r in lines]
    assert all(r["reason"] == "EarlyStopped" and "asha" in r["message"] for r in stopped)
    assert all(r["steps"] < EPOCHS for r in stopped)
    assert sum(r["steps"] or 0 for r in lines) < 6 * EPOCHS

    succeeded = [r for r in lines if r["phase"] == "Succeeded"]
    # Scraped curves may miss the last epoch (the trial exits right after it); the result has it all.
    assert succeeded and all(r["metrics"]["epochs"] == EPOCHS and len(r["curve"]) >= 2 for r in succeeded)
    best = json.loads((run_dir / "best.json").read_text())
    assert best["metrics"]["accuracy"] == max(r["metrics"]["accuracy"] for r in succeeded)
    # The trainer's artifacts for the best trial, copied out of its trial directory.
    assert best["architecture"]["architecture"]["kind"] == "cnn"
    assert (run_dir / "best" / "architecture.json").exists()
    assert (run_dir / "curves.png").exists()
