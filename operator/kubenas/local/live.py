"""What ``kubenas run`` shows while it works.

On a terminal: a rich live view (progress bar with ETA, the running trials with their
parameters, step and current metric, and the best trial so far). Anywhere else (CI logs,
pipes, files): plain, timestamped lines, one per event, with no control characters.

``experiment_view`` draws an experiment from its objects alone (the Experiment and its Trials,
read from a cluster by ``kubenas status`` or from a run directory), with the same values,
outcomes and best-so-far text as the live view.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Protocol

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kubenas import api, objective, plan

PLAIN_PROGRESS_EVERY = 30.0
MAX_PARAMETERS_SHOWN = 120


@dataclass
class RunningTrial:
    """A running trial as shown: its parameters and what its last scrape said."""

    name: str
    parameters: Mapping[str, api.ParameterValue]
    started: float
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Snapshot:
    """Everything the view shows at one instant."""

    experiment: str
    metric: str
    value_label: str
    finished: int
    total: int
    running: Sequence[RunningTrial]
    best: api.TrialSummary | None
    pareto_size: int
    failed: int
    queued: int = 0  # of ``running``: waiting for their queue (Kueue) to admit them


class View(Protocol):
    def start(self, experiment: str, total: int, resumed: int) -> None: ...
    def trial_started(self, name: str, parameters: Mapping[str, api.ParameterValue]) -> None: ...
    def trial_finished(self, trial: api.Trial, value: float | None, snapshot: Snapshot) -> None: ...
    def update(self, snapshot: Snapshot) -> None: ...
    def message(self, text: str) -> None: ...
    def stop(self) -> None: ...


def format_parameters(parameters: Mapping[str, api.ParameterValue], limit: int = MAX_PARAMETERS_SHOWN) -> str:
    """``k=v`` pairs, floats to 4 significant digits, cut to ``limit`` characters."""
    parts = []
    for key, value in parameters.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable(text: str) -> str:
    """``text`` safe to print: control characters (a trial's log line may hold terminal escapes) and
    lone surrogates (which no stream can encode) are shown as escapes, e.g. ``\\x1b``."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Eta:
    """Remaining time from the pace of this session's finished trials (resumed ones do not count)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.done_here = 0

    def text(self, finished: int, total: int) -> str:
        if finished >= total:
            return "0:00"
        if self.done_here == 0:
            return "?"
        per_trial = (time.monotonic() - self.started) / self.done_here
        return format_duration(per_trial * (total - finished))


def noisy_note(trial: api.Trial) -> str:
    """``(noisy: latency_ms)`` for a trial that flagged metrics as unreliable (status.noisyMetrics), else ``""``."""
    noisy = trial.status.noisy_metrics
    return f"(noisy: {', '.join(noisy)})" if noisy else ""


def _outcome(trial: api.Trial, value: float | None) -> str:
    status = trial.status
    if status.phase == api.TrialPhase.SUCCEEDED:
        return " ".join(filter(None, [f"value={format_value(value)}", noisy_note(trial)]))
    reason = str(status.reason) if status.reason and str(status.reason) != str(status.phase) else ""
    if status.message:
        return f"{reason}: {status.message}" if reason else status.message
    return reason


def _best_text(snapshot: Snapshot) -> str:
    if snapshot.best is None:
        return "none yet"
    text = f"{snapshot.best.name} {snapshot.value_label}={format_value(snapshot.best.value)}"
    return text + (f" (Pareto front: {snapshot.pareto_size})" if snapshot.pareto_size else "")


class PlainView:
    """One line per event, for logs and pipes.

    Args:
        stream: where lines go (default stdout).
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.eta = _Eta()
        self._last_progress = time.monotonic()

    def _line(self, text: str) -> None:
        elapsed = format_duration(time.monotonic() - self.eta.started)
        self.stream.write(f"[{elapsed}] {printable(text)}\n")
        self.stream.flush()

    def start(self, experiment: str, total: int, resumed: int) -> None:
        more = f", resuming with {resumed} finished" if resumed else ""
        self._line(f"experiment {experiment}: {total} trials{more}")

    def trial_started(self, name: str, parameters: Mapping[str, api.ParameterValue]) -> None:
        self._line(f"{name} started: {format_parameters(parameters)}")

    def trial_finished(self, trial: api.Trial, value: float | None, snapshot: Snapshot) -> None:
        self.eta.done_here += 1
        self._line(
            f"{trial.name} {trial.status.phase}: {_outcome(trial, value)} | "
            f"{snapshot.finished}/{snapshot.total} done, best {_best_text(snapshot)}"
        )

    def update(self, snapshot: Snapshot) -> None:
        if time.monotonic() - self._last_progress < PLAIN_PROGRESS_EVERY:
            return
        self._last_progress = time.monotonic()
        running = ", ".join(f"{t.name}@{t.step if t.step is not None else '-'}" for t in snapshot.running) or "none"
        self._line(
            f"progress {snapshot.finished}/{snapshot.total}, running: {running}, "
            f"ETA {self.eta.text(snapshot.finished, snapshot.total)}"
        )

    def message(self, text: str) -> None:
        self._line(text)

    def stop(self) -> None:
        self.stream.flush()


class RichView:
    """The live terminal view.

    Args:
        console: the rich console to draw on (a terminal).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.eta = _Eta()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
        )
        self.task = self.progress.add_task("", total=1, eta="?")
        self.live = Live(console=console, refresh_per_second=4, transient=False)
        self._snapshot: Snapshot | None = None

    def start(self, experiment: str, total: int, resumed: int) -> None:
        self.progress.update(self.task, description=experiment, total=total, completed=resumed)
        self.live.start()
        if resumed:
            self.console.print(f"resuming {experiment}: {resumed} trials already finished")

    def trial_started(self, name: str, parameters: Mapping[str, api.ParameterValue]) -> None:
        shown = escape(printable(format_parameters(parameters)))
        self.console.print(f"[cyan]{name}[/] started  [dim]{shown}[/]", highlight=False)

    def trial_finished(self, trial: api.Trial, value: float | None, snapshot: Snapshot) -> None:
        self.eta.done_here += 1
        colour = "green" if trial.status.phase == api.TrialPhase.SUCCEEDED else "yellow"
        if trial.status.phase == api.TrialPhase.FAILED:
            colour = "red"
        outcome = escape(printable(_outcome(trial, value)))  # messages carry a trial's log line: text, not markup
        self.console.print(f"[{colour}]{trial.name} {trial.status.phase}[/]  {outcome}", highlight=False, markup=True)
        self.update(snapshot)

    def update(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self.progress.update(
            self.task,
            completed=snapshot.finished,
            total=snapshot.total,
            eta=self.eta.text(snapshot.finished, snapshot.total),
        )
        self.live.update(self._render(snapshot))

    def _render(self, snapshot: Snapshot) -> Group:
        table = Table(expand=True, title=None, show_edge=False)
        table.add_column("running trial", no_wrap=True)
        table.add_column("parameters", ratio=1, overflow="fold")
        table.add_column("step", justify="right")
        table.add_column(snapshot.metric, justify="right")
        table.add_column("time", justify="right")
        now = time.monotonic()
        for trial in snapshot.running:
            table.add_row(
                trial.name,
                Text(printable(format_parameters(trial.parameters, limit=400))),  # the user's text, not markup
                "-" if trial.step is None else str(trial.step),
                format_value(trial.metrics.get(snapshot.metric)),
                format_duration(now - trial.started),
            )
        parts: list[Any] = [self.progress]
        if snapshot.running:
            parts.append(table)
        parts.append(Panel(_best_text(snapshot), title="best so far", title_align="left", expand=True))
        if snapshot.failed:
            parts.append(f"[red]{snapshot.failed} failed[/] (see trials/<name>/log.txt)")
        return Group(*parts)

    def message(self, text: str) -> None:
        self.console.print(printable(text), highlight=False, markup=False)

    def stop(self) -> None:
        if self._snapshot is not None:
            self.live.update(self._render(self._snapshot))
        self.live.stop()


def make_view(stream: IO[str] | None = None) -> View:
    """The rich view on a terminal, plain lines otherwise."""
    stream = stream or sys.stdout
    if stream.isatty():
        return RichView(Console(file=stream))
    return PlainView(stream)


# ---------------------------------------------------------------------- an experiment from its objects

MAX_TRIAL_ROWS = 50


def snapshot_of(experiment: api.Experiment, trials: Sequence[api.Trial], now: datetime) -> Snapshot:
    """The live view's snapshot of an experiment, from its objects alone.

    The best trial and the Pareto front are the Experiment status's (what the operator or the
    local runner last computed); running trials show their latest reported step and value.

    Args:
        experiment: the Experiment, with its status if it has one.
        trials: its Trials, any phase.
        now: the current time (running times are measured from each trial's start).
    """
    spec = experiment.spec
    status = experiment.status or api.ExperimentStatus()
    metric = objective.curve_metric(spec) or "objective"
    finished = [t for t in trials if t.phase.is_finished]
    running = [
        RunningTrial(
            name=t.name,
            parameters=t.spec.parameters,
            started=(t.status.start_time or now).timestamp(),
            step=t.status.step,
            metrics={metric: t.status.curve[-1].value} if t.status.curve else {},
        )
        for t in trials
        if not t.phase.is_finished
    ]
    front = status.pareto_front
    return Snapshot(
        experiment=experiment.metadata.name,
        metric=metric,
        value_label=metric if not spec.objective.is_multi else "objective",
        finished=len(finished),
        total=plan.planned_trials(spec, trials),
        running=running,
        best=status.best_trial or (front[0] if front else None),
        pareto_size=len(front),
        failed=sum(1 for t in finished if t.phase == api.TrialPhase.FAILED),
        queued=sum(1 for t in trials if t.phase == api.TrialPhase.QUEUED),
    )


def experiment_view(
    experiment: api.Experiment, trials: Sequence[api.Trial], now: datetime, limit: int = MAX_TRIAL_ROWS
) -> Group:
    """The experiment's phase, a table of its trials (phase, step, objective, reason) and the best so far.

    Args:
        experiment: the Experiment, with its status if it has one.
        trials: its Trials.
        now: the current time.
        limit: at most this many trials are listed: the unfinished ones, then the latest finished.
    """
    spec = experiment.spec
    status = experiment.status
    snapshot = snapshot_of(experiment, trials, now)
    phase = "no status yet (is the operator serving this namespace?)"
    if status is not None:
        phase = str(status.phase) + (f" ({status.reason})" if status.reason else "")
    header = Text.assemble(
        (experiment.metadata.name, "bold"),
        f"  {phase}  ·  {snapshot.finished}/{snapshot.total} trials finished, "
        f"{len(snapshot.running) - snapshot.queued} running",
        f", {snapshot.queued} queued" if snapshot.queued else "",
        f", {snapshot.failed} failed" if snapshot.failed else "",
    )
    parts: list[Any] = [header]
    if status is not None and status.message:
        parts.append(Text(status.message))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("trial", no_wrap=True)
    table.add_column("phase", no_wrap=True)
    table.add_column("step", justify="right")
    table.add_column(snapshot.value_label, justify="right")
    table.add_column("reason", overflow="fold")
    running = {t.name: t for t in snapshot.running}
    shown = _listed(trials, limit)
    for trial in shown:
        value = _objective_value(spec, trial)
        if trial.name in running:  # not a result yet: the latest value reported, marked
            latest = running[trial.name].metrics.get(snapshot.metric)
            value_text = "-" if latest is None else f"{format_value(latest)} ({snapshot.metric}, {trial.phase.lower()})"
            reason = ""
        else:
            value_text = format_value(value)
            if value is not None and not objective.is_trusted(spec.objective, trial):
                value_text += "~"  # from a noisy measurement: never the best
            reason = noisy_note(trial) if trial.phase == api.TrialPhase.SUCCEEDED else _outcome(trial, value)
        table.add_row(
            trial.name,
            str(trial.phase),
            "-" if trial.status.step is None else str(trial.status.step),
            value_text,
            Text(reason),  # messages carry a trial's log line: text, not markup
        )
    if trials:
        parts.append(table)
    if len(shown) < len(trials):
        parts.append(Text(f"… {len(trials) - len(shown)} earlier finished trials not listed", style="dim"))
    parts.append(Panel(_best_text(snapshot), title="best so far", title_align="left", expand=True))
    return Group(*parts)


def _objective_value(spec: api.ExperimentSpec, trial: api.Trial) -> float | None:
    if trial.phase != api.TrialPhase.SUCCEEDED:
        return None
    return objective.scalar_value(spec.objective, trial.status.metrics)


def _listed(trials: Sequence[api.Trial], limit: int) -> list[api.Trial]:
    """At most ``limit`` trials in index order: the unfinished ones first kept, then the latest finished."""
    ordered = sorted(trials, key=lambda t: t.spec.index)
    if len(ordered) <= limit:
        return ordered
    active = [t for t in ordered if not t.phase.is_finished][:limit]
    room = limit - len(active)
    done = [t for t in ordered if t.phase.is_finished][-room:] if room else []
    keep = {t.name for t in active} | {t.name for t in done}
    return [t for t in ordered if t.name in keep]
