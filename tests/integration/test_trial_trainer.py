"""The real trainer, end to end: accuracy targets, compression, distillation, artifacts, datasets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from kubenas_trial import TrialReporter
from kubenas_trial.config import parse
from kubenas_trial.data import FASHION_MNIST_DIR, load
from kubenas_trial.models import build_model
from kubenas_trial.train import Trainer
from kubenas_trial.trial import run

REQUIRED = {"accuracy", "test_accuracy", "loss", "params", "nonzero_params", "flops", "latency_ms", "model_size_bytes"}


def _trial(tmp: Path, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch, output: bool = False) -> dict:
    """Run the trainer in-process as a pod would (termination log, optional output dir); return the result."""
    if output:
        monkeypatch.setenv("KUBENAS_OUTPUT_DIR", str(tmp / "out"))
    else:
        monkeypatch.delenv("KUBENAS_OUTPUT_DIR", raising=False)
    log = tmp / "termination-log"
    with open(os.devnull, "w") as quiet:
        written = run({"num_threads": 1, **params}, TrialReporter(port=0, termination_log=log), log=quiet)
    assert json.loads(log.read_text()) == written
    return written


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`python -m kubenas_trial` on digits with default parameters but 6 epochs, as a pod runs it."""
    tmp = tmp_path_factory.mktemp("digits")
    env = {
        **os.environ, "KUBENAS_PARAMETERS": json.dumps({"epochs": 6}), "KUBENAS_TERMINATION_LOG": str(tmp / "log"),
        "KUBENAS_OUTPUT_DIR": str(tmp / "out"), "KUBENAS_METRICS_PORT": "0", "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run([sys.executable, "-m", "kubenas_trial"], env=env, capture_output=True, text=True,
                          timeout=300)
    return done, tmp


def test_digits_cnn_reaches_95_percent(digits_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, tmp = digits_run
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp / "log").read_text())
    assert len((tmp / "log").read_bytes()) <= 4096
    assert set(result) >= REQUIRED
    assert result["accuracy"] >= 0.95 and result["test_accuracy"] >= 0.9
    assert result["nonzero_params"] == result["params"] > 1000
    assert result["log10_params"] == pytest.approx(math.log10(result["params"]), abs=1e-6)
    assert result["flops"] > 2 * result["params"] and result["latency_ms"] > 0
    assert result["latency_ms_spread"] >= 0 and result["latency_noisy"] in (0, 1)
    assert 0 <= result["latency_remeasured"] <= 2 and result["latency_threads"] >= 1
    assert "device=cpu" in done.stdout and "epoch 6 accuracy=" in done.stdout


def test_digits_artifacts(digits_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _done, tmp = digits_run
    out = tmp / "out"
    architecture = json.loads((out / "architecture.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert architecture["parameters"]["epochs"] == 6 and architecture["architecture"]["kind"] == "cnn"
    assert architecture["architecture"]["params"] == metrics["metrics"]["params"]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4, 5, 6]
    assert metrics["runtime"]["device"].startswith("cpu")
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["quantization"] is None and "head.weight" in checkpoint["state_dict"]


def test_distillation_from_saved_teacher(digits_run: tuple[subprocess.CompletedProcess[str], Path],
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _done, teacher_run = digits_run
    student = {"width": 8, "epochs": 5, "lr": 0.01, "teacher": str(teacher_run / "out"),
               "distill_temperature": 3.0, "distill_alpha": 0.7}
    result = _trial(tmp_path, student, monkeypatch)
    assert result["accuracy"] >= 0.85
    assert result["params"] < 0.3 * json.loads((teacher_run / "log").read_text())["params"]


def test_teacher_for_another_dataset_is_refused(digits_run: tuple[subprocess.CompletedProcess[str], Path],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubenas_trial.config import ConfigError

    with pytest.raises(ConfigError, match="parameter 'teacher': checkpoint is for inputs"):
        _trial(tmp_path, {"dataset": "iris", "teacher": str(digits_run[1] / "out" / "model.pt")}, monkeypatch)


def test_iris_mlp_reaches_90_percent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _trial(tmp_path, {"dataset": "iris", "epochs": 40, "batch_size": 16}, monkeypatch)
    assert result["accuracy"] >= 0.9 and result["test_accuracy"] >= 0.85
    assert result["params"] == 4 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3 + 4 * 64  # linears + batch-norm affine


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # torch.load of quantized tensors, inside torch
def test_pruning_then_int8_quantization(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"width": 32, "epochs": 4, "prune": "unstructured", "prune_amount": 0.5, "finetune_epochs": 1,
              "quantize": "int8", "latency_repeats": 5}
    result = _trial(tmp_path, params, monkeypatch, output=True)
    assert result["nonzero_params"] <= 0.55 * result["params"]
    assert result["sparse_flops"] < 0.6 * result["flops"]
    assert {"accuracy_before_prune", "accuracy_before_finetune", "accuracy_after_finetune"} <= set(result)
    assert result["accuracy_after_finetune"] >= 0.9
    assert result["model_size_bytes_float"] >= 3 * result["model_size_bytes"]
    assert result["accuracy"] >= result["accuracy_float"] - 0.03  # int8 keeps the accuracy
    assert result["epochs"] == 5
    out = tmp_path / "out"
    quantized = torch.load(out / "model.pt", weights_only=True)
    assert quantized["quantization"] == "static"
    assert (out / "model.pt").stat().st_size * 3 <= (out / "model_float.pt").stat().st_size


def test_structured_pruning_reports_before_and_after_finetune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"dataset": "iris", "epochs": 30, "batch_size": 16, "prune": "structured", "finetune_epochs": 5}
    dense = _trial(tmp_path, {**params, "prune": "none"}, monkeypatch)
    result = _trial(tmp_path, params, monkeypatch)
    assert result["params"] < 0.6 * dense["params"]  # hidden units really removed
    assert result["flops"] < 0.6 * dense["flops"]
    assert result["accuracy_before_prune"] == dense["accuracy"]
    assert {"accuracy_before_finetune", "accuracy_after_finetune"} <= set(result)
    assert result["accuracy_after_finetune"] >= 0.8


def test_fashion_mnist_from_the_debian_package() -> None:
    if not Path(FASHION_MNIST_DIR).is_dir():
        pytest.skip("dataset-fashion-mnist is not installed (make prometheus installs it)")
    config = parse({"dataset": "fashion-mnist", "model": "mlp", "batch_size": 64, "num_threads": 1})
    data = load(config)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.y_train) + len(data.y_val) == 60_000 and len(data.y_test) == 10_000
    # Train briefly on a slice: the files are real images with learnable labels.
    data.x_train, data.y_train = data.x_train[:3000], data.y_train[:3000]
    data.x_val, data.y_val = data.x_val[:1000], data.y_val[:1000]
    torch.manual_seed(0)
    model = build_model(config, data.input_shape, data.num_classes)
    history = Trainer(model, data, config, torch.device("cpu")).fit(1).history
    assert history[-1]["accuracy"] > 0.65


@pytest.mark.slow
def test_torch_compile_flag(tmp_path: Path) -> None:
    env = {**os.environ, "KUBENAS_TERMINATION_LOG": str(tmp_path / "log"), "OMP_NUM_THREADS": "1",
           "KUBENAS_PARAMETERS": json.dumps({"dataset": "iris", "epochs": 20, "batch_size": 16, "compile": True})}
    env.pop("KUBENAS_OUTPUT_DIR", None)
    done = subprocess.run([sys.executable, "-m", "kubenas_trial"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "log").read_text())["accuracy"] >= 0.8


class _RecordingReporter(TrialReporter):
    def __init__(self, log: Path) -> None:
        super().__init__(port=0, termination_log=log)
        self.reports: list[tuple[float, dict[str, float]]] = []
        self.announced: tuple[float, int] | None = None  # (final step, reports made before it)

    def final_step(self, step: int | float) -> None:
        self.announced = (step, len(self.reports))
        super().final_step(step)

    def report(self, step: int | float, metrics: Any = None, /, **named: Any) -> None:
        self.reports.append((step, {**(metrics or {}), **named}))
        super().report(step, metrics, **named)


@pytest.mark.parametrize("prune", ["none", "unstructured"])
def test_static_costs_are_reported_before_training_only_when_final(tmp_path: Path, prune: str) -> None:
    """params and flops at step 0 (what a stopEarly constraint judges) unless pruning will change them."""
    reporter = _RecordingReporter(tmp_path / "log")
    params = {"dataset": "iris", "epochs": 2, "num_threads": 1, "prune": prune}
    with open(os.devnull, "w") as quiet:
        final = run(params, reporter, log=quiet)
    first_step, first = reporter.reports[0]
    if prune == "none":
        assert first_step == 0
        assert first == {"params": final["params"], "flops": final["flops"]}
    else:
        assert first_step == 1 and "params" not in first  # the dense model's size would mislead
    # The step of the last report, announced before any: reaching it, the trial is never stopped early.
    assert reporter.announced == (final["epochs"], 0)
    assert max(step for step, _ in reporter.reports) == final["epochs"]
