"""Helpers for the local runner's tests: manifests for the stub trial, and `kubenas` run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from kubenas.local.runner import RUN_DIR_ENV

STUB = Path(__file__).with_name("stub_trial.py")


def stub_manifest(
    name: str,
    *,
    max_trials: int = 4,
    parallel: int = 2,
    args: list[str] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    deadline: int | None = None,
    max_failed: int = 3,
) -> dict[str, Any]:
    template: dict[str, Any] = {
        "spec": {
            "containers": [
                {
                    "name": "trial",
                    "image": "ghcr.io/kubenas/trial:0.1.0",
                    "command": ["python", str(STUB)],
                    "args": args if args is not None else ["--epochs", "3", "--sleep", "0.1", "--x=${parameters.x}"],
                }
            ]
        }
    }
    if deadline is not None:
        template["activeDeadlineSeconds"] = deadline
    spec: dict[str, Any] = {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": parameters
        or [
            {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
            {"name": "layers", "type": "int", "min": 1, "max": 4},
        ],
        "algorithm": {"name": "RandomSearch", "seed": 1},
        "budget": {"maxTrials": max_trials, "parallelTrials": parallel, "maxFailedTrials": max_failed},
        "trialTemplate": template,
    }
    return {"apiVersion": "kubenas.io/v1alpha1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec}


def kubenas_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubenas.cli", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_kubenas(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`kubenas ARGS` to completion, output captured (so not a terminal)."""
    return subprocess.run(
        kubenas_command(*args), cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def start_kubenas(*args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(kubenas_command(*args), cwd=cwd, env=child_env(), stdout=out, stderr=subprocess.STDOUT)


def records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "trials.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def live_trial_processes(run_dir: Path) -> list[psutil.Process]:
    """The run's trial processes still alive (not zombies), found by the run marker in their environment."""
    marker = str(run_dir.resolve())
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(RUN_DIR_ENV) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found
