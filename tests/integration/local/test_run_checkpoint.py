"""`kubenas run` interrupted mid-trial and resumed: the trial continues from its checkpoint, one curve."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from run_helpers import records, run_kubenas, start_kubenas, stub_manifest, wait_for

CHECKPOINT_TRIAL = Path(__file__).parents[1] / "checkpoint_trial.py"


def saved_epoch(checkpoint: Path) -> int:
    try:
        return int(json.loads((checkpoint / "state.json").read_text())["epoch"])
    except (OSError, ValueError):
        return 0


def test_an_interrupted_trial_resumes_from_its_checkpoint(tmp_path: Path, write_manifest) -> None:
    manifest = stub_manifest("ckpt", max_trials=1, parallel=1, args=["--epochs", "12", "--sleep", "0.3"])
    manifest["spec"]["trialTemplate"]["spec"]["containers"][0]["command"] = ["python", str(CHECKPOINT_TRIAL)]
    path = write_manifest(manifest)
    run_dir = tmp_path / "runs" / "ckpt"
    checkpoint = run_dir / "trials" / "ckpt-0" / "checkpoint"
    runner = start_kubenas("run", str(path), "--output", "runs", cwd=tmp_path, log=tmp_path / "first.log")
    try:
        wait_for(lambda: saved_epoch(checkpoint) >= 3, what="three epochs saved")
    finally:
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=30) == 130
    interrupted = json.loads((run_dir / "trials" / "ckpt-0" / "trial.json").read_text())["status"]
    before = [p["step"] for p in interrupted.get("curve", [])]
    assert before, interrupted  # the curve so far, kept while the trial waits to run again
    saved = saved_epoch(checkpoint)

    result = run_kubenas("run", str(path), "--output", "runs", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [record] = records(run_dir)
    assert record["phase"] == "Succeeded" and record["metrics"]["start_epoch"] == saved + 1
    trial = json.loads((run_dir / "trials" / "ckpt-0" / "trial.json").read_text())["status"]
    steps = [p["step"] for p in trial["curve"]]
    assert steps == sorted(set(steps)), steps  # one curve: no step twice, none reset
    assert steps[: len(before)] == before and steps[-1] > saved  # kept, then continued after the checkpoint
