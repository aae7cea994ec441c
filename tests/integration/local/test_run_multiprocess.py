"""`kubenas run` with trialTemplate.replicas: N local processes per trial, as the N pods of an Indexed Job."""

from __future__ import annotations

import json
from pathlib import Path

from run_helpers import live_trial_processes, records, run_kubenas, stub_manifest

DDP_STUB = Path(__file__).with_name("ddp_stub_trial.py")


def ddp_manifest(name: str, *args: str) -> dict:
    doc = stub_manifest(name, max_trials=1, parallel=1, max_failed=1, args=["--x=${parameters.x}", *args])
    template = doc["spec"]["trialTemplate"]
    template["replicas"] = 2
    template["spec"]["containers"][0]["command"] = ["python", str(DDP_STUB)]
    return doc


def test_two_process_trial_rendezvous_and_rank_0s_result(tmp_path: Path, write_manifest) -> None:
    manifest = write_manifest(ddp_manifest("ddp"))
    result = run_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path, timeout=300)
    run_dir = tmp_path / "runs" / "ddp"
    assert result.returncode == 0, result.stdout + result.stderr + _logs(run_dir)
    [trial] = records(run_dir)
    assert trial["phase"] == "Succeeded", trial
    # Rank 0's result, after an all-reduce both ranks took part in (1 + 2).
    assert trial["metrics"]["ranks_sum"] == 3.0 and trial["metrics"]["world_size"] == 2.0
    assert "rank 1/2 at 127.0.0.1:" in (run_dir / "trials" / "ddp-0" / "rank-1" / "log.txt").read_text()
    assert json.loads((run_dir / "processes.json").read_text()) == []
    assert not live_trial_processes(run_dir)


def test_a_failing_rank_fails_the_trial_with_its_reason_and_ends_the_others(tmp_path: Path, write_manifest) -> None:
    manifest = write_manifest(ddp_manifest("ddp-crash", "--crash-rank", "1"))
    result = run_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path, timeout=300)
    run_dir = tmp_path / "runs" / "ddp-crash"
    assert result.returncode == 1, result.stdout + result.stderr + _logs(run_dir)
    [trial] = records(run_dir)
    assert trial["phase"] == "Failed" and trial["reason"] == "ExitCode", trial
    message = trial["message"]
    # Python exits 1 after the traceback (torch prefixes its lines with "[rank1]:"); a gloo thread
    # still running at interpreter exit can abort the process instead: either way it is rank 1's.
    exited = message.startswith("rank 1: exit code 1: ") and message.endswith("RuntimeError: rank 1 crashed on purpose")
    aborted = message.startswith("rank 1: killed by signal 6 SIGABRT")
    assert exited or aborted, trial
    assert "rank 1 crashed on purpose" in (run_dir / "trials" / "ddp-crash-0" / "rank-1" / "log.txt").read_text()
    assert not live_trial_processes(run_dir)  # rank 0, waiting for its peer, was ended with the trial


def _logs(run_dir: Path) -> str:
    return "".join(f"\n--- {p}\n{p.read_text()[-2000:]}" for p in sorted(run_dir.glob("trials/*/**/log.txt")))
