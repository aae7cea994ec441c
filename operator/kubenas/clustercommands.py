"""``kubenas status|report|export EXPERIMENT``: an experiment on a cluster, shown as a local run is.

The objects come from ``clusterview`` (kubectl's kubeconfig, context and namespace rules);
the views are the local run's own: ``local.live.experiment_view`` for the table of trials and
the best so far, ``local.report.write`` for the HTML/PNG report, ``local.summary`` for the best
trial and best.json. Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live

from kubenas import api, clusterview
from kubenas.local import live, summary
from kubenas.local import report as local_report

EXPORT_FILES = ("best.json", "parameters.json", "metrics.json", "architecture.json")
PLAIN_WIDTH = 160


class CommandError(RuntimeError):
    """A reason to stop that the user can act on (one line)."""


def status(args: argparse.Namespace, stream: IO[str] | None = None) -> int:
    """``kubenas status EXPERIMENT [--watch]``: the trials and the best so far, once or until the experiment ends."""
    stream = stream or sys.stdout
    console = _console(stream)
    try:
        with clusterview.Cluster(args.kubeconfig, args.context, args.namespace) as cluster:

            def read() -> tuple[api.Experiment, list[api.Trial]]:
                return _parsed(cluster.read(args.experiment))

            experiment, trials = read()
            if args.watch:
                _watch(console, stream.isatty(), read, experiment, trials, args.interval)
            else:
                console.print(live.experiment_view(experiment, trials, datetime.now(UTC)))
    except (clusterview.ClusterError, CommandError) as exc:
        return _failed("status", exc)
    return 0


def report(args: argparse.Namespace) -> int:
    """``kubenas report EXPERIMENT -n NS -o DIR``: a local run's report, from the cluster's Trials."""
    try:
        with clusterview.Cluster(args.kubeconfig, args.context, args.namespace) as cluster:
            objects = cluster.read(args.dir, export=True)
        experiment, trials = _parsed(objects)
    except (clusterview.ClusterError, CommandError) as exc:
        return _failed("report", exc)
    out = Path(args.output or f"{experiment.metadata.name}-report")
    path = local_report.write(out, experiment, trials, experiment.status, _best(experiment, objects))
    print(f"report: {path}")
    return 0


def export(args: argparse.Namespace, stream: IO[str] | None = None) -> int:
    """``kubenas export EXPERIMENT -n NS -o DIR``: the best trial's best.json, parameters, metrics, architecture."""
    stream = stream or sys.stdout
    try:
        with clusterview.Cluster(args.kubeconfig, args.context, args.namespace) as cluster:
            objects = cluster.read(args.experiment, export=True)
        experiment, _ = _parsed(objects)
        best = _best(experiment, objects)
        if best is None:
            raise CommandError(f"{experiment.metadata.name} has no successful trial yet: nothing to export")
    except (clusterview.ClusterError, CommandError) as exc:
        return _failed("export", exc)
    status = experiment.status
    if objects.export is None:
        phase = status.phase if status else api.ExperimentPhase.PENDING
        note = f"note: {experiment.metadata.name} is {phase} and has no export yet: this is the best so far"
        print(note, file=stream)
    out = Path(args.output or f"{experiment.metadata.name}-best")
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "best.json": best,
        "parameters.json": best["parameters"],
        "metrics.json": best["metrics"],
        "architecture.json": best["architecture"],
    }
    for name, value in files.items():
        (out / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    summary.print_best(best, status, stream, out / "architecture.json")
    print(f"exported: {out}/ ({', '.join(EXPORT_FILES)})", file=stream)
    return 0


# ---------------------------------------------------------------------- helpers


def _failed(command: str, exc: Exception) -> int:
    print(f"kubenas {command}: {exc}", file=sys.stderr)
    return 1


def _parsed(objects: clusterview.ExperimentObjects) -> tuple[api.Experiment, list[api.Trial]]:
    if objects.experiment is None:
        status = objects.status
        seen = f" (status: {status.phase}, {status.reason}: {status.message})" if status and status.reason else ""
        raise CommandError(f"the Experiment {objects.name} does not parse: {objects.problem}{seen}")
    return objects.experiment, objects.trials


def _best(experiment: api.Experiment, objects: clusterview.ExperimentObjects) -> dict[str, Any] | None:
    """best.json's document: the export ConfigMap's trial when there is one, else the status's best so far."""
    status = experiment.status or api.ExperimentStatus()
    front = status.pareto_front
    chosen = status.best_trial or (front[0] if front else None)
    architecture: Any = None
    artifact = None
    data = objects.export
    if data is not None and data.get("trial"):
        chosen = api.TrialSummary(
            name=data["trial"],
            parameters=_json(data, "parameters.json", {}),
            metrics=_json(data, "metrics.json", {}),
            value=float(data["value"]) if data.get("value") else None,
        )
        architecture = _json(data, "architecture.json", None)
        artifact = data.get("artifact")
    if chosen is None:
        return None
    return summary.best_document(experiment, chosen, architecture, front, artifact)


def _json(data: Mapping[str, str], key: str, default: Any) -> Any:
    try:
        return json.loads(data[key]) if key in data else default
    except ValueError:
        return default


def _console(stream: IO[str]) -> Console:
    """A terminal gets colour and its own width; a pipe plain text wide enough not to fold every row."""
    if stream.isatty():
        return Console(file=stream)
    return Console(file=stream, width=PLAIN_WIDTH, no_color=True, highlight=False)


def _watch(
    console: Console,
    terminal: bool,
    read: Callable[[], tuple[api.Experiment, list[api.Trial]]],
    experiment: api.Experiment,
    trials: list[api.Trial],
    interval: float,
) -> None:
    """Redraw until the experiment has finished (Ctrl-C stops earlier).

    On a terminal the view is redrawn in place; elsewhere it is printed again whenever it changes.
    """
    try:
        if terminal:
            with Live(live.experiment_view(experiment, trials, datetime.now(UTC)), console=console) as screen:
                while not _finished(experiment):
                    time.sleep(interval)
                    experiment, trials = read()
                    screen.update(live.experiment_view(experiment, trials, datetime.now(UTC)))
            return
        last = None
        while True:
            seen = _fingerprint(experiment, trials)
            if seen != last:
                console.print(live.experiment_view(experiment, trials, datetime.now(UTC)))
                last = seen
            if _finished(experiment):
                return
            time.sleep(interval)
            experiment, trials = read()
    except KeyboardInterrupt:
        return


def _finished(experiment: api.Experiment) -> bool:
    return experiment.status is not None and experiment.status.phase.is_finished


def _fingerprint(experiment: api.Experiment, trials: list[api.Trial]) -> Any:
    status = experiment.status
    return (
        None if status is None else (status.phase, status.reason, status.best_value),
        tuple((t.name, t.phase, t.status.step) for t in trials),
    )
