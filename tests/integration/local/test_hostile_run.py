"""`kubenas run` against hostile values and trials, with the real runner: every problem becomes a failed trial, a
note or a one-line refusal, never a traceback, and --resume never meets it again as a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path

from run_helpers import records, run_kubenas, stub_manifest

MODES = ["hostile-output", "surrogate-result", "a\0b", "[/]\x1b[2J"]


def test_hostile_values_and_trials_end_as_failed_trials_or_notes_and_resume_cleanly(
    tmp_path: Path, write_manifest
) -> None:
    document = stub_manifest(
        "hostile",
        max_trials=len(MODES),
        parallel=2,
        max_failed=10,
        args=["--epochs", "1", "--sleep", "0", "--mode=${parameters.mode}"],
        parameters=[{"name": "mode", "type": "categorical", "values": MODES}],
    )
    manifest = write_manifest(document)
    result = run_kubenas("run", str(manifest), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    run_dir = tmp_path / "runs" / "hostile"
    by_mode = {r["parameters"]["mode"]: r for r in records(run_dir)}
    assert set(by_mode) == set(MODES)

    nul = by_mode["a\0b"]  # Popen would raise ValueError: embedded null byte
    assert (nul["phase"], nul["reason"]) == ("Failed", "ExitCode")
    assert "('--mode=a\\x00b') holds a NUL byte" in nul["message"]
    surrogate = by_mode["surrogate-result"]
    assert (surrogate["phase"], surrogate["reason"]) == ("Failed", "InvalidResult")
    assert "metric name '\\ud800' holds a lone surrogate" in surrogate["message"]
    assert by_mode["[/]\x1b[2J"]["phase"] == "Succeeded"
    assert "[/]\\x1b[2J" in result.stdout and "\x1b" not in result.stdout  # shown, not obeyed

    # The best trial left link loops, links out and a FIFO: best/ holds its files and inside links only.
    assert json.loads((run_dir / "best.json").read_text())["parameters"] == {"mode": "hostile-output"}
    best = run_dir / "best"
    assert (best / "model.pt").read_bytes() == b"weights"
    assert os.readlink(best / "loop-a") == "loop-b"
    assert not any(os.path.lexists(best / name) for name in ("root", "up", "pipe"))
    assert "note: best/ leaves out 3 item(s)" in result.stdout
    assert (run_dir / "report.html").exists()

    again = run_kubenas("run", str(manifest), "--output", "runs", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr  # nothing above comes back as a crash on resume
    assert "Traceback" not in again.stdout + again.stderr
    assert len(records(run_dir)) == len(MODES)


def test_a_hostile_manifest_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    """The unit table checks each refusal in process; this checks the installed command path once."""
    result = run_kubenas("run", "/dev/zero", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "kubenas run: /dev/zero: larger than 1024 KiB; not a manifest kubenas reads\n"
    assert not (tmp_path / "runs").exists()
