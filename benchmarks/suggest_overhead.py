"""Suggestion overhead: what the Suggester costs the operator in time and memory.

Three scenarios, each in a fresh process so that RSS figures are its own (6-parameter
mixed space, single objective, the default algorithm unless ``--algorithm``):

- scaling: one experiment run trial by trial; the step timed is what a reconcile does
  when a trial finishes (``sync(all trials)`` + ``ask(1)``), p50/p99 and process RSS at
  10, 100, 1,000 and 5,000 finished trials; then a rebuild from the 1,000-trial history
  (``Suggester(spec)`` + ``sync`` + ``ask(1)``) and the syncs until its replay is drained.
- fleet: 100 experiments x 200 trials in one process through one ``SuggesterCache``,
  advanced round-robin 4 trials at a time (the operator's pattern), process RSS at the end;
  then a "restart": a fresh cache, and the time until every experiment has suggested again.

``--constrained`` adds a cost constraint to the objective (the default algorithm then also
fits its feasibility model on every ask).

Usage:
    python benchmarks/suggest_overhead.py                 # full run (minutes), prints the README table
    python benchmarks/suggest_overhead.py --quick         # smoke run (seconds)
    python benchmarks/suggest_overhead.py --constrained   # the same with `cost <= 0.5` in the objective
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psutil
from kubenas import algorithms, api, search

PARAMETERS = [
    {"name": "lr", "type": "float", "min": 1e-5, "max": 0.1, "scale": "log"},
    {"name": "wd", "type": "float", "min": 0.0, "max": 0.1},
    {"name": "depth", "type": "int", "min": 1, "max": 8},
    {"name": "width", "type": "categorical", "values": [16, 32, 64, 128]},
    {"name": "act", "type": "categorical", "values": ["relu", "gelu", "silu"]},
    {"name": "skip", "type": "categorical", "values": [True, False]},
]
GOALS = {"p50_ms_at_1000": 10.0, "fleet_rss_mib": 300.0, "restart_s": 10.0}
CONSTRAINT = {"metric": "cost", "max": 0.5}
_constrained = False  # set by --constrained (passed on to the scenario subprocesses)


def default_algorithm() -> str:
    return getattr(algorithms, "DEFAULT", "NGOpt")


def make_spec(algorithm: str, seed: int, max_trials: int, parallel: int) -> api.ExperimentSpec:
    return api.ExperimentSpec.model_validate(
        {
            "objective": {
                "metric": "accuracy",
                "goal": "maximize",
                "constraints": [CONSTRAINT] if _constrained else [],
            },
            "parameters": PARAMETERS,
            "algorithm": {"name": algorithm, "seed": seed},
            "budget": {"maxTrials": max_trials, "parallelTrials": parallel},
            "trialTemplate": {"spec": {"containers": [{"name": "trial", "image": "trial"}]}},
        }
    )


def accuracy(config: dict[str, Any], rng: np.random.Generator) -> float:
    """A toy response surface with noise: best near lr=1e-3, depth 4, width 64, not gelu."""
    value = (
        0.95
        - (math.log10(float(config["lr"])) + 3) ** 2 / 20
        - float(config["wd"])
        - abs(int(config["depth"]) - 4) / 40
        - abs(math.log2(int(config["width"])) - 6) / 50
        - 0.05 * (config["act"] == "gelu")
        + 0.01 * bool(config["skip"])
    )
    return value + float(rng.normal(0, 0.005))


def cost(config: dict[str, Any]) -> float:
    """A toy cost in [0, 1] that grows with depth and width (what a latency constraint bounds)."""
    return int(config["depth"]) * int(config["width"]) / (8 * 128)


def finished_trial(index: int, config: dict[str, Any], rng: np.random.Generator, experiment: str = "exp") -> api.Trial:
    return api.Trial(
        metadata=api.ObjectMeta(name=api.trial_name(experiment, index), uid=f"{experiment}-uid-{index}"),
        spec=api.TrialSpec(experiment=experiment, index=index, parameters=config),
        status=api.TrialStatus(
            phase=api.TrialPhase.SUCCEEDED, metrics={"accuracy": accuracy(config, rng), "cost": cost(config)}
        ),
    )


def parse(history: Sequence[bytes]) -> list[api.Trial]:
    return [api.Trial.model_validate_json(raw) for raw in history]


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


# --------------------------------------------------------------------------- scenarios


def scenario_scaling(algorithm: str, checkpoints: Sequence[int], rebuild_at: int) -> dict[str, Any]:
    """One experiment, one trial at a time; timing and RSS at each checkpoint, then a rebuild."""
    gc.collect()
    base = rss_mib()
    total = max(checkpoints)
    spec = make_spec(algorithm, seed=0, max_trials=total, parallel=1)
    suggester = search.Suggester(spec)
    rng = np.random.default_rng(0)
    trials: list[api.Trial] = []
    steps: list[float] = []
    cpu: list[float] = []
    rows = []
    rebuild: dict[str, Any] = {}
    config = suggester.ask(1)[0]
    while len(trials) < total:
        trials.append(finished_trial(len(trials), config, rng))
        start, start_cpu = time.perf_counter(), time.process_time()
        suggester.sync(trials)
        proposals = suggester.ask(1)
        steps.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        config = proposals[0]
        n = len(trials)
        if n in checkpoints:
            p50, p99 = percentiles(steps[max(0, n - 100) :])
            cpu50, _ = percentiles(cpu[max(0, n - 100) :])
            rss = rss_mib()
            row = {"trials": n, "p50_ms": p50, "p99_ms": p99, "cpu_p50_ms": cpu50}
            rows.append({**row, "rss_mib": rss, "rss_delta_mib": rss - base})
        if n == rebuild_at:
            rebuild = measure_rebuild(spec, list(trials))
    best = max(t.status.metrics["accuracy"] for t in trials)
    return {"algorithm": algorithm, "base_rss_mib": base, "rows": rows, "rebuild": rebuild, "best": best}


def measure_rebuild(spec: api.ExperimentSpec, trials: list[api.Trial]) -> dict[str, Any]:
    """Time to the first suggestion of a Suggester rebuilt from ``trials``, and to a drained replay."""
    start, start_cpu = time.perf_counter(), time.process_time()
    rebuilt = search.Suggester(spec)
    rebuilt.sync(trials)
    rebuilt.ask(1)
    first = time.perf_counter() - start
    first_cpu = time.process_time() - start_cpu
    syncs = 0
    while rebuilt.pending_replay:
        rebuilt.sync(trials)
        syncs += 1
    drained = time.perf_counter() - start
    return {
        "trials": len(trials),
        "first_suggestion_s": first,
        "first_suggestion_cpu_s": first_cpu,
        "drained_s": drained,
        "extra_syncs": syncs,
    }


def scenario_fleet(algorithm: str, experiments: int, trials_each: int, parallel: int) -> dict[str, Any]:
    """``experiments`` experiments in one process, round-robin through one cache; then a restart."""
    gc.collect()
    base = rss_mib()
    specs = [make_spec(algorithm, seed=e, max_trials=trials_each, parallel=parallel) for e in range(experiments)]
    names = [f"exp{e}" for e in range(experiments)]
    # The API server holds the Trials; the controller lists and parses them on each reconcile.
    histories: list[list[bytes]] = [[] for _ in range(experiments)]
    parse_s = 0.0
    rngs = [np.random.default_rng(e) for e in range(experiments)]
    cache = search.SuggesterCache(max_entries=experiments)
    step_times: list[float] = []
    start = time.perf_counter()
    while any(len(h) < trials_each for h in histories):
        for e, spec in enumerate(specs):
            history = histories[e]
            if len(history) >= trials_each:
                continue
            t0 = time.perf_counter()
            trials = parse(history)
            t1 = time.perf_counter()
            parse_s += t1 - t0
            suggester = cache.get(names[e], spec)
            suggester.sync(trials)
            configs = suggester.ask(min(parallel, trials_each - len(history)))
            step_times.append(time.perf_counter() - t1)
            for config in configs:
                history.append(finished_trial(len(history), config, rngs[e], names[e]).model_dump_json().encode())
            del trials
    run_s = time.perf_counter() - start
    for e, spec in enumerate(specs):  # every experiment's last results told, as in steady state
        cache.get(names[e], spec).sync(parse(histories[e]))
    gc.collect()
    fleet_rss = rss_mib()

    # Restart: nothing cached; each experiment's next reconcile rebuilds and suggests.
    del cache
    gc.collect()
    restarted = search.SuggesterCache(max_entries=experiments)
    start, start_cpu = time.perf_counter(), time.process_time()
    restart_parse_s = 0.0
    for e, spec in enumerate(specs):
        t0 = time.perf_counter()
        trials = parse(histories[e])
        restart_parse_s += time.perf_counter() - t0
        suggester = restarted.get(names[e], spec)
        suggester.sync(trials)
        assert suggester.ask(1), "a continuous space never runs out"
    restart_s = time.perf_counter() - start - restart_parse_s
    restart_cpu_s = time.process_time() - start_cpu
    gc.collect()
    p50, p99 = percentiles(step_times)
    return {
        "algorithm": algorithm,
        "experiments": experiments,
        "trials_each": trials_each,
        "base_rss_mib": base,
        "fleet_rss_mib": fleet_rss,
        "run_s": run_s,
        "step_p50_ms": p50,
        "step_p99_ms": p99,
        "restart_s": restart_s,
        "restart_cpu_s": restart_cpu_s,
        "parse_s": parse_s,
        "restart_parse_s": restart_parse_s,
        "trials_json_mib": sum(len(b) for h in histories for b in h) / 2**20,
        "rss_after_restart_mib": rss_mib(),
    }


# --------------------------------------------------------------------------- driver


def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "scaling":
        checkpoints = (10, 30) if args.quick else (10, 100, 1000, 5000)
        return scenario_scaling(args.algorithm, checkpoints, rebuild_at=30 if args.quick else 1000)
    if name == "fleet":
        experiments, trials_each = (3, 12) if args.quick else (100, 200)
        return scenario_fleet(args.algorithm, experiments, trials_each, parallel=4)
    raise ValueError(f"unknown scenario {name!r}")


def in_subprocess(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one scenario in a fresh interpreter (its own RSS) and read its JSON result."""
    command = [sys.executable, __file__, "--scenario", name, "--algorithm", args.algorithm]
    if args.quick:
        command.append("--quick")
    if args.constrained:
        command.append("--constrained")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(scaling: dict[str, Any], fleet: dict[str, Any], args: argparse.Namespace) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Algorithm `{scaling['algorithm']}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load:.1f} at the end{' (quick run)' if args.quick else ''}"
        f"{', objective constrained (cost <= 0.5)' if args.constrained else ''}.",
        "",
        f"Process RSS after imports (nevergrad pulls scipy, sklearn, pandas): {scaling['base_rss_mib']:.0f} MiB.",
        "",
        "| finished trials | sync+ask p50 wall (ms) | p99 wall (ms) | p50 CPU (ms) | process RSS (MiB) "
        "| RSS growth (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in scaling["rows"]:
        lines.append(
            f"| {row['trials']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_p50_ms']:.2f} "
            f"| {row['rss_mib']:.0f} | {row['rss_delta_mib']:.1f} |"
        )
    rb = scaling["rebuild"]
    lines += [
        "",
        "| measure | result | goal |",
        "|---|---|---|",
        f"| rebuild from {rb['trials']:,} trials: first suggestion, wall / CPU | "
        f"{rb['first_suggestion_s'] * 1e3:.0f} / {rb['first_suggestion_cpu_s'] * 1e3:.0f} ms | — |",
        f"| rebuild: replay fully drained ({rb['extra_syncs']} more syncs) | {rb['drained_s']:.2f} s | — |",
        f"| {fleet['experiments']} experiments × {fleet['trials_each']} trials, one process: RSS "
        f"(Trials kept as {fleet['trials_json_mib']:.1f} MiB of JSON, parsed per reconcile) | "
        f"{fleet['fleet_rss_mib']:.0f} MiB | ≤ {GOALS['fleet_rss_mib']:.0f} MB |",
        f"| fleet reconcile step (sync+ask 4) p50 / p99 | {fleet['step_p50_ms']:.1f} / {fleet['step_p99_ms']:.1f} ms "
        f"| — |",
        f"| restart: all {fleet['experiments']} suggesting again (fresh cache, replay), wall / CPU incl. parsing | "
        f"{fleet['restart_s']:.2f} / {fleet['restart_cpu_s']:.2f} s | ≤ {GOALS['restart_s']:.0f} s |",
        f"| (not included above: parsing the Trials, {fleet['restart_parse_s']:.2f} s at the restart) | | |",
        f"| RSS after the restart | {fleet['rss_after_restart_mib']:.0f} MiB | — |",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--algorithm", default=default_algorithm(), help="algorithm name (default: kubenas's)")
    parser.add_argument("--in-process", action="store_true", help="run scenarios here, not in fresh processes")
    parser.add_argument("--scenario", choices=("scaling", "fleet"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--constrained", action="store_true", help="objective with a cost constraint")
    args = parser.parse_args(argv)
    global _constrained
    _constrained = args.constrained
    if args.scenario:
        result = run_scenario(args.scenario, args)
        print(json.dumps(result))
        return result
    runner = (lambda name: run_scenario(name, args)) if args.in_process else (lambda name: in_subprocess(name, args))
    results = {"scaling": runner("scaling"), "fleet": runner("fleet")}
    print(report(results["scaling"], results["fleet"], args))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
