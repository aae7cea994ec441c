"""The report of a local run: ``report.html`` and its PNGs, built from the results directory alone.

``kubenas run`` writes it when it stops; ``kubenas report DIR`` rebuilds it (e.g. after
copying a run elsewhere, or while a run is still going). ``kubenas report EXPERIMENT -n NS``
draws the same report from an Experiment's Trials on a cluster (``write`` takes the objects
from either source). Charts:

- ``best_so_far.png``: the objective of each trial in the order trials finished, and the
  best so far (one panel per objective metric for a multi-objective run);
- ``parameters.png``: the objective against each parameter, the best trial marked;
- ``curves.png``: learning curves, with early-stopped trials set apart;
- ``pareto.png`` (several objective metrics): every trial in the plane of the first two,
  the Pareto front joined up.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from kubenas import api, objective, plan
from kubenas.local.results import RunDirectory

REPORT_HTML = "report.html"
BEST_SO_FAR_PNG = "best_so_far.png"
PARAMETERS_PNG = "parameters.png"
CURVES_PNG = "curves.png"
PARETO_PNG = "pareto.png"
MAX_TABLE_ROWS = 1000

_PHASE_COLOURS = {
    api.TrialPhase.SUCCEEDED: "tab:blue",
    api.TrialPhase.EARLY_STOPPED: "tab:orange",
    api.TrialPhase.FAILED: "tab:red",
    api.TrialPhase.STOPPED: "tab:gray",
}


class ReportError(ValueError):
    """The directory is not a kubenas run directory."""


def load_run(root: Path) -> tuple[api.Experiment, list[api.Trial], api.ExperimentStatus | None]:
    """The experiment, trials and status recorded in a results directory.

    Raises:
        ReportError: no readable experiment.yaml there.
    """
    run_dir = RunDirectory(root)
    text = run_dir.manifest_text()
    if text is None:
        raise ReportError(f"{root} is not a kubenas run directory (no experiment.yaml)")
    try:
        document = next(d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind") == "Experiment")
        experiment = api.Experiment.model_validate(document)
    except (StopIteration, yaml.YAMLError, ValueError) as exc:
        raise ReportError(f"{root}/experiment.yaml is not a readable Experiment: {exc}") from None
    return experiment, run_dir.load_trials(), run_dir.load_status()


def build(root: Path) -> Path:
    """Draw the charts and write ``report.html`` in ``root``, from the run recorded there; returns the HTML's path."""
    experiment, trials, status = load_run(root)
    return write(root, experiment, trials, status, RunDirectory(root).best())


def write(
    root: Path,
    experiment: api.Experiment,
    trials: Sequence[api.Trial],
    status: api.ExperimentStatus | None,
    best: dict[str, Any] | None,
) -> Path:
    """Draw the charts and write ``report.html`` in ``root``; returns the HTML's path.

    Args:
        root: the directory to write into (created if missing).
        experiment: the Experiment (its spec says what to plot).
        trials: every Trial, from a local run directory or a cluster.
        status: the Experiment's status, if any.
        best: the exported best trial, shaped as best.json (``summary.best_document``), if any.
    """
    root.mkdir(parents=True, exist_ok=True)
    spec = experiment.spec
    finished = sorted(
        (t for t in trials if t.phase.is_finished),
        key=lambda t: (t.status.completion_time or datetime.max.replace(tzinfo=UTC), t.spec.index),
    )
    charts = [
        (BEST_SO_FAR_PNG, "Best so far", draw_best_so_far(spec, finished)),
        (PARAMETERS_PNG, "Objective against each parameter", draw_parameters(spec, finished)),
        (CURVES_PNG, "Learning curves", draw_curves(spec, finished)),
    ]
    if spec.objective.is_multi:
        charts.append((PARETO_PNG, "Pareto front", draw_pareto(spec, finished)))
    shown = []
    for filename, title, figure in charts:
        if figure is None:
            (root / filename).unlink(missing_ok=True)
            continue
        figure.savefig(root / filename, dpi=110)
        shown.append((filename, title))
    page = render_html(experiment, finished, len(trials), status, best, shown)
    path = root / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- values


def _value(spec: api.ExperimentSpec, trial: api.Trial) -> float | None:
    if trial.phase != api.TrialPhase.SUCCEEDED:
        return None
    return objective.scalar_value(spec.objective, trial.status.metrics)


def _feasible(spec: api.ExperimentSpec, trial: api.Trial) -> bool:
    return objective.is_feasible(spec.objective, trial.status.metrics)


def _is_max(goal: api.Goal) -> bool:
    return goal == api.Goal.MAXIMIZE


def _series(spec: api.ExperimentSpec) -> list[tuple[str, api.Goal]]:
    """What the charts plot on their value axis: the scalar objective, or each metric of a Pareto objective."""
    obj = spec.objective
    if obj.is_multi and obj.is_pareto:
        return [(m.name, m.goal) for m in obj.objective_metrics()]
    if obj.is_multi:
        return [("weighted objective", api.Goal.MAXIMIZE)]
    metric = obj.objective_metrics()[0]
    return [(metric.name, metric.goal)]


def _best(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> api.Trial | None:
    """The trial the run exports: the best feasible one (Pareto: the first front member)."""
    trials = plan.results_of(spec, trials)
    best = objective.best_trial(spec.objective, trials)
    if best is None and spec.objective.is_pareto:
        front = objective.pareto_front(spec.objective, trials)
        best = front[0] if front else None
    return best


def _series_value(spec: api.ExperimentSpec, trial: api.Trial, name: str) -> float | None:
    if trial.phase != api.TrialPhase.SUCCEEDED:
        return None
    if spec.objective.is_pareto:
        value = trial.status.metrics.get(name)
        return value if value is not None and math.isfinite(value) else None
    return _value(spec, trial)


# ---------------------------------------------------------------------- charts


def draw_best_so_far(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> Figure | None:
    """Each finished trial's objective in finishing order, and the running best."""
    series = _series(spec)
    if not trials:
        return None
    curve_metric = objective.curve_metric(spec)
    figure = Figure(figsize=(9.5, 3.6 * len(series)), layout="constrained")
    axes = figure.subplots(len(series), 1, squeeze=False)[:, 0]
    for ax, (name, goal) in zip(axes, series, strict=True):
        xs, ys, grey_x, grey_y, best_x, best_y = [], [], [], [], [], []
        best: float | None = None
        for position, trial in enumerate(trials, start=1):
            value = _series_value(spec, trial, name)
            if value is not None and _feasible(spec, trial):
                xs.append(position)
                ys.append(value)
                if best is None or (value > best if _is_max(goal) else value < best):
                    best = value
            elif value is not None:
                grey_x.append(position)
                grey_y.append(value)
            if best is not None:
                best_x.append(position)
                best_y.append(best)
        ax.scatter(xs, ys, color="tab:blue", s=22, zorder=3, label="succeeded")
        if grey_x:
            ax.scatter(grey_x, grey_y, color="lightgray", marker="x", s=22, zorder=3, label="violates a constraint")
        if best_x:
            ax.step(best_x, best_y, where="post", color="tab:green", linewidth=2, label="best so far")
        # Early-stopped trials at the last value they reported (not a result: the optimizer never sees it).
        stopped = (
            [
                (i, t.status.curve[-1].value)
                for i, t in enumerate(trials, start=1)
                if t.phase == api.TrialPhase.EARLY_STOPPED and t.status.curve
            ]
            if name == curve_metric
            else []
        )
        _limit_to_results(ax, ys + grey_y, [v for _, v in stopped], goal)
        low, high = ax.get_ylim()
        if stopped:
            inside = [(i, v) for i, v in stopped if low <= v <= high]
            outside = [i for i, v in stopped if not low <= v <= high]
            ax.scatter(
                [i for i, _ in inside],
                [v for _, v in inside],
                facecolors="none",
                edgecolors="tab:orange",
                s=26,
                zorder=3,
                label="early-stopped (last value)",
            )
            edge = low if _is_max(goal) else high
            ax.scatter(
                outside,
                [edge] * len(outside),
                marker="v" if _is_max(goal) else "^",
                color="tab:orange",
                s=26,
                zorder=3,
                clip_on=False,
                label="early-stopped, far below" if outside else None,
            )
        failed = [
            i for i, t in enumerate(trials, start=1) if t.phase in (api.TrialPhase.FAILED, api.TrialPhase.STOPPED)
        ]
        if failed:
            edge = low if _is_max(goal) else high
            ax.scatter(
                failed,
                [edge] * len(failed),
                marker="x",
                color="tab:red",
                s=30,
                zorder=3,
                clip_on=False,
                label="failed / stopped",
            )
        target = spec.objective.target_value
        if target is not None and not spec.objective.is_pareto:
            ax.axhline(target, linestyle=":", color="tab:purple", label=f"targetValue {target:g}")
            if not low <= target <= high:  # leave room so the line does not sit on the frame
                margin = 0.05 * (max(high, target) - min(low, target))
                low, high = min(low, target - margin), max(high, target + margin)
        ax.set_ylim(low, high)
        ax.set_xlabel("trials finished")
        ax.set_ylabel(name)
        ax.set_xlim(0.5, len(trials) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        ax.set_title(f"{name} ({goal}) by trial", fontsize=10)
    return figure


def _limit_to_results(ax: Axes, results: Sequence[float], others: Sequence[float], goal: api.Goal) -> None:
    """Scale the value axis to the results, letting in other values only when they are close to them.

    A trial stopped at epoch 3 with accuracy 0.3 would otherwise flatten every difference
    among the finished trials, which is what the chart is for.
    """
    if not results:
        values = list(others)
        if values:
            ax.set_ylim(min(values) - 0.05 * (abs(min(values)) or 1), max(values) + 0.05 * (abs(max(values)) or 1))
        return
    low, high = min(results), max(results)
    spread = (high - low) or (abs(high) * 0.05) or 0.05
    window = max(3 * spread, 0.05 * max(abs(low), abs(high)))
    if _is_max(goal):
        low = min([low, *(v for v in others if v >= low - window)])
    else:
        high = max([high, *(v for v in others if v <= high + window)])
    margin = 0.08 * ((high - low) or spread)
    ax.set_ylim(low - margin, high + margin)


def draw_parameters(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> Figure | None:
    """The objective against each parameter (categorical values jittered), the best trial starred.

    Early-stopped trials appear as hollow orange circles at the last value they reported, so
    the chart shows the regions the search tried and dropped, not only those it finished.
    """
    name, goal = _series(spec)[0]
    points = [(t, v) for t in trials if (v := _series_value(spec, t, name)) is not None]
    if not points:
        return None
    stopped = []
    if name == objective.curve_metric(spec):
        stopped = [
            (t, t.status.curve[-1].value) for t in trials if t.phase == api.TrialPhase.EARLY_STOPPED and t.status.curve
        ]
    parameters = spec.parameters
    columns = min(3, len(parameters))
    rows = math.ceil(len(parameters) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    best = _best(spec, trials)
    jitter = random.Random(0)
    for ax, parameter in zip(axes, parameters, strict=False):
        position = _parameter_axis(ax, parameter)

        xs, ys, done = _placed(points, parameter, position, jitter)
        _limit_to_results(ax, ys, [v for _, v in stopped], goal)
        low, high = ax.get_ylim()
        sx, sy, _ = _placed(stopped, parameter, position, jitter)
        edge = low if _is_max(goal) else high
        ax.scatter(
            sx,
            [v if low <= v <= high else edge for v in sy],
            facecolors="none",
            edgecolors="tab:orange",
            s=20,
            alpha=0.8,
            clip_on=False,
        )
        colours = ["tab:blue" if _feasible(spec, t) else "lightgray" for t in done]
        ax.scatter(xs, ys, c=colours, s=20, alpha=0.9, zorder=3)
        for x, y, trial in zip(xs, ys, done, strict=True):
            if best is not None and trial.name == best.name:
                ax.scatter([x], [y], marker="*", s=180, color="tab:red", zorder=4)
        ax.set_ylim(low, high)
        ax.set_xlabel(parameter.name)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if not xs and not sx:
            ax.text(0.5, 0.5, "never active", transform=ax.transAxes, ha="center", color="gray")
    for ax in axes[len(parameters) :]:
        ax.set_visible(False)
    title = f"{name} against each parameter: " + (f"★ best ({best.name}), " if best else "") + "● succeeded"
    if stopped:
        title += ", ○ early-stopped (last value; at the bottom edge when far below)"
    figure.suptitle(title)
    return figure


def _placed(
    group: Sequence[tuple[api.Trial, float]], parameter: api.Parameter, position: Any, rng: random.Random
) -> tuple[list[float], list[float], list[api.Trial]]:
    """x positions, values and trials of the trials in which ``parameter`` was active."""
    kept = [(t, v) for t, v in group if parameter.name in t.spec.parameters]
    xs = [position(t.spec.parameters[parameter.name], rng) for t, _ in kept]
    return xs, [v for _, v in kept], [t for t, _ in kept]


def _parameter_axis(ax: Axes, parameter: api.Parameter) -> Any:
    """Set up the x axis for a parameter (its whole searched range); returns value → x position."""
    if parameter.type == api.ParameterType.CATEGORICAL:
        labels = [str(v) for v in parameter.values or []]
        index = {label: i for i, label in enumerate(labels)}
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0, fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        return lambda value, rng: index.get(str(value), len(labels)) + rng.uniform(-0.15, 0.15)
    if parameter.scale == api.Scale.LOG:
        ax.set_xscale("log")
        # Plain numbers at 1-2-5 steps: ranges searched rarely span enough decades for 10^k labels.
        decades = math.log10(parameter.max / parameter.min) if parameter.min and parameter.max else 3.0
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.2 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif parameter.type == api.ParameterType.INT:
        _integer_ticks(ax.xaxis)
    if parameter.min is not None and parameter.max is not None:
        low, high = parameter.min, parameter.max
        if parameter.scale == api.Scale.LOG and low > 0:
            pad = (high / low) ** 0.04
            ax.set_xlim(low / pad, high * pad)
        else:
            pad = (high - low) * 0.04 or 0.5
            ax.set_xlim(low - pad, high + pad)
    return lambda value, rng: float(value)


def _integer_ticks(axis: Axis) -> None:
    """Ticks at whole numbers only (the default locator is a MaxNLocator; other locators take no such setting)."""
    locator = axis.get_major_locator()
    if isinstance(locator, MaxNLocator):
        locator.set_params(integer=True)


def draw_curves(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> Figure | None:
    """Intermediate values by step; early-stopped trials dashed in orange."""
    with_curves = [t for t in trials if t.status.curve]
    if not with_curves:
        return None
    metric = objective.curve_metric(spec)
    figure = Figure(figsize=(8, 4), layout="constrained")
    ax: Axes = figure.subplots()
    labelled: set[api.TrialPhase] = set()
    # Finished trials last, so that they are drawn over the ones that were stopped.
    for trial in sorted(with_curves, key=lambda t: t.phase == api.TrialPhase.SUCCEEDED):
        steps = [p.step for p in trial.status.curve]
        values = [p.value for p in trial.status.curve]
        phase = trial.phase
        style = "--" if phase == api.TrialPhase.EARLY_STOPPED else "-"
        label = None if phase in labelled else str(phase)
        labelled.add(phase)
        ax.plot(steps, values, style, marker=".", color=_PHASE_COLOURS.get(phase, "gray"), alpha=0.7, label=label)
    ax.set_xlabel("step (epoch)")
    ax.set_ylabel(metric or "")
    _integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    title = f"{metric} during training ({len(with_curves)} trials)"
    full = max((t.status.step or 0 for t in trials if t.phase == api.TrialPhase.SUCCEEDED), default=0)
    if any(t.phase == api.TrialPhase.EARLY_STOPPED for t in trials) and full:
        ran = sum(min(t.status.step or 0, full) for t in trials)
        title += f"; early stopping: {ran} of {full * len(trials)} epochs run"
    ax.set_title(title, fontsize=10)
    return figure


def draw_pareto(spec: api.ExperimentSpec, trials: Sequence[api.Trial]) -> Figure | None:
    """Succeeded trials in the plane of the first two objective metrics; the front joined up."""
    metrics = spec.objective.objective_metrics()[:2]
    if len(metrics) < 2:
        return None
    (mx, gx), (my, gy) = ((m.name, m.goal) for m in metrics)
    done = [
        t for t in trials if t.phase == api.TrialPhase.SUCCEEDED and mx in t.status.metrics and my in t.status.metrics
    ]
    if not done:
        return None
    front = {t.name for t in objective.pareto_front(spec.objective, list(done))}
    figure = Figure(figsize=(7, 5), layout="constrained")
    ax: Axes = figure.subplots()
    feasible = [t for t in done if _feasible(spec, t) and t.name not in front]
    infeasible = [t for t in done if not _feasible(spec, t)]
    on_front = sorted((t for t in done if t.name in front), key=lambda t: t.status.metrics[mx])
    ax.scatter(
        [t.status.metrics[mx] for t in feasible],
        [t.status.metrics[my] for t in feasible],
        s=22,
        color="tab:blue",
        alpha=0.6,
        label="dominated trial" if feasible else None,
    )
    if infeasible:
        ax.scatter(
            [t.status.metrics[mx] for t in infeasible],
            [t.status.metrics[my] for t in infeasible],
            s=22,
            color="lightgray",
            marker="x",
            label="violates a constraint",
        )
    if on_front:
        ax.plot(
            [t.status.metrics[mx] for t in on_front],
            [t.status.metrics[my] for t in on_front],
            "-o",
            color="tab:red",
            markersize=6,
            label=f"Pareto front ({len(on_front)})",
            zorder=4,
        )
        if len(on_front) <= 15:
            for trial in on_front:
                ax.annotate(
                    trial.name.rsplit("-", 1)[-1],
                    (trial.status.metrics[mx], trial.status.metrics[my]),
                    textcoords="offset points",
                    xytext=(5, 5),
                    fontsize=8,
                    color="tab:red",
                )
    ax.set_title("Pareto front (numbers: trial index)", fontsize=10)
    ax.set_xlabel(f"{mx} ({'higher' if _is_max(gx) else 'lower'} is better)")
    ax.set_ylabel(f"{my} ({'higher' if _is_max(gy) else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


# ---------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #666; }
table { border-collapse: collapse; font-size: 0.85em; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.Succeeded { color: #1a7f37; } .Failed { color: #cf222e; } .EarlyStopped { color: #bc4c00; }
.best { background: #fff8c5; } img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def _pairs(values: dict[str, Any], noisy: Sequence[str] = ()) -> str:
    """``k=v`` pairs; a value the trial flagged as unreliable is marked ``~ (noisy)``."""
    return ", ".join(f"{html.escape(k)}={_fmt(v)}" + ("~ (noisy)" if k in noisy else "") for k, v in values.items())


def render_html(
    experiment: api.Experiment,
    finished: Sequence[api.Trial],
    total_trials: int,
    status: api.ExperimentStatus | None,
    best: dict[str, Any] | None,
    charts: Sequence[tuple[str, str]],
) -> str:
    """The report page (self-contained apart from the PNGs next to it)."""
    spec = experiment.spec
    name = html.escape(experiment.metadata.name)
    counts: dict[str, int] = {}
    for trial in finished:
        counts[str(trial.phase)] = counts.get(str(trial.phase), 0) + 1
    phase = f"{status.phase}" + (f" ({status.reason})" if status and status.reason else "") if status else "unknown"
    planned = plan.planned_trials(spec, finished)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>kubenas: {name}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{name}</h1>",
        f"<p class='muted'>phase {html.escape(phase)} · {len(finished)} of {planned} trials finished"
        f" ({html.escape(', '.join(f'{v} {k}' for k, v in sorted(counts.items())) or 'none')})"
        f" · {total_trials - len(finished)} not finished · generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>",
    ]
    if status and status.message:
        parts.append(f"<p>{html.escape(status.message)}</p>")
    parts.append("<h2>Best trial</h2>")
    if best:
        parts.append(
            f"<p><b>{html.escape(str(best.get('trial')))}</b> · objective value {_fmt(best.get('value'))}</p>"
            f"<p>metrics: {_pairs(best.get('metrics') or {})}</p>"
            f"<p>parameters: {_pairs(best.get('parameters') or {})}</p>"
        )
        if best.get("architecture") is not None:
            text = json.dumps(best["architecture"], indent=2)
            parts.append(f"<details><summary>architecture</summary><pre>{html.escape(text)}</pre></details>")
    else:
        parts.append("<p>No successful trial yet.</p>")
    for filename, title in charts:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{filename}' alt='{html.escape(title)}'>")
    parts.append(_trials_table(spec, finished, best))
    parts.append("</body></html>")
    return "\n".join(parts)


def _untrusted_mark(spec: api.ExperimentSpec, trial: api.Trial) -> str:
    """``~`` after an objective value that rests on a metric the trial flagged as noisy."""
    return "" if objective.is_trusted(spec.objective, trial) else "~"


def _trials_table(spec: api.ExperimentSpec, trials: Sequence[api.Trial], best: dict[str, Any] | None) -> str:
    best_name = best.get("trial") if best else None
    rows = [
        "<h2>Trials</h2><table><tr><th>trial</th><th>phase</th><th>objective</th><th>metrics</th>"
        "<th>parameters</th><th>steps</th><th>time (s)</th><th>reason</th></tr>"
    ]
    ordered = sorted(trials, key=lambda t: t.spec.index)
    for trial in ordered[:MAX_TABLE_ROWS]:
        status = trial.status
        seconds = ""
        if status.start_time and status.completion_time:
            seconds = f"{(status.completion_time - status.start_time).total_seconds():.1f}"
        reason = (
            "" if status.reason in (None, api.TrialReason.COMPLETED) else f"{status.reason}: {status.message or ''}"
        )
        css = " class='best'" if trial.name == best_name else ""
        value = _value(spec, trial)
        rows.append(
            f"<tr{css}><td>{html.escape(trial.name)}</td><td class='{status.phase}'>{status.phase}</td>"
            f"<td class='num'>{'' if value is None else _fmt(value) + _untrusted_mark(spec, trial)}</td>"
            f"<td>{_pairs(status.metrics, status.noisy_metrics)}</td><td>{_pairs(trial.spec.parameters)}</td>"
            f"<td class='num'>{'' if status.step is None else status.step}</td><td class='num'>{seconds}</td>"
            f"<td>{html.escape(reason)}</td></tr>"
        )
    rows.append("</table>")
    if len(ordered) > MAX_TABLE_ROWS:
        rows.append(f"<p class='muted'>{len(ordered) - MAX_TABLE_ROWS} more trials in trials.jsonl</p>")
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    """``kubenas report DIR [-o OUT]``: the report of a local run, in DIR or in OUT."""
    root = Path(args.dir)
    try:
        if getattr(args, "output", None):
            experiment, trials, status = load_run(root)
            path = write(Path(args.output), experiment, trials, status, RunDirectory(root).best())
        else:
            path = build(root)
    except ReportError as exc:
        print(f"kubenas report: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
