"""Replay kubenas's early-stopping rules over recorded learning curves: epochs saved vs regret.

The curves are real trainer runs (``benchmarks/record_curves.py``). A replay is one experiment:
the trials arrive in a random order, ``--parallel`` run at once, and every tick each running trial
trains one more epoch (its curve gains the recorded point). After each tick a trial at its last
epoch succeeds; then ``kubenas.earlystop.judge_all`` — the planner's own call — judges the running
ones, and each stopped trial frees its slot for the next. Per setting and order:

- saved: the share of trial-epochs not trained, against the same trials with no early stopping;
- regret: best final accuracy of all trials minus the best among those never stopped (pp).

    .venv/bin/python benchmarks/early_stopping.py --seeds 200
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kubenas import api, earlystop

DEFAULT_CURVES = Path(__file__).parent / "data" / "fashion_mnist_curves.jsonl"
GOAL = api.Goal.MAXIMIZE


@dataclass(frozen=True)
class Run:
    """One recorded trainer run: validation accuracy per epoch and the final accuracy."""

    curve: tuple[float, ...]
    final: float
    first_step: int = 1


@dataclass(frozen=True)
class Outcome:
    """One replay: epochs trained, epochs without early stopping, best final, best unstopped final."""

    epochs: int
    full_epochs: int
    best: float
    best_kept: float

    @property
    def saved(self) -> float:
        return 1.0 - self.epochs / self.full_epochs

    @property
    def regret_pp(self) -> float:
        return 100.0 * (self.best - self.best_kept)


def load_runs(path: Path) -> list[Run]:
    """The successful runs of a recorded curve file (lines with an ``error`` are skipped)."""
    runs = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "error" in record:
            continue
        runs.append(Run(tuple(record["curve"]), float(record["final_accuracy"]), int(record.get("first_epoch", 1))))
    return runs


def make_rule(rule: str, min_epochs: int = 1, reduction_factor: int = 3, min_trials: int = 3) -> api.EarlyStopping:
    return api.EarlyStopping(
        rule=api.StoppingRule(rule),
        min_epochs=min_epochs,
        reduction_factor=reduction_factor,
        min_trials=min_trials,
    )


def _trial(index: int) -> api.Trial:
    return api.Trial(
        metadata=api.ObjectMeta(name=f"replay-{index}"),
        spec=api.TrialSpec(experiment="replay", index=index, parameters={}),
        status=api.TrialStatus(phase=api.TrialPhase.RUNNING),
    )


def replay(runs: Sequence[Run], order: Sequence[int], rule: api.EarlyStopping, parallel: int) -> Outcome:
    """One experiment over ``runs`` in arrival ``order`` with ``parallel`` slots."""
    points = [[api.CurvePoint(step=run.first_step + k, value=v) for k, v in enumerate(run.curve)] for run in runs]
    queue = list(order)
    started: list[api.Trial] = []
    running: dict[str, tuple[int, api.Trial]] = {}
    kept: list[int] = []
    epochs = 0
    while queue or running:
        while queue and len(running) < parallel:
            i = queue.pop(0)
            trial = _trial(i)
            started.append(trial)
            running[trial.name] = (i, trial)
        for i, trial in running.values():  # one tick: every running trial trains one epoch
            trial.status.curve.append(points[i][len(trial.status.curve)])
            epochs += 1
        for name, (i, trial) in list(running.items()):
            if len(trial.status.curve) == len(points[i]):
                trial.status.phase = api.TrialPhase.SUCCEEDED
                kept.append(i)
                del running[name]
        verdicts = earlystop.judge_all(rule, started, GOAL)
        for name in verdicts.stops:
            _, trial = running.pop(name)
            trial.status.phase = api.TrialPhase.EARLY_STOPPED
        for name, rung in verdicts.promotions.items():  # as the backends record PromoteTrial
            running[name][1].status.rung = rung
    return Outcome(
        epochs=epochs,
        full_epochs=sum(len(runs[i].curve) for i in order),
        best=max(runs[i].final for i in order),
        best_kept=max(runs[i].final for i in kept),
    )


@dataclass(frozen=True)
class Summary:
    label: str
    saved: float  # mean share of trial-epochs saved
    regret_mean: float  # pp
    regret_median: float
    regret_p90: float
    regret_zero: float  # share of orders where the best trial was never stopped

    def meets(self, saved: float, regret: float) -> bool:
        return self.saved >= saved and self.regret_mean <= regret


def summarise(label: str, outcomes: Sequence[Outcome]) -> Summary:
    regrets = sorted(o.regret_pp for o in outcomes)
    return Summary(
        label=label,
        saved=statistics.fmean(o.saved for o in outcomes),
        regret_mean=statistics.fmean(regrets),
        regret_median=statistics.median(regrets),
        regret_p90=regrets[min(len(regrets) - 1, int(0.9 * len(regrets)))],
        regret_zero=sum(r <= 1e-9 for r in regrets) / len(regrets),
    )


def settings(
    min_epochs: Iterable[int], factors: Iterable[int], min_trials: Iterable[int]
) -> list[tuple[str, api.EarlyStopping]]:
    grid = [("none", make_rule("none"))]
    min_epochs, factors, min_trials = list(min_epochs), list(factors), list(min_trials)
    for m in min_epochs:
        for t in min_trials:
            grid.append((f"median minEpochs={m} minTrials={t}", make_rule("median", min_epochs=m, min_trials=t)))
    for m in min_epochs:
        for f in factors:
            grid.append(
                (f"asha minEpochs={m} reductionFactor={f}", make_rule("asha", min_epochs=m, reduction_factor=f))
            )
    return grid


def evaluate(
    runs: Sequence[Run], grid: Sequence[tuple[str, api.EarlyStopping]], seeds: int, parallel: int, seed: int = 0
) -> list[Summary]:
    """Every setting over the same ``seeds`` random arrival orders."""
    rng = random.Random(seed)
    orders = [rng.sample(range(len(runs)), len(runs)) for _ in range(seeds)]
    return [summarise(label, [replay(runs, order, rule, parallel) for order in orders]) for label, rule in grid]


def table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| setting | epochs saved | regret mean (pp) | median | p90 | best never stopped |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.label} | {100 * s.saved:.1f}% | {s.regret_mean:.2f} | {s.regret_median:.2f} | "
            f"{s.regret_p90:.2f} | {100 * s.regret_zero:.0f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=Path, default=DEFAULT_CURVES)
    parser.add_argument("--seeds", type=int, default=200, help="random arrival orders per setting")
    parser.add_argument("--parallel", type=int, default=4, help="trials running at once")
    parser.add_argument("--min-epochs", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--reduction-factors", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--min-trials", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--goal-saved", type=float, default=0.60)
    parser.add_argument("--goal-regret", type=float, default=0.30, help="pp, on the mean regret")
    args = parser.parse_args(argv)

    runs = load_runs(args.curves)
    epochs = sorted({len(r.curve) for r in runs})
    finals = sorted(r.final for r in runs)
    print(
        f"{datetime.now(UTC):%Y-%m-%d}: {len(runs)} curves of {epochs} epochs, final accuracy "
        f"{finals[0]:.4f}..{finals[-1]:.4f} (2nd best {finals[-2]:.4f}); {args.seeds} orders, "
        f"{args.parallel} trials at once"
    )
    grid = settings(args.min_epochs, args.reduction_factors, args.min_trials)
    summaries = evaluate(runs, grid, args.seeds, args.parallel)
    print(table(summaries))
    meeting = [s for s in summaries if s.meets(args.goal_saved, args.goal_regret)]
    if meeting:
        best = max(meeting, key=lambda s: (s.saved, -s.regret_mean))
        print(f"best meeting the goal: {best.label} ({100 * best.saved:.1f}% saved, {best.regret_mean:.2f} pp)")
    else:
        print(f"no setting saves >= {100 * args.goal_saved:.0f}% at <= {args.goal_regret} pp mean regret")
    return 0


if __name__ == "__main__":
    sys.exit(main())
