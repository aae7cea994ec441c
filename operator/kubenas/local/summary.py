"""What ``kubenas run`` prints last, and best.json: the best trial, its architecture, where the results are.

``print_best`` and ``best_document`` take the objects, so ``kubenas export`` shows and writes
a cluster's best trial exactly as a local run does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubenas import api
from kubenas.local import report
from kubenas.local.results import ARCHITECTURE_FILE, BEST_DIR, RunDirectory


def print_summary(run_dir: RunDirectory, stream: Any = None) -> None:
    """The best trial's architecture and where the report is: the last thing a user sees."""
    stream = stream or sys.stdout
    best = run_dir.best()
    print_best(best, run_dir.load_status(), stream, run_dir.root / BEST_DIR / ARCHITECTURE_FILE)
    if best is None:
        print("no successful trial: see trials.jsonl and trials/*/log.txt", file=stream)
    print(f"results: {run_dir.root}/ (trials.jsonl, best.json)", file=stream)
    if (run_dir.root / report.REPORT_HTML).exists():
        print(f"report:  {run_dir.root / report.REPORT_HTML}", file=stream)


def print_best(
    best: Mapping[str, Any] | None,
    status: api.ExperimentStatus | None,
    stream: Any = None,
    architecture_file: Path | None = None,
) -> None:
    """The experiment's outcome and its best trial (best.json's document): metrics, parameters, architecture, front.

    Args:
        best: the best trial as ``best_document`` shapes it, or None.
        status: the Experiment's status, for its phase and reason.
        stream: where to print (default stdout).
        architecture_file: where the whole architecture file is, named after the shortened one.
    """
    stream = stream or sys.stdout
    if status is not None:
        line = f"experiment {status.phase}"
        if status.reason:
            line += f" ({status.reason}{': ' + status.message if status.message else ''})"
        print(line, file=stream)
    if best is None:
        return
    value = best.get("value")
    shown = f"{value:.4f}" if isinstance(value, float) else value
    print(f"best trial {best.get('trial')}: objective {shown}", file=stream)
    print(f"  metrics:      {compact(best.get('metrics'))}", file=stream)
    print(f"  parameters:   {compact(best.get('parameters'))}", file=stream)
    architecture = best.get("architecture")
    if isinstance(architecture, dict):
        # The trainer's file holds the whole configuration too; the network's shape is what to show.
        shape = architecture.get("architecture", architecture)
        print(f"  architecture: {compact(shape)}", file=stream)
        if architecture_file is not None:
            print(f"  (in full: {architecture_file})", file=stream)
    front = best.get("paretoFront") or []
    if front:
        names = [m.get("name") for m in (best.get("objective") or {}).get("metrics", [])]
        print(f"Pareto front ({len(front)} trials):", file=stream)
        for member in front[:10]:
            values = {n: member.get("metrics", {}).get(n) for n in names}
            print(f"  {member.get('name')}: {compact(values)}  {compact(member.get('parameters'))}", file=stream)
        if len(front) > 10:
            print(f"  … {len(front) - 10} more in best.json", file=stream)


def best_document(
    experiment: api.Experiment,
    best: api.TrialSummary,
    architecture: Any,
    front: Sequence[api.TrialSummary] = (),
    artifacts: str | None = None,
) -> dict[str, Any]:
    """best.json: the exported trial, its objective and architecture (and the Pareto front, for a Pareto objective).

    Args:
        experiment: the experiment it belongs to.
        best: the exported trial (``status.bestTrial``, or the front's first member).
        architecture: what the trial wrote as its architecture (locally), or the export's (on a cluster).
        front: the experiment's Pareto front (``status.paretoFront``).
        artifacts: where the trial's artifacts are (``best/`` locally; the export's ``artifact`` on a cluster).
    """
    spec = experiment.spec
    document: dict[str, Any] = {
        "experiment": experiment.metadata.name,
        "trial": best.name,
        "value": best.value,
        "objective": spec.objective.to_wire(),
        "parameters": dict(best.parameters),
        "metrics": dict(best.metrics),
        "architecture": architecture,
        "artifacts": artifacts,
    }
    if spec.objective.is_pareto:
        document["paretoFront"] = [s.to_wire() for s in front]
    return document


def compact(value: Any, limit: int = 400) -> str:
    """One line of JSON: floats to 4 significant digits, long lists counted instead of listed."""

    def shrink(item: Any) -> Any:
        if isinstance(item, float):
            return int(item) if item.is_integer() and abs(item) < 1e15 else float(f"{item:.4g}")
        if isinstance(item, dict):
            return {k: shrink(v) for k, v in item.items() if v is not None}
        if isinstance(item, list):
            if len(item) > 8 or any(isinstance(v, dict | list) for v in item):
                return f"<{len(item)} items>"
            return [shrink(v) for v in item]
        return item

    text = json.dumps(shrink(value), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
