"""Gradient-based cell search (GDAS, plain DARTS) against the default black-box search, on Fashion-MNIST.

For every seed:

- **GDAS** and **DARTS**: one ``mode: gradient-search`` trial (the trainer's own code path,
  ``kubenas_trial.trial.run``), then its derived cell retrained from scratch as an ordinary
  trial (``cell`` = the derived architecture string, the retraining settings below). Reported:
  the derived cell, its share of skip and none operations, the retrained validation and test
  accuracy, and the CPU seconds of search + retraining.
- **Black box**: kubenas's default algorithm through ``kubenas.search.Suggester`` (the
  operator's code path) over the same cell space (6 categorical edges × the 5 NAS-Bench-201
  operations), each evaluation an ordinary trial of its cell with the same retraining
  settings, until it has spent the CPU seconds GDAS spent on that seed (search + retraining;
  the evaluation that crosses the budget counts). Reported: the best cell by validation
  accuracy, its test accuracy, its skip/none shares and the evaluations it took.

CPU seconds are this process's (and any child's) user + system time, so a shared machine
slows the benchmark down but barely moves the figures. Everything runs on one thread.

    nice -n 15 .venv/bin/python benchmarks/gradient_nas.py                      # 5 seeds, the README table
    nice -n 15 .venv/bin/python benchmarks/gradient_nas.py --seeds 0 1 --jobs 2 # a subset, two processes
    nice -n 15 .venv/bin/python benchmarks/gradient_nas.py --quick              # digits, seconds: a smoke run
    .venv/bin/python benchmarks/gradient_nas.py --rows a.err b.err   # the table from runs' streamed rows (stderr)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from kubenas import algorithms, api
from kubenas.search import Suggester
from kubenas_trial.nb201 import OPS, format_arch, parse_arch, share
from kubenas_trial.sdk import TrialReporter
from kubenas_trial.trial import run

DATA: dict[str, Any] = {
    "dataset": "fashion-mnist", "max_train_samples": 2000, "val_fraction": 0.02,
    "stages": 3, "blocks": 1, "width": 8, "batch_size": 64, "num_threads": 1, "device": "cpu",
}
SEARCH: dict[str, Any] = {"mode": "gradient-search", "epochs": 12, "arch_lr": 0.01, "arch_warmup": 0.5}
RETRAIN: dict[str, Any] = {"epochs": 6, "latency_repeats": 1, "latency_warmup": 0}
QUICK_DATA: dict[str, Any] = {"dataset": "digits", "stages": 2, "width": 4, "batch_size": 32, "num_threads": 1,
                              "device": "cpu"}


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def trial(params: dict[str, Any], out: Path | None = None) -> tuple[dict[str, Any], float]:
    """One trial of the built-in trainer in this process: (its final metrics, CPU seconds)."""
    with tempfile.TemporaryDirectory(prefix="kubenas-gnas-") as tmp:
        if out is not None:
            os.environ["KUBENAS_OUTPUT_DIR"] = str(out)
        else:
            os.environ.pop("KUBENAS_OUTPUT_DIR", None)
        start = cpu_seconds()
        result = run(params, TrialReporter(port=0, termination_log=Path(tmp) / "result"), log=io.StringIO())
        return result, cpu_seconds() - start


def retrain(cell: str, data: dict[str, Any], retrain_settings: dict[str, Any], seed: int) -> tuple[dict, float]:
    return trial({**data, **retrain_settings, "cell": cell, "seed": seed})


def gradient(method: str, seed: int, data: dict, search: dict, retrain_settings: dict) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kubenas-gnas-search-") as tmp:
        found, search_cpu = trial({**data, **search, "search_method": method, "seed": seed}, Path(tmp))
        cell = json.loads((Path(tmp) / "cell.json").read_text())["cell"]
    result, retrain_cpu = retrain(cell, data, retrain_settings, seed)
    return {
        "method": method, "seed": seed, "cell": cell, "skip_share": found["skip_share"],
        "none_share": found["none_share"], "supernet_accuracy": found["accuracy"],
        "accuracy": result["accuracy"], "test_accuracy": result["test_accuracy"], "params": result["params"],
        "search_cpu": search_cpu, "retrain_cpu": retrain_cpu, "cpu": search_cpu + retrain_cpu, "evaluations": 1,
    }


def cell_spec(seed: int, budget_hint: int) -> api.ExperimentSpec:
    return api.ExperimentSpec.model_validate({
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": [{"name": f"edge{e}", "type": "categorical", "values": list(OPS)} for e in range(6)],
        "algorithm": {"name": algorithms.DEFAULT, "seed": seed},
        "budget": {"maxTrials": budget_hint, "parallelTrials": 1},
        "trialTemplate": {"spec": {"containers": [{"name": "trial", "image": "none"}]}},
    })


def black_box(seed: int, budget_cpu: float, data: dict, retrain_settings: dict) -> dict[str, Any]:
    """The default algorithm over the cell space until ``budget_cpu`` CPU seconds are spent."""
    suggester = Suggester(cell_spec(seed, budget_hint=50))
    trials: list[api.Trial] = []
    spent, best = 0.0, None
    while spent < budget_cpu:
        start = cpu_seconds()
        config = suggester.ask(1)[0]
        cell = format_arch([config[f"edge{e}"] for e in range(6)])
        result, _ = retrain(cell, data, retrain_settings, seed)
        spent += cpu_seconds() - start  # the Suggester's own time counts too
        trials.append(api.Trial.model_validate({
            "metadata": {"name": f"bb-{len(trials)}"},
            "spec": {"experiment": "bench", "index": len(trials), "parameters": config},
            "status": {"phase": "Succeeded", "reason": "Completed", "metrics": {"accuracy": result["accuracy"]}},
        }))
        suggester.sync(trials)
        if best is None or result["accuracy"] > best[1]["accuracy"]:
            best = (cell, result)
    assert best is not None
    cell, result = best
    ops = parse_arch(cell)
    return {
        "method": "black box", "seed": seed, "cell": cell, "skip_share": share(ops, ("skip_connect",)),
        "none_share": share(ops, ("none",)), "supernet_accuracy": float("nan"), "accuracy": result["accuracy"],
        "test_accuracy": result["test_accuracy"], "params": result["params"], "search_cpu": spent, "retrain_cpu": 0.0,
        "cpu": spent, "evaluations": len(trials),
    }


def one_seed(seed: int, quick: bool) -> list[dict[str, Any]]:
    data = QUICK_DATA if quick else DATA
    search = {**SEARCH, "epochs": 4} if quick else SEARCH
    settings = {**RETRAIN, "epochs": 2} if quick else RETRAIN
    rows = [gradient("gdas", seed, data, search, settings)]
    rows.append(black_box(seed, rows[0]["cpu"], data, settings))
    rows.append(gradient("darts", seed, data, search, settings))
    for row in rows:
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | seed | derived / best cell | skip | none | val acc | test acc | search CPU s | "
             "retrain CPU s | total CPU s | evaluations |", "|" + "---|" * 11]
    for r in rows:
        cell = r["cell"].replace("|", "\\|")  # a pipe inside a table cell, even in code, ends the cell
        lines.append(f"| {r['method']} | {r['seed']} | `{cell}` | {r['skip_share']:.2f} | {r['none_share']:.2f} | "
                     f"{r['accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['search_cpu']:.0f} | "
                     f"{r['retrain_cpu']:.0f} | {r['cpu']:.0f} | {r['evaluations']} |")
    lines += ["", "| method | seeds | test acc median (min–max) | skip share mean | none share mean | "
              "all-parameter-free cells | total CPU s median |", "|" + "---|" * 7]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        tests = [r["test_accuracy"] for r in mine]
        collapsed = sum(r["skip_share"] + r["none_share"] == 1 for r in mine)
        lines.append(f"| {method} | {len(mine)} | {statistics.median(tests):.3f} ({min(tests):.3f}–{max(tests):.3f}) | "
                     f"{statistics.mean(r['skip_share'] for r in mine):.2f} | "
                     f"{statistics.mean(r['none_share'] for r in mine):.2f} | {collapsed} | "
                     f"{statistics.median(r['cpu'] for r in mine):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes")
    parser.add_argument("--quick", action="store_true", help="digits, tiny budgets: a smoke run")
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--rows", type=Path, nargs="+", help="print the table of rows streamed by earlier runs")
    args = parser.parse_args()
    started = time.time()
    if args.rows:
        lines = [line for path in args.rows for line in path.read_text().splitlines() if line.startswith("{")]
        per_seed = [[json.loads(line) for line in lines]]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            per_seed = list(pool.map(one_seed, args.seeds, [args.quick] * len(args.seeds)))
    rows = sorted((r for rows in per_seed for r in rows), key=lambda r: (r["method"], r["seed"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    settings = {"data": QUICK_DATA if args.quick else DATA, "search": SEARCH, "retrain": RETRAIN}
    print(f"settings: {json.dumps(settings)}")
    print(table(rows))
    print(f"\nwall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
