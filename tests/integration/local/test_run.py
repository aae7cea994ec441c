"""`kubenas run` end to end with a stub trial (the real SDK, no torch): results, resume, failures, Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubenas import cli
from run_helpers import (
    child_env,
    kubenas_command,
    live_trial_processes,
    records,
    run_kubenas,
    start_kubenas,
    stub_manifest,
    wait_for,
)


def test_small_experiment_runs_to_a_best_trial_and_a_report(tmp_path: Path, write_manifest, capsys) -> None:
    manifest = write_manifest(stub_manifest("small", max_trials=4, parallel=2))
    result = run_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "runs" / "small"

    lines = records(run_dir)
    assert sorted(r["name"] for r in lines) == ["small-0", "small-1", "small-2", "small-3"]
    assert all(r["phase"] == "Succeeded" for r in lines)
    # ${parameters.x} reached the args: the stub exits 4 when its --x disagrees with KUBENAS_PARAMETERS.
    assert all(r["exitCode"] == 0 for r in lines)
    assert all(r["curve"] and r["durationSeconds"] > 0 for r in lines)

    best = json.loads((run_dir / "best.json").read_text())
    assert best["value"] == max(r["value"] for r in lines)
    assert best["trial"] == max(lines, key=lambda r: r["value"])["name"]
    assert best["architecture"] == {"stub": True}
    assert (run_dir / "best" / "architecture.json").exists()
    for name in ("report.html", "best_so_far.png", "parameters.png", "curves.png"):
        assert (run_dir / name).stat().st_size > 1000, name
    assert not (run_dir / "pareto.png").exists()

    # Two trials at once on this machine's CPUs: the threads were split between them.
    log = (run_dir / "trials" / "small-0" / "log.txt").read_text()
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"threads={expected}" in log

    # Not a terminal: plain lines, no control sequences, and the summary a user needs.
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert "small-3 Succeeded" in result.stdout
    assert f"best trial {best['trial']}" in result.stdout
    assert "report:  runs/small/report.html" in result.stdout

    # The report rebuilds from the directory alone.
    (run_dir / "report.html").unlink()
    assert cli.main(["report", str(run_dir)]) == 0
    assert best["trial"] in (run_dir / "report.html").read_text()

    # A second run into the same directory is refused rather than mixed in.
    assert cli.main(["run", str(manifest), "--output", str(tmp_path / "runs")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_kill_9_of_the_runner_then_resume_runs_exactly_max_trials(tmp_path: Path, write_manifest) -> None:
    manifest = write_manifest(
        stub_manifest("crash", max_trials=5, parallel=2, args=["--epochs", "8", "--sleep", "0.25"])
    )
    run_dir = tmp_path / "runs" / "crash"
    runner = start_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path, log=tmp_path / "first.log")
    try:
        wait_for(
            lambda: len(records(run_dir)) >= 2 and len(live_trial_processes(run_dir)) >= 2, what="2 done, 2 running"
        )
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    finished_before = {r["name"] for r in records(run_dir)}
    # The running trials got their parent-death signal: nobody trains for a dead runner.
    wait_for(lambda: live_trial_processes(run_dir) == [], timeout=20, what="trials to end with their runner")

    result = run_kubenas("run", str(manifest), "--output", "runs", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = records(run_dir)
    names = [r["name"] for r in lines]
    assert sorted(names) == [f"crash-{i}" for i in range(5)], names  # none lost, none repeated, none extra
    assert all(r["phase"] == "Succeeded" for r in lines)
    assert finished_before <= set(names)
    assert sorted(p.name for p in (run_dir / "trials").iterdir()) == sorted(names)
    assert live_trial_processes(run_dir) == []
    status = json.loads((run_dir / "run.json").read_text())["status"]
    assert status["phase"] == "Succeeded" and status["trials"]["succeeded"] == 5


def test_a_trial_that_finishes_while_the_runner_is_dead_keeps_its_result_on_resume(
    tmp_path: Path, write_manifest
) -> None:
    """kill -9 of the runner; one trial (which finishes its work when asked to stop) completes meanwhile, the
    other is still held when --resume starts: the first is kept and never run again, the second is ended and
    run again, and the budget counts each once."""
    hold = tmp_path / "hold"
    hold.mkdir()
    for name in ("fin-0", "fin-1"):
        (hold / name).touch()  # held from their first epoch on
    args = ["--epochs", "2", "--sleep", "0.05", "--hold-dir", str(hold), "--ignore-sigterm"]
    manifest = write_manifest(stub_manifest("fin", max_trials=3, parallel=2, args=args))
    run_dir = tmp_path / "runs" / "fin"
    runner = start_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path, log=tmp_path / "first.log")
    try:
        try:
            wait_for(lambda: all(started(run_dir, name) for name in ("fin-0", "fin-1")), what="2 trials started")
            (hold / str(registered(run_dir)["fin-1"])).touch()  # fin-1 stays held past its name's release
        finally:
            runner.send_signal(signal.SIGKILL)
            runner.wait()
        survivors = live_trial_processes(run_dir)
        assert len(survivors) == 2, "these trials outlive the runner's death signal, on purpose"

        (hold / "fin-0").unlink()  # fin-0 finishes with nobody watching
        fin_0 = next(p for p in survivors if p.environ().get("KUBENAS_TRIAL") == "fin-0")
        wait_for(lambda: not fin_0.is_running() or fin_0.status() == psutil.STATUS_ZOMBIE, what="fin-0 to finish")
        assert (run_dir / "trials" / "fin-0" / "termination-log").exists()
        assert records(run_dir) == []  # the runner never saw it finish
        (hold / "fin-1").unlink()  # its rerun must not be held; the orphan still is, by its pid

        result = run_kubenas("run", str(manifest), "--output", "runs", "--resume", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "fin-0 finished while the runner was stopped" in result.stdout
        assert "left running by the interrupted run (fin-1)" in result.stdout

        lines = records(run_dir)
        assert sorted(r["name"] for r in lines) == ["fin-0", "fin-1", "fin-2"]  # as budgeted, each once
        assert all(r["phase"] == "Succeeded" for r in lines), lines
        kept = next(r for r in lines if r["name"] == "fin-0")
        assert kept["metrics"]["accuracy"] > 0 and "finished while the runner was stopped" in kept["message"]
        trial_dir = run_dir / "trials" / "fin-0"
        assert not (trial_dir / "log.previous.txt").exists()  # not run again
        assert (trial_dir / "log.txt").read_text().count("trial fin-0 params=") == 1
        assert (run_dir / "trials" / "fin-1" / "log.previous.txt").exists()  # the held one ran again
        assert live_trial_processes(run_dir) == []
    finally:
        shutil.rmtree(hold, ignore_errors=True)  # never leave a held trial behind
        for proc in live_trial_processes(run_dir):
            proc.kill()


def started(run_dir: Path, name: str) -> bool:
    """The stub trial printed its first line (after its signal handling is set up)."""
    log = run_dir / "trials" / name / "log.txt"
    return log.exists() and f"trial {name} params=" in log.read_text()


def registered(run_dir: Path) -> dict[str, int]:
    """Trial name → pid, from the runner's process registry."""
    try:
        return {r["trial"]: r["pid"] for r in json.loads((run_dir / "processes.json").read_text())}
    except (OSError, ValueError):
        return {}


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path: Path, write_manifest, capsys) -> None:
    manifest = write_manifest(
        stub_manifest("stop", max_trials=3, parallel=2, args=["--epochs", "40", "--sleep", "0.25"])
    )
    run_dir = tmp_path / "runs" / "stop"
    runner = start_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path, log=tmp_path / "first.log")
    wait_for(lambda: len(live_trial_processes(run_dir)) >= 2, what="trials running")
    # Meanwhile a second runner on the same directory is turned away.
    assert cli.main(["run", str(manifest), "--output", str(tmp_path / "runs"), "--resume"]) == 2
    assert "in use by another" in capsys.readouterr().err
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=30) == 130
    output = (tmp_path / "first.log").read_text()
    assert "--resume" in output
    assert live_trial_processes(run_dir) == []
    assert records(run_dir) == []  # nothing had finished; nothing half-done was recorded as a result
    assert json.loads((run_dir / "processes.json").read_text()) == []

    manifest.write_text(manifest.read_text().replace('"40"', '"2"').replace("'40'", "'2'"))
    result = run_kubenas("run", str(manifest), "--output", "runs", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(r["name"] for r in records(run_dir)) == ["stop-0", "stop-1", "stop-2"]


def test_each_failure_kind_is_classified_and_counted(tmp_path: Path, write_manifest) -> None:
    modes = ["crash", "hang", "no-objective", "garbage"]
    manifest = write_manifest(
        stub_manifest(
            "failing",
            max_trials=4,
            parallel=4,
            max_failed=10,
            deadline=4,
            args=["--epochs", "2", "--sleep", "0.05"],
            parameters=[{"name": "mode", "type": "categorical", "values": modes}],
        )
    )
    result = run_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    by_mode = {r["parameters"]["mode"]: r for r in records(tmp_path / "runs" / "failing")}
    assert set(by_mode) == set(modes)
    assert all(r["phase"] == "Failed" for r in by_mode.values())
    assert by_mode["crash"]["reason"] == "ExitCode"
    assert "boom" in by_mode["crash"]["message"]  # the log's last line says why
    assert by_mode["hang"]["reason"] == "DeadlineExceeded"
    assert by_mode["no-objective"]["reason"] == "MetricsMissing"
    assert by_mode["garbage"]["reason"] == "InvalidResult"
    assert "no successful trial" in result.stdout


def test_too_many_failures_end_the_experiment(tmp_path: Path, write_manifest) -> None:
    manifest = write_manifest(
        stub_manifest("fragile", max_trials=6, parallel=1, max_failed=1, args=["--mode", "crash", "--sleep", "0"])
    )
    result = run_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 1
    lines = records(tmp_path / "runs" / "fragile")
    assert len(lines) == 2 and all(r["reason"] == "ExitCode" for r in lines)
    assert "TooManyFailures" in result.stdout


def test_an_invalid_manifest_is_refused_with_the_field(tmp_path: Path, write_manifest, capsys) -> None:
    document = stub_manifest("bad")
    document["spec"]["budget"]["maxTrials"] = 0
    assert cli.main(["run", str(write_manifest(document)), "--output", str(tmp_path / "runs")]) == 2
    assert "spec.budget.maxTrials" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_pareto_run_reports_its_front(tmp_path: Path, write_manifest) -> None:
    document = stub_manifest("front", max_trials=5, parallel=2, args=["--epochs", "2", "--sleep", "0"])
    document["spec"]["objective"] = {
        "strategy": "pareto",
        "metrics": [{"name": "accuracy", "goal": "maximize"}, {"name": "params", "goal": "minimize"}],
    }
    result = run_kubenas("run", str(write_manifest(document)), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "runs" / "front"
    lines = [r for r in records(run_dir) if r["phase"] == "Succeeded"]
    front = json.loads((run_dir / "best.json").read_text())["paretoFront"]

    def dominated(r: dict) -> bool:
        a, p = r["metrics"]["accuracy"], r["metrics"]["params"]
        return any(
            o["metrics"]["accuracy"] >= a and o["metrics"]["params"] <= p and o["metrics"] != r["metrics"]
            for o in lines
        )

    assert {m["name"] for m in front} == {r["name"] for r in lines if not dominated(r)}
    assert (run_dir / "pareto.png").stat().st_size > 1000
    assert f"Pareto front ({len(front)} trials)" in result.stdout


def latest(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last trials.jsonl line of each trial: a trial measured again after it finished appears again."""
    return {r["name"]: r for r in lines}


def noisy_latency_run(tmp_path: Path, write_manifest, name: str, extra: list[str]) -> Path:
    args = ["--epochs", "1", "--sleep", "0", "--mode", "latency", *extra]
    document = stub_manifest(name, max_trials=6, parallel=2, args=args)
    document["spec"]["objective"] = {
        "strategy": "pareto",
        "metrics": [{"name": "accuracy", "goal": "maximize"}, {"name": "latency_ms", "goal": "minimize"}],
    }
    document["spec"]["costMeasurement"] = {"attempts": 2}
    result = run_kubenas("run", str(write_manifest(document)), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path / "runs" / name


def test_a_noisy_latency_without_a_model_to_measure_again_is_kept_off_the_front(tmp_path: Path, write_manifest) -> None:
    run_dir = noisy_latency_run(tmp_path, write_manifest, "noisy", [])
    done = [r for r in latest(records(run_dir)).values() if r["phase"] == "Succeeded"]
    noisy = {r["name"] for r in done if r["metrics"]["latency_noisy"] == 1}
    assert noisy and all(r.get("noisyMetrics") == (["latency_ms"] if r["name"] in noisy else []) for r in done)
    for name in noisy:  # the stub saves no model: both attempts fail, the trial's own value stays
        trial = json.loads((run_dir / "trials" / name / "trial.json").read_text())
        assert trial["status"]["costMeasurements"] == 2 and "latency_ms_trial" not in trial["status"]["metrics"]
    front = {m["name"] for m in json.loads((run_dir / "best.json").read_text())["paretoFront"]}
    assert front and not front & noisy


@pytest.mark.slow
def test_a_noisy_latency_is_measured_again_from_the_saved_model(tmp_path: Path, write_manifest) -> None:
    """The stub copies a real trained model and flags its own latency (= layers, in ms) noisy on odd layers."""
    model = tmp_path / "model"
    env = {**child_env(), "KUBENAS_OUTPUT_DIR": str(model), "KUBENAS_TERMINATION_LOG": str(tmp_path / "result")}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubenas_trial",
            "--param=dataset=digits",
            "--param=epochs=1",
            "--param=stages=1",
            "--param=width=8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr
    run_dir = noisy_latency_run(tmp_path, write_manifest, "remeasured", ["--model-from", str(model)])
    lines = records(run_dir)
    done = [r for r in latest(lines).values() if r["phase"] == "Succeeded"]
    measured = [r for r in done if "latency_ms_trial" in r["metrics"]]
    assert measured and all(r["metrics"]["latency_noisy"] == 0 for r in done if r not in measured), done
    for r in measured:
        attempts = json.loads((run_dir / "trials" / r["name"] / "trial.json").read_text())["status"]["costMeasurements"]
        assert r["metrics"]["latency_ms_trial"] == r["parameters"]["layers"]  # the stub's own, flagged value
        assert r["metrics"]["latency_ms"] < 1.0  # the 8-wide CNN timed for real: far below the flagged 1 or 3 ms
        assert len([line for line in lines if line["name"] == r["name"]]) == 1 + attempts
    trusted = [r for r in done if not r["noisyMetrics"]]

    def dominated(r: dict[str, Any]) -> bool:
        a, lat = r["metrics"]["accuracy"], r["metrics"]["latency_ms"]
        return any(
            o["metrics"]["accuracy"] >= a
            and o["metrics"]["latency_ms"] <= lat
            and o is not r
            and (o["metrics"]["accuracy"], o["metrics"]["latency_ms"]) != (a, lat)
            for o in trusted
        )

    front = {m["name"] for m in json.loads((run_dir / "best.json").read_text())["paretoFront"]}
    assert front == {r["name"] for r in trusted if not dominated(r)}


def test_a_stop_early_constraint_ends_an_infeasible_trial_before_it_trains(tmp_path: Path, write_manifest) -> None:
    """The stub reports params = 1000·layers at step 0; layers 4 breaks params <= 2000 and is stopped there."""
    document = stub_manifest("lean", max_trials=6, parallel=2, args=["--epochs", "4", "--sleep", "0.5"])
    document["spec"]["parameters"] = [
        {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
        {"name": "layers", "type": "categorical", "values": [1, 4]},
    ]
    document["spec"]["objective"]["constraints"] = [{"metric": "params", "max": 2000, "stopEarly": True}]
    document["spec"]["earlyStopping"] = {"rule": "none"}
    result = run_kubenas("run", str(write_manifest(document)), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = records(tmp_path / "runs" / "lean")
    heavy = [r for r in lines if r["parameters"]["layers"] == 4]
    light = [r for r in lines if r["parameters"]["layers"] == 1]
    assert heavy and light, [r["parameters"] for r in lines]
    for r in heavy:
        assert r["phase"] == "EarlyStopped" and r["reason"] == "EarlyStopped", r
        assert r["message"].startswith("infeasible: params = 4000 reported while running"), r["message"]
        assert (r["steps"] or 0) < 4  # stopped before its last epoch, not trained to the end
    assert all(r["phase"] == "Succeeded" for r in light)


@pytest.mark.parametrize("announce", [True, False], ids=["announced", "unannounced"])
def test_a_trial_that_announced_its_final_step_is_not_stopped_while_finishing(
    tmp_path: Path, write_manifest, announce: bool
) -> None:
    """One epoch, then 1.5 s before the result: the median rule would stop every trial worse than the first then."""
    args = ["--epochs", "1", "--sleep", "0", "--linger", "1.5", *(["--announce-final-step"] if announce else [])]
    document = stub_manifest("finishing", max_trials=4, parallel=1, args=args)
    document["spec"]["earlyStopping"] = {"rule": "median", "minEpochs": 1, "minTrials": 1}
    result = run_kubenas("run", str(write_manifest(document)), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = sorted(records(tmp_path / "runs" / "finishing"), key=lambda r: r["index"])
    first = lines[0]["metrics"]["accuracy"]
    if announce:
        assert all(r["phase"] == "Succeeded" for r in lines), [(r["name"], r["phase"], r["message"]) for r in lines]
        assert any(r["metrics"]["accuracy"] < first for r in lines[1:])  # some would have been stopped
    else:
        # The contrast: without the announcement the rule cannot tell finishing from training.
        assert any(r["phase"] == "EarlyStopped" and r["steps"] == 1 for r in lines), lines


def test_on_a_terminal_the_live_view_shows_progress_running_trials_and_the_best(tmp_path: Path, write_manifest) -> None:
    manifest = write_manifest(stub_manifest("tty", max_trials=2, parallel=2, args=["--epochs", "6", "--sleep", "0.3"]))
    primary, secondary = pty.openpty()
    env = {**child_env(), "COLUMNS": "140", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        kubenas_command("run", str(manifest), "--output", "runs"),
        cwd=tmp_path,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closed: the runner exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert proc.wait(timeout=60) == 0
    screen = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", b"".join(chunks)).decode(errors="replace")
    assert "\x1b" in b"".join(chunks).decode(errors="replace")  # drawn, not printed line by line
    assert "2/2 trials" in screen and "ETA" in screen
    assert "running trial" in screen and "tty-0" in screen and "layers=" in screen
    assert "best so far" in screen
    assert "report:" in screen
