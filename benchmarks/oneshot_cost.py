"""Cost to a good model: a one-shot Experiment against the default black-box search, same space and data.

Measures once, then replays both Experiments' decisions from the measurements:

1. *Measure* (cached in ``--data``, resumable): every subnet of the space trained standalone
   (validation accuracy and CPU-s, ``--standalone-seeds`` runs each), the supernet trained once
   (CPU-s) and every subnet's inherited validation accuracy and evaluation CPU-s. Same data,
   budgets and functions as ``oneshot_ranking.py``; CPU time is the process's, one torch thread.
2. *Replay* over ``--replays`` seeds. A trained subnet returns one of its recorded standalone
   runs at random (as a real training would); whether a model is good is judged on its mean
   over the recorded runs. The bar is the best mean of the whole table minus ``--bar`` pp.

   - Black box: ``kubenas.search.Suggester`` with the default algorithm, the operator's
     code path (``search.runner.run_kubenas``), each proposal "trained" by table lookup. Cost:
     the standalone CPU-s of every trial started until the first one that clears the bar (with
     ``parallel`` > 1, the whole batch it was in).
   - One-shot: ``kubenas.plan.oneshot.next_trials`` (the planner's own stage logic) with the
     Suggester, ``parallelTrials`` 2 and ``batchSize`` 8 as in ``examples/digits-oneshot.yaml``,
     each trial completed by table lookup: the supernet trial costs the supernet's CPU-s, a
     search trial the evaluation CPU-s of its subnets, a retraining trial a standalone training.
     Cost: the whole Experiment, if one of its retrained subnets clears the bar; else not reached.

Excluded from both: each trial's start-up (process, dataset and checkpoint loading).

    nice -n 15 python benchmarks/oneshot_cost.py                 # measure what the cache lacks, then replay
    python benchmarks/oneshot_cost.py --replay                   # replay the committed measurements only
    python benchmarks/oneshot_cost.py --quick --data /tmp/q.json # digits, seconds: the script does not rot
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import statistics
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubenas import api
from kubenas.api.oneshot import MODE, SUBNETS
from kubenas.plan import oneshot
from kubenas.search import Suggester
from oneshot_ranking import QUICK_SPACE, SPACE, all_subnets, inherited_accuracy, standalone_accuracy, train_supernet
from search import runner, tables

DATA = Path(__file__).resolve().parent / "data" / "oneshot_cost.json"
SPACES: dict[str, dict[str, list[int]]] = {
    "36": SPACE,  # the ranking benchmark's space
    "54": {**SPACE, "blocks": [1, 2, 3]},
    "quick": QUICK_SPACE,
}
DEFAULT_ALGORITHM = api.Algorithm().name
EXAMPLE_ALGORITHM = "RegularizedEvolution"  # examples/digits-oneshot.yaml's
# How the parameters are declared, as in examples/digits-oneshot.yaml: counts as int ranges, sizes as categories.
INT_DIMENSIONS = ("stages", "blocks")


def subnet_key(subnet: Mapping[str, int]) -> str:
    return ",".join(f"{k}={subnet[k]}" for k in sorted(subnet))


# ---------------------------------------------------------------------------------------------- measure


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What every measurement in one cache must share."""
    return {
        "dataset": "digits" if args.quick else "fashion-mnist", "max_train_samples": args.train_samples,
        "val_fraction": args.val_fraction, "data_seed": 0, "epochs": args.epochs,
        "supernet_epochs": args.supernet_epochs, "calibration_batches": args.calibration_batches,
    }


def load_cache(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return {"settings": settings, "standalone": {}, "spaces": {}}
    cache: dict[str, Any] = json.loads(path.read_text())
    if cache["settings"] != settings:
        raise SystemExit(f"{path} holds measurements with settings {cache['settings']}, not {settings}: "
                         "use another --data file")
    return cache


def save(path: Path, cache: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def measure(path: Path, cache: dict[str, Any], space_name: str, standalone_seeds: int) -> None:
    """Fill in what ``cache`` lacks for ``space_name``, saving after every measurement."""
    import torch
    from kubenas_trial import data, supernet
    from kubenas_trial.config import parse

    torch.set_num_threads(1)
    settings = cache["settings"]
    config = parse({"dataset": settings["dataset"], "max_train_samples": settings["max_train_samples"],
                    "val_fraction": settings["val_fraction"], "seed": settings["data_seed"], "num_threads": 1,
                    "device": "cpu"})
    dataset = data.load(config)
    space = supernet.make_space(config, SPACES[space_name])
    subnets = all_subnets(space)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    entry = cache["spaces"].setdefault(space_name, {"space": SPACES[space_name]})
    if "inherited" not in entry or len(entry["inherited"]) < len(subnets):
        print(f"space {space_name}: {len(subnets)} subnets; training the supernet", flush=True)
        net, trainer, calibration, history, cpu = train_supernet(config, dataset, space, settings["supernet_epochs"],
                                                                 settings["calibration_batches"])
        entry.update(supernet_cpu_s=cpu, supernet_final=history.history[-1], measured=stamp,
                     torch=torch.__version__, inherited={})
        for n, subnet in enumerate(subnets):
            accuracy, seconds = inherited_accuracy(trainer, net, subnet, calibration)
            entry["inherited"][subnet_key(subnet)] = {"accuracy": accuracy, "cpu_s": seconds}
            print(f"[{n + 1}/{len(subnets)}] inherited {subnet} {accuracy:.4f} ({seconds:.1f} CPU-s)", flush=True)
        save(path, cache)
    for seed in range(standalone_seeds):
        for n, subnet in enumerate(subnets):
            runs = cache["standalone"].setdefault(subnet_key(subnet), [])
            if any(r["seed"] == seed for r in runs):
                continue
            accuracy, seconds = standalone_accuracy(config, dataset, subnet, settings["epochs"], seed)
            runs.append({"seed": seed, "accuracy": accuracy, "cpu_s": seconds, "measured": stamp})
            save(path, cache)
            print(f"[{n + 1}/{len(subnets)}] standalone seed {seed} {subnet} {accuracy:.4f} ({seconds:.0f} CPU-s)",
                  flush=True)


# ---------------------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Measured:
    """One space's measurements as a search table: runs are standalone accuracies per subnet."""

    table: tables.Table
    train_cpu: dict[str, float]  # table key -> mean standalone CPU-s
    inherited: dict[str, float]
    eval_cpu: dict[str, float]
    supernet_cpu: float
    bar: float  # the best mean standalone accuracy minus the margin

    def cost(self, keys: Sequence[str]) -> float:
        return sum(self.train_cpu[k] for k in keys)

    def good(self, key: str) -> bool:
        return self.table.means[key] >= self.bar


def measured(cache: dict[str, Any], space_name: str, bar_pp: float) -> Measured:
    entry = cache["spaces"][space_name]
    spec = entry["space"]
    searched = [name for name, values in spec.items() if len(values) > 1]
    dimensions = tuple(tables.Dimension(name, tuple(spec[name]), "int" if name in INT_DIMENSIONS else "categorical")
                       for name in searched)
    fixed = {name: values[0] for name, values in spec.items() if len(values) == 1}
    runs, train_cpu, inherited, eval_cpu = {}, {}, {}, {}
    for values in itertools.product(*(d.grid for d in dimensions)):
        config = dict(zip(searched, values, strict=True))
        name = subnet_key({**fixed, **config})
        key = "".join(str(d.grid.index(v)) for d, v in zip(dimensions, values, strict=True))
        recorded = cache["standalone"][name]
        runs[key] = [r["accuracy"] for r in recorded]
        train_cpu[key] = statistics.fmean(r["cpu_s"] for r in recorded)
        inherited[key] = entry["inherited"][name]["accuracy"]
        eval_cpu[key] = entry["inherited"][name]["cpu_s"]
    table = tables.Table(f"fashion-mnist one-shot space {space_name}", dimensions, runs, True)
    return Measured(table, train_cpu, inherited, eval_cpu, entry["supernet_cpu_s"], table.optimum - bar_pp / 100)


@dataclass(frozen=True)
class Run:
    """One replayed Experiment: CPU-s until a good model (inf: not reached) and what it did."""

    cost: float
    trainings: int  # standalone trainings started (black box) or retrained (one-shot)
    total: float  # the whole Experiment's CPU-s
    found: float  # mean standalone accuracy of the model the Experiment reports (best observed)
    needed_top_k: float = math.nan  # one-shot: retrainings in inherited order until a good subnet (inf: none)


def noise_for(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def black_box(m: Measured, algorithm: str, parallel: int, seed: int) -> Run:
    """A black-box Experiment with maxTrials = the whole space; cost until the first good model."""
    noise = noise_for(seed, "black-box")
    observed: list[float] = []

    def evaluate(key: str) -> float:
        observed.append(m.table.evaluate(key, noise))
        return observed[-1]

    keys = runner.run_kubenas(m.table, algorithm, len(m.table.runs), evaluate, seed, parallel=parallel)
    first = next((i for i, k in enumerate(keys) if m.good(k)), None)
    end = len(keys) if first is None else min(len(keys), math.ceil((first + 1) / parallel) * parallel)
    best = max(range(end), key=lambda i: observed[i])  # what the Experiment would report when stopped there
    cost = math.inf if first is None else m.cost(keys[:end])
    return Run(cost, end, m.cost(keys), m.table.means[keys[best]])


def one_shot_spec(m: Measured, algorithm: str, max_trials: int, top_k: int, seed: int, cache: dict[str, Any],
                  parallel: int = 2, batch: int = 8) -> api.ExperimentSpec:
    settings = cache["settings"]
    return api.ExperimentSpec.model_validate({
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": m.table.parameters,
        "algorithm": {"name": algorithm, "seed": seed},
        "budget": {"maxTrials": max_trials, "parallelTrials": parallel},
        "oneShot": {"supernet": {"epochs": settings["supernet_epochs"]}, "batchSize": batch, "topK": top_k,
                    "retrain": {"epochs": settings["epochs"]}},
        "trialTemplate": {"spec": {"containers": [{"name": "trial", "image": "none"}]}},
    })


def one_shot(m: Measured, spec: api.ExperimentSpec, seed: int) -> Run:
    """A one-shot Experiment planned by ``kubenas.plan.oneshot`` with every trial completed from the table."""
    noise = noise_for(seed, "one-shot")
    suggester = Suggester(spec)
    trials: list[api.Trial] = []
    total = 0.0
    evaluated: list[str] = []
    retrained: dict[str, float] = {}
    while True:
        suggester.sync(oneshot.searched_trials(trials))
        step = oneshot.next_trials(spec, "bench", trials, suggester, spec.budget.parallel_trials)
        for create in step.creates:
            mode = create.parameters[MODE]
            if mode == oneshot.SUPERNET_TRAIN:
                total += m.supernet_cpu
                metrics = {"accuracy": 0.0}
            elif mode == oneshot.SUPERNET_EVAL:
                assert isinstance(create.parameters[SUBNETS], str)
                keys = [m.table.key(s) for s in json.loads(create.parameters[SUBNETS])]
                evaluated += keys
                total += sum(m.eval_cpu[k] for k in keys)
                metrics = {"subnets": float(len(keys)), **{f"{i}.accuracy": m.inherited[k] for i, k in enumerate(keys)}}
            else:
                key = m.table.key(create.parameters)
                total += m.train_cpu[key]
                retrained[key] = m.table.evaluate(key, noise)
                metrics = {"accuracy": retrained[key]}
            trials.append(runner.make_trial(create.name, create.index, create.parameters, metrics))
        if step.done:
            break
        if not step.creates:
            raise RuntimeError("the one-shot planner neither created trials nor finished")
    ranked = sorted(evaluated, key=lambda k: -m.inherited[k])
    needed = next((i + 1 for i, k in enumerate(ranked) if m.good(k)), math.inf)
    reached = any(m.good(k) for k in retrained)
    best = max(retrained, key=lambda k: retrained[k])
    return Run(total if reached else math.inf, len(retrained), total, m.table.means[best], needed)


def median(values: Sequence[float]) -> float:
    return float(np.median(values))  # inf when at least half are inf: "not reached" in the median run


def fmt(value: float, digits: int = 0) -> str:
    return "not reached" if math.isinf(value) else f"{value:,.{digits}f}"


def replay(cache: dict[str, Any], space_name: str, replays: int, bar_pp: float) -> dict[str, Any]:
    m = measured(cache, space_name, bar_pp)
    size = len(m.table.runs)
    good = [k for k in m.table.runs if m.good(k)]
    mean_train = statistics.fmean(m.train_cpu.values())
    print(f"\nspace {space_name}: {size} subnets; best mean standalone accuracy {m.table.optimum:.4f}, bar "
          f"{m.bar:.4f} ({len(good)} subnets clear it); supernet {m.supernet_cpu:.0f} CPU-s, a standalone "
          f"training {mean_train:.1f} CPU-s on average (all {size}: {sum(m.train_cpu.values()):.0f}), an inherited "
          f"evaluation {statistics.fmean(m.eval_cpu.values()):.2f}; {replays} replays")
    methods: list[tuple[str, Any]] = [
        (f"black box, {DEFAULT_ALGORITHM} (default), parallel 1",
         lambda s: black_box(m, DEFAULT_ALGORITHM, 1, s)),
        (f"black box, {DEFAULT_ALGORITHM} (default), parallel 2",
         lambda s: black_box(m, DEFAULT_ALGORITHM, 2, s)),
    ]
    half = math.ceil(size / 2)
    for algorithm, max_trials, top_k in [(DEFAULT_ALGORITHM, size, 2), (DEFAULT_ALGORITHM, half, 2),
                                         (EXAMPLE_ALGORITHM, half, 2), (DEFAULT_ALGORITHM, size, 3)]:
        label = f"one-shot, {algorithm}, maxTrials {max_trials}, topK {top_k}"
        methods.append((label, lambda s, a=algorithm, n=max_trials, k=top_k:
                        one_shot(m, one_shot_spec(m, a, n, k, s, cache), s)))
    head = ["Experiment", "reaches the bar", "median CPU-s to the bar (quartiles)", "median trainings",
            "median CPU-s in all",
            "median accuracy found", "ratio to black box (parallel 1)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    results: dict[str, Any] = {}
    reference = math.nan
    for label, run in methods:
        runs = [run(seed) for seed in range(replays)]
        cost = median([r.cost for r in runs])
        if math.isnan(reference):
            reference = cost
        ratio = cost / reference
        low, high = (float(np.percentile([r.cost for r in runs], q, method="nearest")) for q in (25, 75))
        results[label] = {
            "reached": sum(not math.isinf(r.cost) for r in runs) / len(runs), "median_cost_cpu_s": cost,
            "quartiles_cpu_s": [low, high],
            "median_trainings": median([r.trainings for r in runs]),
            "median_total_cpu_s": median([r.total for r in runs]),
            "median_found": median([r.found for r in runs]), "ratio": ratio,
            "needed_top_k": [r.needed_top_k for r in runs], "costs": [r.cost for r in runs],
        }
        row = results[label]
        spread = "" if low == high else f" ({fmt(low)}–{fmt(high)})"
        print(f"| {label} | {row['reached']:.0%} | {fmt(cost)}{spread} | {row['median_trainings']:.0f} | "
              f"{row['median_total_cpu_s']:,.0f} | {row['median_found']:.4f} | "
              f"{'—' if math.isinf(ratio) or math.isnan(ratio) else f'{ratio:.2f}'} |", flush=True)
    ranked = sorted(m.table.runs, key=lambda k: -m.inherited[k])
    first_good = next(i + 1 for i, k in enumerate(ranked) if m.good(k))
    fixed = m.supernet_cpu + sum(m.eval_cpu.values())
    everything = sum(m.train_cpu.values())
    print(f"ranked by inherited accuracy, the first subnet that clears the bar is number {first_good} of {size}; "
          f"supernet + evaluating all {size} = {fixed:.0f} CPU-s ({fixed / mean_train:.1f} average trainings), "
          f"{fixed / everything:.0%} of training every subnet standalone ({everything:.0f} CPU-s)")
    return {"subnets": size, "best": m.table.optimum, "bar": m.bar, "good": len(good), "supernet_cpu_s": m.supernet_cpu,
            "eval_all_cpu_s": sum(m.eval_cpu.values()), "train_all_cpu_s": everything, "mean_train_cpu_s": mean_train,
            "first_good_by_inherited": first_good, "methods": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=["36", "54"], choices=[s for s in SPACES if s != "quick"])
    parser.add_argument("--standalone-seeds", type=int, default=2, help="standalone runs recorded per subnet")
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--bar", type=float, default=0.5, help="pp below the best mean standalone accuracy")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every standalone training")
    parser.add_argument("--supernet-epochs", type=int, default=6)
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--calibration-batches", type=int, default=20)
    parser.add_argument("--replay", action="store_true", help="no training: replay the cached measurements")
    parser.add_argument("--quick", action="store_true", help="digits, an 8-subnet space, 1 epoch: a smoke run")
    parser.add_argument("--data", type=Path, default=DATA, help="the measurements' cache (JSON)")
    parser.add_argument("--out", type=Path, help="also write the replay's figures here (JSON)")
    args = parser.parse_args()
    if args.quick:
        args.spaces, args.epochs, args.supernet_epochs, args.calibration_batches = ["quick"], 1, 1, 2
        args.replays = min(args.replays, 3)
        if args.data == DATA:
            raise SystemExit("--quick needs its own --data file")
    cache = load_cache(args.data, settings_of(args))
    summary: dict[str, Any] = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "settings": cache["settings"], "bar_pp": args.bar, "replays": args.replays}
    for space_name in args.spaces:
        if not args.replay:
            measure(args.data, cache, space_name, args.standalone_seeds)
        summary[space_name] = replay(cache, space_name, args.replays, args.bar)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
