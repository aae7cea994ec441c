"""Search efficiency on tabular benchmarks: kubenas's Suggester vs the usual baselines.

    .venv/bin/python benchmarks/search_efficiency.py                   # the README table
    .venv/bin/python benchmarks/search_efficiency.py --quick           # a smoke run
    .venv/bin/python benchmarks/search_efficiency.py --table hpolib-parkinsons_telemonitoring
    .venv/bin/python benchmarks/search_efficiency.py --weighted latency --budget 100   # acc - beta*log10(latency)
    .venv/bin/python benchmarks/search_efficiency.py --constraint latency --quantile 0.5 --budget 100

kubenas rows run ``kubenas.search.Suggester`` (the operator's code path) with batch asks of
``parallelTrials``; baselines run sequentially. Each evaluation returns one recorded training
run at random; scores use the configuration's mean over its recorded runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubenas import algorithms
from search import baselines, constrained, multiobjective, runner, scoring, tables, weighted

CHECKPOINTS = (25, 50, 100, 200)


@dataclass(frozen=True)
class Method:
    label: str
    run: Callable[[tables.Table, int, Callable[[str], float], int], list[str]]
    budget: int | None = None  # overrides the run's budget (GP is slow)
    seeds: int | None = None


def kubenas_method(algorithm: str, parallel: int, restart_every: int | None = None) -> Method:
    label = f"kubenas {algorithm}, parallel {parallel}" + (f", rebuilt every {restart_every}" if restart_every else "")
    return Method(
        label,
        lambda t, b, ev, s: runner.run_kubenas(t, algorithm, b, ev, s, parallel=parallel, restart_every=restart_every),
    )


BASELINES = {
    "random": Method("random search", lambda t, b, ev, s: baselines.random_search(t, b, ev, np.random.default_rng(s))),
    "evolution": Method(
        "regularized evolution", lambda t, b, ev, s: baselines.regularized_evolution(t, b, ev, np.random.default_rng(s))
    ),
    "local": Method(
        "local search (White et al. 2021)",
        lambda t, b, ev, s: baselines.local_search(t, b, ev, np.random.default_rng(s)),
    ),
    "tpe": Method("Optuna TPE, multivariate", lambda t, b, ev, s: baselines.optuna_search(t, b, ev, s, "tpe")),
    "gp": Method("Optuna GPSampler", lambda t, b, ev, s: baselines.optuna_search(t, b, ev, s, "gp"), 100, 10),
}


def run_method(method: Method, table: tables.Table, budget: int, seeds: int) -> tuple[list[scoring.RunScore], float]:
    budget = min(budget, method.budget or budget)
    n = min(seeds, method.seeds or seeds)
    scores = []
    start = time.process_time()
    for seed in range(n):
        noise = np.random.default_rng([seed, zlib.crc32(table.name.encode())])
        observed: list[float] = []

        def evaluate(key: str, noise: np.random.Generator = noise, observed: list[float] = observed) -> float:
            value = table.evaluate(key, noise)
            observed.append(value)
            return value

        keys = method.run(table, budget, evaluate, seed)
        scores.append(scoring.score_run(table, keys, observed[: len(keys)], budget))
    return scores, (time.process_time() - start) / max(n, 1)


def fmt(value: float, digits: int) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "never"
    return f"{value:.{digits}f}"


def report(
    table: tables.Table, methods: Sequence[Method], budget: int, seeds: int, out=sys.stdout
) -> dict[str, dict[str, float]]:
    checkpoints = [k for k in CHECKPOINTS if k <= budget]
    digits = 2 if table.maximize else 4
    print(
        f"\n{table.name}: optimum {table.optimum:.{digits}f}, top 1% {table.top1:.{digits}f}, "
        f"budget {budget}, {seeds} seeds (median)",
        file=out,
    )
    head = [
        "algorithm",
        *[f"@{k}" for k in checkpoints],
        "evals to top 1%",
        "runs reaching it",
        "evals to optimum",
        "CPU s/run",
    ]
    print("| " + " | ".join(head) + " |", file=out)
    print("|" + "---|" * len(head), file=out)
    results = {}
    for method in methods:
        scores, cpu = run_method(method, table, budget, seeds)
        summary = scoring.summarise(scores, checkpoints)
        results[method.label] = summary
        n = len(scores)
        short = method.budget and method.budget < budget
        label = method.label + (f" ({n} runs, budget {method.budget})" if short else "")
        cells = [label, *[fmt(summary[f"@{k}"], digits) for k in checkpoints]]
        cells += [fmt(summary["evals"], 0), f"{summary['found']:.0%}", fmt(summary["optimum"], 0), f"{cpu:.1f}"]
        print("| " + " | ".join(cells) + " |", file=out, flush=True)
    return results


def report_pareto(
    table: tables.Table, algorithms_: Sequence[str], cost: str, budget: int, seeds: int, out=sys.stdout
) -> dict[str, dict[str, float]]:
    """Normalised hypervolume of the evaluated architectures' true (accuracy, cost) points."""
    score = multiobjective.ParetoScore(table, cost)
    methods: dict[str, Callable[..., list[str]]] = {
        **{
            f"kubenas {a} (Pareto)": lambda t, b, ev, s, a=a: multiobjective.kubenas_pareto(t, b, ev, s, cost, a)
            for a in algorithms_
        },
        "random search": multiobjective.random_pareto,
        "Optuna NSGA-II": lambda t, b, ev, s: multiobjective.optuna_pareto(t, b, ev, s, cost, "nsga2"),
        "Optuna TPE, multivariate": lambda t, b, ev, s: multiobjective.optuna_pareto(t, b, ev, s, cost, "tpe"),
    }
    checkpoints = [k for k in (25, 50, 100, 200) if k <= budget]
    print(
        f"\n{table.name}: accuracy vs {cost}, normalised hypervolume, budget {budget}, {seeds} seeds (median)", file=out
    )
    head = ["algorithm", *[f"HV@{k}" for k in checkpoints], "CPU s/run"]
    print("| " + " | ".join(head) + " |", file=out)
    print("|" + "---|" * len(head), file=out)
    results = {}
    for label, run in methods.items():
        volumes: dict[int, list[float]] = {k: [] for k in checkpoints}
        start = time.process_time()
        for seed in range(seeds):
            noise = np.random.default_rng([seed, zlib.crc32(table.name.encode())])

            def evaluate(key: str, noise: np.random.Generator = noise) -> dict[str, float]:
                return {"acc": table.evaluate(key, noise), cost: table.extra[key][cost]}

            keys = run(table, budget, evaluate, seed)
            for k in checkpoints:
                volumes[k].append(score(keys[:k]))
        cpu = (time.process_time() - start) / seeds
        results[label] = {f"HV@{k}": float(np.median(v)) for k, v in volumes.items()}
        cells = [label, *[f"{results[label][f'HV@{k}']:.3f}" for k in checkpoints], f"{cpu:.1f}"]
        print("| " + " | ".join(cells) + " |", file=out, flush=True)
    return results


CONSTRAINED_BASELINES = ("random", "tpe")
ConstrainedRun = Callable[[tables.Table, int, Callable[[str], dict[str, float]], int, float | None], list[str]]


def constrained_methods(algorithms_: Sequence[str], baselines_: Sequence[str], cost: str) -> dict[str, ConstrainedRun]:
    """Constrained-run rows, each callable with ``limit=None`` for its unconstrained run: kubenas
    per algorithm, then the chosen ``CONSTRAINED_BASELINES``."""
    methods: dict[str, ConstrainedRun] = {
        f"kubenas {a}": lambda t, b, ev, s, lim, a=a: constrained.kubenas_constrained(t, b, ev, s, cost, lim, a)
        for a in algorithms_
    }
    available: dict[str, tuple[str, ConstrainedRun]] = {
        "random": ("random search", lambda t, b, ev, s, lim: constrained.random_constrained(t, b, ev, s, cost, lim)),
        "tpe": (
            "Optuna TPE, multivariate, native constraints",
            lambda t, b, ev, s, lim: constrained.optuna_constrained(t, b, ev, s, cost, lim),
        ),
    }
    for name in baselines_:
        label, run = available[name]
        methods[label] = run
    return methods


def constrained_seed(
    table: tables.Table, run: ConstrainedRun, scorer: constrained.FeasibleTop, budget: int, seed: int
) -> dict[str, float]:
    """One seed: the constrained run's scores plus ``unconstrained``, the evaluations to the table's
    top 1% when the same searcher runs without the constraint (same noise stream)."""

    def evaluator() -> Callable[[str], dict[str, float]]:
        noise = np.random.default_rng([seed, zlib.crc32(table.name.encode())])
        return lambda key: {"acc": table.evaluate(key, noise), scorer.cost: table.extra[key][scorer.cost]}

    row = scorer.score(run(table, budget, evaluator(), seed, scorer.limit))
    row["unconstrained"] = constrained.evals_to_top(table, run(table, budget, evaluator(), seed, None))
    return row


def report_constrained(
    table: tables.Table,
    algorithms_: Sequence[str],
    cost: str,
    quantile: float,
    budget: int,
    seeds: int,
    baselines_: Sequence[str] = CONSTRAINED_BASELINES,
    out=sys.stdout,
) -> dict[str, dict[str, float]]:
    """Infeasible share per window and evaluations to the feasible top 1% (and, unconstrained, to the top 1%)."""
    limit = float(np.quantile([table.extra[k][cost] for k in table.means], quantile))
    scorer = constrained.FeasibleTop(table, cost, limit)
    print(
        f"\n{table.name}: accuracy subject to {cost} <= {limit:.4g} ({scorer.share_feasible:.0%} of the table "
        f"feasible; feasible top 1% {scorer.top1:.2f}; top 1% {table.top1:.2f}), budget {budget}, {seeds} seeds "
        "(median; shares: mean)",
        file=out,
    )
    windows = [f"infeasible {lo}-{hi}" for lo, hi in constrained.WINDOWS if lo <= budget]
    head = ["algorithm", *windows, "evals to feasible top 1%", "evals to top 1%, unconstrained run"]
    print("| " + " | ".join(head) + " |", file=out)
    print("|" + "---|" * len(head), file=out)
    results = {}
    for label, run in constrained_methods(algorithms_, baselines_, cost).items():
        rows = [constrained_seed(table, run, scorer, budget, seed) for seed in range(seeds)]
        summary = {w: float(np.nanmean([r[w] for r in rows])) for w in windows}
        for column in ("evals", "unconstrained"):
            summary[column] = float(np.median([r[column] for r in rows]))
        results[label] = summary
        cells = [label, *[f"{summary[w]:.0%}" for w in windows], fmt(summary["evals"], 0)]
        print("| " + " | ".join([*cells, fmt(summary["unconstrained"], 0)]) + " |", file=out, flush=True)
    return results


def weighted_methods(algorithms_: Sequence[str], baselines_: Sequence[str], cost: str, beta: float) -> list[Method]:
    """Weighted-run rows: kubenas (``strategy: weighted``) per algorithm, then scalar baselines."""
    methods = [
        Method(
            f"kubenas {a} (weighted objective)",
            lambda t, b, ev, s, a=a: weighted.kubenas_weighted(t, b, ev, s, cost, beta, a),
        )
        for a in algorithms_
    ]
    return methods + [BASELINES[b] for b in baselines_]


def report_weighted(
    table: tables.Table, methods: Sequence[Method], cost: str, beta: float, budget: int, seeds: int, out=sys.stdout
) -> dict[str, dict[str, float]]:
    """The usual scores on the weighted table: true weighted value of the incumbent, evals to its top 1%."""
    scored = weighted.weighted_table(table, cost, beta)
    best = max(scored.means, key=scored.means.__getitem__)
    champion = max(table.means, key=table.means.__getitem__)
    rank = sorted(scored.means.values(), reverse=True).index(scored.means[champion]) + 1
    print(
        f"\nweighted objective 1.0*acc - {beta:g}*log10({cost}): optimum = acc {table.means[best]:.2f}, "
        f"{cost} {table.extra[best][cost]:.4g}; the accuracy optimum (acc {table.means[champion]:.2f}, "
        f"{cost} {table.extra[champion][cost]:.4g}) ranks {rank} of {len(scored.means)} by weighted value",
        file=out,
    )
    return report(scored, methods, budget, seeds, out)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--table",
        action="append",
        help="nb201-cifar10 (default), nb201-cifar100, nb201-imagenet, hpolib-<dataset>; repeatable",
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--algorithm", action="append", help=f"kubenas algorithm (default {algorithms.DEFAULT})")
    parser.add_argument("--parallel", default="1,4,8", help="parallelTrials values for kubenas rows")
    parser.add_argument(
        "--baselines",
        help=f"comma list; '' for none (default: all of {','.join(BASELINES)}; "
        f"--constraint: {','.join(CONSTRAINED_BASELINES)}; --pareto has fixed baselines)",
    )
    parser.add_argument("--no-kubenas", action="store_true", help="baseline rows only")
    parser.add_argument("--restart-every", type=int, help="also run kubenas rebuilt from history every n trials")
    parser.add_argument("--pareto", metavar="COST", help="multi-objective run instead: accuracy vs latency|model_size")
    parser.add_argument("--constraint", metavar="COST", help="constrained run instead: accuracy s.t. COST <= quantile")
    parser.add_argument("--quantile", type=float, default=0.3, help="--constraint threshold as a table quantile")
    parser.add_argument(
        "--weighted", choices=sorted(weighted.DEFAULT_BETA), help="NB201 weighted run instead: acc - beta*log10(cost)"
    )
    parser.add_argument(
        "--beta",
        type=float,
        help="--weighted cost weight, accuracy points per 10x cost "
        + ", ".join(f"(default {b:g} for {c})" for c, b in weighted.DEFAULT_BETA.items()),
    )
    parser.add_argument("--quick", action="store_true", help="3 seeds, budget 50, no GP")
    args = parser.parse_args(argv)
    available = CONSTRAINED_BASELINES if args.constraint else tuple(BASELINES)
    chosen_baselines = [b for b in (args.baselines or ",".join(available)).split(",") if b]
    if unknown := [b for b in chosen_baselines if b not in available]:
        parser.error(f"unknown baselines {unknown}; this mode has {','.join(available)}")
    if args.quick:
        args.seeds, args.budget = min(args.seeds, 3), min(args.budget, 50)
        chosen_baselines = [b for b in chosen_baselines if b != "gp"]
    chosen = [] if args.no_kubenas else args.algorithm or [algorithms.DEFAULT]
    if args.constraint:
        return {
            name: report_constrained(
                tables.load(name), chosen, args.constraint, args.quantile, args.budget, args.seeds, chosen_baselines
            )
            for name in args.table or ["nb201-cifar10"]
        }
    if args.weighted:
        beta = args.beta if args.beta is not None else weighted.DEFAULT_BETA[args.weighted]
        methods = weighted_methods(chosen, chosen_baselines, args.weighted, beta)
        return {
            name: report_weighted(tables.load(name), methods, args.weighted, beta, args.budget, args.seeds)
            for name in args.table or ["nb201-cifar10"]
        }
    if args.pareto:
        return {
            name: report_pareto(tables.load(name), chosen, args.pareto, args.budget, args.seeds)
            for name in args.table or ["nb201-cifar10"]
        }
    methods = []
    for algorithm in chosen:
        for p in (int(x) for x in args.parallel.split(",") if x):
            methods.append(kubenas_method(algorithm, p))
        if args.restart_every:
            methods.append(kubenas_method(algorithm, 1, args.restart_every))
    methods += [BASELINES[b] for b in chosen_baselines]
    print(f"Suggester: {runner.Suggester.__module__}.{runner.Suggester.__name__}")
    return {
        name: report(tables.load(name), methods, args.budget, args.seeds) for name in args.table or ["nb201-cifar10"]
    }


if __name__ == "__main__":
    main()
