"""`python -m kubenas_trial` in the supernet modes, as a pod runs it: train once, evaluate subnets from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from kubenas_trial import TrialReporter, oneshot
from kubenas_trial.artifacts import load_model
from kubenas_trial.config import ConfigError, parse
from kubenas_trial.data import load
from kubenas_trial.models import build_model, count_parameters
from kubenas_trial.trial import run

SPACE = {"blocks": [1, 2], "width": [4, 8], "kernel_size": [3, 5]}
TINY = {"max_train_samples": 300, "latency_repeats": 3, "latency_warmup": 1, "bn_recalibration_batches": 2,
        "num_threads": 1}


def trainer(tmp: Path, name: str, params: dict[str, Any], output: bool = True) -> tuple[int, dict, str]:
    """Run `python -m kubenas_trial` with ``params`` as KUBENAS_PARAMETERS; (exit code, result, stderr)."""
    env = {**os.environ, "KUBENAS_PARAMETERS": json.dumps(params), "KUBENAS_TERMINATION_LOG": str(tmp / f"{name}.log"),
           "KUBENAS_METRICS_PORT": "0", "OMP_NUM_THREADS": "1"}
    env.pop("KUBENAS_OUTPUT_DIR", None)
    if output:
        env["KUBENAS_OUTPUT_DIR"] = str(tmp / name)
    done = subprocess.run([sys.executable, "-m", "kubenas_trial"], env=env, capture_output=True, text=True,
                          timeout=300)
    log = tmp / f"{name}.log"
    return done.returncode, json.loads(log.read_text()) if log.exists() else {}, done.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("supernet")
    code, result, stderr = trainer(tmp, "train", {"mode": "supernet-train", "epochs": 2, "supernet_space": SPACE,
                                                  **TINY})
    assert code == 0, stderr
    assert result["subnets"] == 8 and result["epochs"] == 2
    assert {"accuracy", "accuracy_smallest", "test_accuracy", "params", "flops"} <= set(result)
    assert (tmp / "train" / oneshot.CHECKPOINT).is_file()
    return tmp


@pytest.mark.slow
def test_one_subnet_reports_what_an_ordinary_trial_reports_and_exports_its_cnn(
        trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subnet = {"blocks": 1, "width": 4, "kernel_size": 3}
    code, result, stderr = trainer(tmp_path, "one", {"mode": "supernet-eval", "supernet": str(trained / "train"),
                                                     **subnet, **TINY})
    assert code == 0, stderr
    monkeypatch.delenv("KUBENAS_OUTPUT_DIR", raising=False)
    with open(os.devnull, "w") as quiet:
        ordinary = run({"epochs": 1, "max_train_samples": 300, "latency_repeats": 3, "num_threads": 1},
                       TrialReporter(port=0, termination_log=tmp_path / "ordinary.log"), log=quiet)
    assert list(result) == list(ordinary)
    assert result["epochs"] == 0 and 0 < result["accuracy"] <= 1

    # model.pt is the CNN an ordinary trial with the same parameters builds, with the inherited weights.
    model, meta = load_model(tmp_path / "one")
    config = parse({**subnet, "stages": 2, "expansion": 1})
    assert meta["architecture"]["width"] == 4 and meta["architecture"]["blocks"] == 1
    assert count_parameters(model) == count_parameters(build_model(config, (1, 8, 8), 10)) == result["params"]
    dataset = load(parse({"max_train_samples": 300}))
    with torch.no_grad():
        accuracy = (model(dataset.x_val).argmax(1) == dataset.y_val).float().mean().item()
    assert accuracy == pytest.approx(result["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_a_batch_reports_each_subnet_compactly_and_in_full_in_the_artifacts(trained: Path, tmp_path: Path) -> None:
    subnets = [{"width": 4, "blocks": 1}, {}, {"kernel_size": 3}]
    code, result, stderr = trainer(tmp_path, "batch", {"mode": "supernet-eval", "supernet": str(trained / "train"),
                                                       "subnets": subnets, **TINY})
    assert code == 0, stderr
    assert result["subnets"] == 3
    assert {f"{i}.{m}" for i in range(3) for m in oneshot.BATCH_METRICS} <= set(result)
    assert result["0.params"] < result["2.params"] < result["1.params"]  # {} is the largest subnet
    full = json.loads((tmp_path / "batch" / oneshot.BATCH_FILE).read_text())["subnets"]
    assert full[1]["subnet"] == {"stages": 2, "blocks": 2, "width": 8, "kernel_size": 5, "expansion": 1}
    assert full[2]["metrics"]["accuracy"] == result["2.accuracy"]
    assert "test_accuracy" not in full[0]["metrics"] and "model_size_bytes" in full[0]["metrics"]


@pytest.mark.slow
def test_bad_supernet_invocations_are_refused_naming_the_field(
        trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = str(trained / "train")
    code, _, stderr = trainer(tmp_path, "bad", {"mode": "supernet-eval", "supernet": checkpoint,
                                                "subnets": [{"width": 4}, {"kernel_size": 7}]})
    assert code == 2 and "subnets[1].kernel_size must be one of the supernet's choices 3, 5; got 7" in stderr, stderr

    reporter = TrialReporter(port=0, termination_log=tmp_path / "log")
    cases = [
        ({"kernel_size": 7}, r"parameters\.kernel_size must be one of"),
        ({"activation": "gelu"}, r"parameter 'activation' is fixed by the supernet \('relu'\)"),
        ({"subnets": [{}] * (oneshot.MAX_SUBNETS + 1)}, f"'subnets' must hold 1 to {oneshot.MAX_SUBNETS}"),
        ({"width": 4, "subnets": [{}]}, r"parameter 'width' cannot be given with 'subnets'"),
        ({"supernet": str(tmp_path)}, "no supernet checkpoint"),
    ]
    for params, message in cases:
        with pytest.raises(ConfigError, match=message):
            run({"mode": "supernet-eval", "supernet": checkpoint, **params}, reporter)
    monkeypatch.delenv("KUBENAS_OUTPUT_DIR", raising=False)
    with pytest.raises(ConfigError, match="set KUBENAS_OUTPUT_DIR"):
        run({"mode": "supernet-train"}, reporter)


@pytest.mark.slow
def test_the_ranking_benchmark_runs(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "oneshot_ranking.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["subnets"] == 4 and "kendall_tau" in summary and len(summary["rows"]) == 4
    assert summary["supernet_cpu_s"] > 0 and summary["standalone_cpu_s"] > 0


@pytest.mark.slow
def test_the_cost_benchmark_runs(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "oneshot_cost.py"
    command = [sys.executable, str(script), "--quick", "--data", str(tmp_path / "m.json"),
               "--out", str(tmp_path / "r.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    measured = json.loads((tmp_path / "m.json").read_text())
    assert len(measured["standalone"]) == 8 and all(len(runs) == 2 for runs in measured["standalone"].values())
    summary = json.loads((tmp_path / "r.json").read_text())["quick"]
    assert summary["subnets"] == 8 and summary["supernet_cpu_s"] > 0
    methods = list(summary["methods"])
    assert any(m.startswith("black box") for m in methods) and any(m.startswith("one-shot") for m in methods)
    # The replay alone reads the cache and trains nothing.
    again = subprocess.run([*command, "--replay"], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert "supernet epoch" not in again.stdout and "standalone seed" not in again.stdout
