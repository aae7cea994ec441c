"""The results directory of a local run (``runs/<experiment>/``): the run's whole durable state.

```
experiment.yaml        the manifest as run
run.json               the run's identity (uid) and the experiment status, rewritten as it changes
trials/<name>/         trial.json (the Trial object), parameters.json, log.txt, termination-log, output/,
                       checkpoint/ (KUBENAS_CHECKPOINT_DIR: a trial run again after an interruption resumes from it),
                       measurement-log (a later latency measurement's result)
trials/<name>/rank-<i>/  log.txt and termination-log of rank i > 0 of a multi-process trial (replicas)
trials.jsonl           one line per finished trial, appended and fsync'd as it ends
processes.json         pid, process group and start time of every live trial process
best.json              the best trial (parameters, metrics, architecture); best/ holds its artifacts
                       (links into .best-<id>/, which one rename of the link .best replaces)
report.html, *.png     the report (``kubenas report DIR`` rebuilds it)
```

The Trial objects are the record a resumed run rebuilds everything from (the Suggester
replays them); every write is atomic (temporary file, fsync, rename, fsync of the directory),
so ``kill -9`` at any instant leaves either the old or the new version of a file, never a
torn one; best/ and best.json change together.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubenas import api
from kubenas.local.files import (
    append_durably,
    copy_tree_within,
    fsync_directory,
    read_regular_file,
    remove_tree,
    replace_with_link,
    write_atomically,
)
from kubenas.local.processes import ProcessRegistry

TRIALS_JSONL = "trials.jsonl"
BEST_JSON = "best.json"
BEST_DIR = "best"
ARCHITECTURE_FILE = "architecture.json"
MAX_ARCHITECTURE_BYTES = 1024 * 1024
BEST_CURRENT = ".best"
BEST_VERSION_PREFIX = ".best-"
BEST_ARTIFACTS = "artifacts"


class RunLockedError(RuntimeError):
    """Another ``kubenas run`` is using this results directory."""


def write_json(path: Path, value: Any) -> None:
    write_atomically(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


class RunDirectory:
    """One experiment's results directory.

    Args:
        root: the directory, e.g. ``runs/digits-nas``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.trials_dir = root / "trials"
        self.processes = ProcessRegistry(root / "processes.json")
        self._lock_handle: Any = None

    # ----------------------------------------------------------------- lifecycle

    def exists(self) -> bool:
        return (self.root / "run.json").exists() or self.trials_dir.exists()

    def create(self) -> None:
        self.trials_dir.mkdir(parents=True, exist_ok=True)

    def lock(self) -> None:
        """Take the directory for this process; released by the OS even on ``kill -9``.

        Raises:
            RunLockedError: another runner holds it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "a+")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RunLockedError(f"{self.root} is in use by another `kubenas run`") from None
        self._lock_handle = handle

    def unlock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    # ----------------------------------------------------------------- run

    def save_manifest(self, text: str) -> None:
        write_atomically(self.root / "experiment.yaml", text.encode())

    def manifest_text(self) -> str | None:
        with contextlib.suppress(OSError):
            return (self.root / "experiment.yaml").read_text(encoding="utf-8")
        return None

    def run_info(self) -> dict[str, Any]:
        info = read_json(self.root / "run.json")
        return info if isinstance(info, dict) else {}

    def uid(self) -> str:
        """The run's stable uid (the Experiment's metadata.uid), created on first use."""
        info = self.run_info()
        if not isinstance(info.get("uid"), str):
            info["uid"] = str(uuid.uuid4())
            write_json(self.root / "run.json", info)
        return str(info["uid"])

    def load_status(self) -> api.ExperimentStatus | None:
        raw = self.run_info().get("status")
        if not isinstance(raw, dict):
            return None
        try:
            return api.ExperimentStatus.model_validate(raw)
        except ValueError:
            return None

    def save_status(self, status: api.ExperimentStatus) -> None:
        info = self.run_info()
        info["status"] = status.to_wire()
        write_json(self.root / "run.json", info)

    # ----------------------------------------------------------------- trials

    def trial_dir(self, name: str) -> Path:
        return self.trials_dir / name

    def rank_dir(self, name: str, rank: int) -> Path:
        """Where rank ``rank`` of a multi-process trial keeps its log and result: rank 0 in the trial's directory."""
        return self.trial_dir(name) if rank == 0 else self.trial_dir(name) / f"rank-{rank}"

    def termination_log(self, name: str, rank: int = 0) -> Path:
        return self.rank_dir(name, rank) / "termination-log"

    def measurement_log(self, name: str) -> Path:
        """The result of the latest latency measurement made after the trial (its termination log)."""
        return self.trial_dir(name) / "measurement-log"

    def log_path(self, name: str, rank: int = 0) -> Path:
        return self.rank_dir(name, rank) / "log.txt"

    def output_dir(self, name: str) -> Path:
        return self.trial_dir(name) / "output"

    def checkpoint_dir(self, name: str) -> Path:
        """Where the trial saves what it needs to resume (kept when it runs again; not an artifact)."""
        return self.trial_dir(name) / "checkpoint"

    def parameters_file(self, name: str) -> Path:
        return self.trial_dir(name) / "parameters.json"

    def save_trial(self, trial: api.Trial) -> None:
        directory = self.trial_dir(trial.name)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "trial.json", trial.to_wire())

    def load_trials(self) -> list[api.Trial]:
        """Every Trial of the run, by index (a trial directory without a readable trial.json is skipped)."""
        trials = []
        if self.trials_dir.is_dir():
            for path in self.trials_dir.glob("*/trial.json"):
                raw = read_json(path)
                if raw is None:
                    continue
                with contextlib.suppress(ValueError):
                    trials.append(api.Trial.model_validate(raw))
        return sorted(trials, key=lambda t: t.spec.index)

    def reset_trial_files(self, name: str) -> None:
        """Forget a previous attempt's result and log, so a rerun is judged on its own output."""
        self.termination_log(name).unlink(missing_ok=True)
        remove_tree(self.output_dir(name))
        for rank_dir in self.trial_dir(name).glob("rank-*"):
            remove_tree(rank_dir)
        log = self.log_path(name)
        if log.exists():
            os.replace(log, log.with_suffix(".previous.txt"))

    # ----------------------------------------------------------------- trials.jsonl

    def append_finished(self, record: Mapping[str, Any]) -> None:
        """Append one finished trial to trials.jsonl and fsync: once this returns, the result survives a crash."""
        line = (json.dumps(record, sort_keys=False, separators=(",", ":")) + "\n").encode()
        append_durably(self.root / TRIALS_JSONL, line)

    def finished_records(self) -> list[dict[str, Any]]:
        """The lines of trials.jsonl (a torn last line, from a crash mid-write, is dropped and repaired)."""
        path = self.root / TRIALS_JSONL
        try:
            data = path.read_bytes()
        except OSError:
            return []
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            write_atomically(path, data)
        records = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    records.append(value)
        return records

    # ----------------------------------------------------------------- best

    def write_best(self, best: Mapping[str, Any], artifacts_from: Path | None) -> list[str]:
        """Replace best/ (the best trial's artifacts) and best.json together; returns the artifacts left out.

        A new version is written in full into a directory of its own (``.best-<id>/`` holding
        ``best.json`` and ``artifacts/``), then the link ``.best`` is pointed at it in one rename.
        ``best`` and ``best.json`` are fixed links through ``.best``, so a reader or a crash sees
        the old pair or the new one, never a mix. Links out of the trial's output and special files
        are not copied (see ``files.copy_tree_within``).
        """
        version = self.root / f"{BEST_VERSION_PREFIX}{uuid.uuid4().hex[:12]}"
        version.mkdir()
        artifacts = version / BEST_ARTIFACTS
        if artifacts_from is not None and artifacts_from.is_dir():
            skipped = copy_tree_within(artifacts_from, artifacts)
        else:
            artifacts.mkdir()
            skipped = []
        write_json(version / BEST_JSON, dict(best))
        fsync_directory(version)
        replace_with_link(self.root / BEST_CURRENT, version.name)
        self._link(BEST_DIR, f"{BEST_CURRENT}/{BEST_ARTIFACTS}")
        self._link(BEST_JSON, f"{BEST_CURRENT}/{BEST_JSON}")
        self._remove_best_versions(keep=version.name)
        return skipped

    def _link(self, name: str, target: str) -> None:
        """Make ``name`` the link to ``target`` (once; a run written before these were links is converted)."""
        path = self.root / name
        if path.is_symlink() and os.readlink(path) == target:
            return
        if path.is_dir() and not path.is_symlink():
            os.replace(path, self.root / f"{BEST_VERSION_PREFIX}old-{uuid.uuid4().hex[:12]}")
        replace_with_link(path, target)

    def _remove_best_versions(self, keep: str) -> None:
        for path in self.root.glob(f"{BEST_VERSION_PREFIX}*"):
            if path.name != keep:
                remove_tree(path)

    def best(self) -> dict[str, Any] | None:
        value = read_json(self.root / BEST_JSON)
        return value if isinstance(value, dict) else None


def trial_record(trial: api.Trial, value: float | None) -> dict[str, Any]:
    """A finished trial as one trials.jsonl line: flat, for jq and pandas."""
    status = trial.status
    duration = None
    if status.start_time and status.completion_time:
        duration = round((status.completion_time - status.start_time).total_seconds(), 3)
    record: dict[str, Any] = {
        "name": trial.name,
        "index": trial.spec.index,
        "phase": str(status.phase),
        "reason": str(status.reason) if status.reason else None,
        "message": status.message,
        "parameters": dict(trial.spec.parameters),
        "metrics": dict(status.metrics),
        "noisyMetrics": list(status.noisy_metrics),
        "value": value,
        "steps": status.step,
        "exitCode": status.exit_code,
        "startTime": status.start_time.isoformat() if status.start_time else None,
        "completionTime": status.completion_time.isoformat() if status.completion_time else None,
        "durationSeconds": duration,
        "curve": [[p.step, p.value] for p in status.curve],
    }
    return record


def read_architecture(output_dir: Path) -> Any:
    """The architecture the trial wrote (``architecture.json`` in its output, at most 1 MiB of JSON), or None."""
    data = read_regular_file(output_dir / ARCHITECTURE_FILE, MAX_ARCHITECTURE_BYTES + 1)
    if data is None or len(data) > MAX_ARCHITECTURE_BYTES:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
