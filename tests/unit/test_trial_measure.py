"""Measuring a saved trial model again (python -m kubenas_trial.measure): the model it times is the trial's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from kubenas_trial import artifacts, compress, measure, models
from kubenas_trial.config import SPECS

SHAPE = (1, 8, 8)


def _config(**overrides: Any) -> dict[str, Any]:
    return {name: spec.default for name, spec in SPECS.items()} | {"stages": 1, "width": 8, **overrides}


def _saved(directory: Path, quantization: str | None) -> torch.nn.Module:
    """A small CNN saved as a trial saves it; returns the model the trial ended with."""
    torch.manual_seed(0)
    config = _config()
    float_model = models.build_model(config, SHAPE, 10).eval()
    example = torch.randn(1, *SHAPE)
    final = float_model
    if quantization:
        final = compress.quantize(float_model, quantization, [torch.randn(16, *SHAPE)], example)
    artifacts.save(directory, float_model=float_model, final_model=final, quantization=quantization, config=config,
                   input_shape=SHAPE, num_classes=10, architecture={}, metrics={})
    return final


@pytest.mark.parametrize("quantization", [None, "static"])
def test_the_measured_model_computes_what_the_trial_model_computed(tmp_path: Path, quantization: str | None) -> None:
    original = _saved(tmp_path, quantization)
    rebuilt, example = measure.final_model(tmp_path, "cpu")
    batch = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.equal(rebuilt(batch), original(batch))
    assert example.shape == (1, *SHAPE)


def test_the_command_writes_latency_metrics_to_the_termination_log(tmp_path: Path) -> None:
    _saved(tmp_path / "model", "static")
    log = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "kubenas_trial.measure", "--model", str(tmp_path / "model")],
                          env={"KUBENAS_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(log.read_text())
    assert set(result) == {"latency_ms", "latency_ms_spread", "latency_remeasured", "latency_noisy", "latency_threads"}
    assert result["latency_ms"] > 0 and result["latency_threads"] == 1  # no CPU limit here: one thread


def test_no_model_is_a_usage_error_naming_the_directory(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "kubenas_trial.measure", "--model", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == measure.EXIT_NO_MODEL
    assert f"--model {tmp_path}: no model.pt there" in done.stderr


def test_the_trial_measures_in_a_fresh_process_and_falls_back_to_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    config = _config()
    model = models.build_model(config, SHAPE, 10).eval()
    fresh = measure.measure_in_fresh_process(model, model, None, config, SHAPE, 10)
    assert fresh["latency_ms"] > 0 and fresh["latency_threads"] == 1

    monkeypatch.setattr(measure.sys, "executable", "/bin/false")  # the child cannot run
    fallback = measure.measure_in_fresh_process(model, model, None, config, SHAPE, 10)
    assert fallback.keys() == fresh.keys() and fallback["latency_ms"] > 0
