"""The built-in trainer resumes from its checkpoint: one continuous curve and the uninterrupted run's result."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from kubenas_trial import TrialReporter, checkpoints
from kubenas_trial.trial import run

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")]
# The figures a rerun must reproduce exactly (timings and latency differ from run to run).
LEARNED = ("accuracy", "test_accuracy", "loss", "test_loss", "nonzero_params", "epochs",
           "accuracy_before_prune", "accuracy_before_finetune", "accuracy_after_finetune")


class Preempted(Exception):
    """Stands for the pod disappearing right after a report."""


class _Reporter(TrialReporter):
    """Records the steps reported; raises :class:`Preempted` once ``stop_after`` is reported."""

    def __init__(self, log: Path, stop_after: int | None = None) -> None:
        super().__init__(port=0, termination_log=log)
        self.stop_after = stop_after
        self.steps: list[float] = []

    def report(self, step: int | float, metrics: Any = None, /, **named: Any) -> None:
        super().report(step, metrics, **named)
        if not self.steps or self.steps[-1] != step:  # the final result repeats the last epoch's step
            self.steps.append(step)
        if step == self.stop_after:
            raise Preempted


def _run(tmp: Path, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch, checkpoint: Path | None,
         stop_after: int | None = None) -> tuple[dict[str, Any] | None, list[float], str]:
    if checkpoint is None:
        monkeypatch.delenv("KUBENAS_CHECKPOINT_DIR", raising=False)
    else:
        monkeypatch.setenv("KUBENAS_CHECKPOINT_DIR", str(checkpoint))
    monkeypatch.setenv("KUBENAS_OUTPUT_DIR", str(tmp / "out"))
    tmp.mkdir(parents=True, exist_ok=True)
    reporter = _Reporter(tmp / "log", stop_after)
    log = tmp / "stdout"
    with open(log, "w") as stream:
        try:
            result = run({"num_threads": 1, "latency_repeats": 3, "latency_warmup": 1, **params}, reporter, log=stream)
        except Preempted:
            result = None
    return result, reporter.steps, log.read_text()


@pytest.mark.parametrize(("params", "stop_after"), [
    ({"epochs": 4, "augment_crop": 1, "dropout": 0.2}, 2),  # every random stream matters
    ({"epochs": 3, "prune": "unstructured", "finetune_epochs": 2}, 4),  # preempted while fine-tuning
], ids=["training", "fine-tuning"])
def test_preempted_trial_resumes_with_one_curve_and_the_same_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, Any], stop_after: int) -> None:
    params = {"max_train_samples": 600, "seed": 3, **params}
    whole, whole_steps, _ = _run(tmp_path / "whole", params, monkeypatch, checkpoint=None)
    assert whole is not None
    last = whole["epochs"]

    checkpoint = tmp_path / "checkpoint"
    first, first_steps, _ = _run(tmp_path / "first", params, monkeypatch, checkpoint, stop_after=stop_after)
    assert first is None and first_steps[-1] == stop_after
    assert not (tmp_path / "first" / "log").exists()  # preempted before any result
    resumed, resumed_steps, stdout = _run(tmp_path / "second", params, monkeypatch, checkpoint)
    assert resumed is not None

    assert f"resuming after epoch {stop_after}" in stdout
    assert resumed_steps == list(range(stop_after + 1, last + 1))  # continues at the next step
    assert first_steps + resumed_steps == whole_steps  # one curve, no step repeated or missing
    assert {k: resumed.get(k) for k in LEARNED} == {k: whole.get(k) for k in LEARNED}
    history = json.loads((tmp_path / "second" / "out" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, last + 1))  # the artifacts keep the whole curve


def test_checkpoint_for_other_parameters_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "checkpoint"
    params = {"dataset": "iris", "epochs": 3, "batch_size": 16}
    _run(tmp_path / "a", params, monkeypatch, checkpoint)
    saved = torch.load(checkpoint / checkpoints.FILE_NAME, weights_only=True)
    assert saved["epoch"] == 3 and [h["epoch"] for h in saved["history"]] == [1, 2, 3]

    result, steps, stdout = _run(tmp_path / "b", {**params, "lr": 0.01}, monkeypatch, checkpoint)
    assert "written for other parameters" in capsys.readouterr().err
    assert result is not None and steps[:2] == [0, 1] and "resuming" not in stdout  # trained from the start
    assert os.listdir(checkpoint) == [checkpoints.FILE_NAME]
