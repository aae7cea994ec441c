"""One-shot ranking quality: does a weight-sharing supernet rank subnets as training them from scratch does?

Trains the trial image's supernet once (sandwich rule, in-place distillation) on a subset of
Fashion-MNIST, then, for subnets sampled across the space (stratified by FLOPs), compares each
one's inherited validation accuracy (after batch-norm recalibration) with its accuracy when
trained standalone from scratch. Reports Kendall τ and Spearman ρ between the two, and the
CPU-seconds of the supernet training against the sum of the standalone trainings.

Every standalone subnet gets the same budget: ``--epochs`` epochs on the same training subset
with the same optimizer, schedule, batch order and seed. The supernet gets ``--supernet-epochs``.
CPU time is the process's (``time.process_time``), so other jobs on shared cores do not inflate it.

    nice -n 15 python benchmarks/oneshot_ranking.py [--subnets 32] [--epochs 3] [--supernet-epochs 6]
    python benchmarks/oneshot_ranking.py --quick      # digits, seconds: the script does not rot
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from kubenas_trial import cost, data, supernet
from kubenas_trial.config import parse
from kubenas_trial.models import build_model
from kubenas_trial.train import Trainer
from scipy import stats

SPACE = {"stages": [1, 2, 3], "blocks": [1, 2], "width": [4, 8, 12], "kernel_size": [3, 5], "expansion": [1]}
QUICK_SPACE = {"stages": [1, 2], "blocks": [1, 2], "width": [4, 8], "kernel_size": [3], "expansion": [1]}


def all_subnets(space: supernet.Space) -> list[supernet.Subnet]:
    keys = list(space.choices)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*space.choices.values())]


def stratified(subnets: list[supernet.Subnet], sizes: list[int], count: int, seed: int) -> list[int]:
    """Indices of ``count`` subnets: the subnets sorted by size, cut into ``count`` equal strata, one from each."""
    order = sorted(range(len(subnets)), key=lambda i: sizes[i])
    rng = random.Random(seed)
    picks = []
    for k in range(count):
        stratum = order[k * len(order) // count : (k + 1) * len(order) // count]
        picks.append(rng.choice(stratum))
    return picks


def train_supernet(config: dict[str, Any], dataset: data.Dataset, space: supernet.Space, epochs: int,
                   calibration_batches: int
                   ) -> tuple[supernet.Supernet, Trainer, list[torch.Tensor], supernet.SandwichResult, float]:
    """The supernet trained for ``epochs`` epochs: (supernet, its trainer, calibration batches, history, CPU-s)."""
    torch.manual_seed(config["seed"])
    net = supernet.Supernet(dataset.input_shape[0], dataset.num_classes, config, space)
    trainer = Trainer(net, dataset, config, torch.device("cpu"))
    calibration = supernet.calibration_set(trainer, calibration_batches)
    start = time.process_time()
    history = supernet.train(trainer, net, epochs, calibration,
                             lambda e, m: print(f"supernet epoch {e} {m}", flush=True))
    return net, trainer, calibration, history, time.process_time() - start


def inherited_accuracy(trainer: Trainer, net: supernet.Supernet, subnet: supernet.Subnet,
                       calibration: list[torch.Tensor]) -> tuple[float, float]:
    """(validation accuracy with inherited weights after batch-norm recalibration, CPU-s)."""
    start = time.process_time()
    _, accuracy = supernet.evaluate(trainer, net, subnet, calibration)
    return accuracy, time.process_time() - start


def standalone_accuracy(config: dict[str, Any], dataset: data.Dataset, subnet: supernet.Subnet, epochs: int,
                        seed: int) -> tuple[float, float]:
    """(validation accuracy of ``subnet`` trained from scratch for ``epochs`` epochs with ``seed``, CPU-s)."""
    start = time.process_time()
    torch.manual_seed(seed)
    standalone_config = {**supernet.subnet_config(config, subnet), "seed": seed}
    model = build_model(standalone_config, dataset.input_shape, dataset.num_classes)
    fit = Trainer(model, dataset, standalone_config, torch.device("cpu")).fit(epochs)
    return fit.history[-1]["accuracy"], time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subnets", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every standalone subnet")
    parser.add_argument("--supernet-epochs", type=int, default=6)
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--calibration-batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="digits, a 16-subnet space, 1 epoch: a smoke run")
    parser.add_argument("--out", type=Path, help="also write every subnet's figures here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    space_spec = QUICK_SPACE if args.quick else SPACE
    params: dict[str, Any] = {
        "dataset": "digits" if args.quick else "fashion-mnist", "max_train_samples": args.train_samples,
        "val_fraction": args.val_fraction, "seed": args.seed, "num_threads": 1, "device": "cpu",
    }
    if args.quick:
        args.subnets, args.epochs, args.supernet_epochs, args.calibration_batches = 4, 1, 1, 2
    config = parse(params)
    dataset = data.load(config)
    space = supernet.make_space(config, space_spec)
    candidates = all_subnets(space)
    example = dataset.x_val[:1]
    flops = [cost.flops(build_model(supernet.subnet_config(config, s), dataset.input_shape, dataset.num_classes),
                        example) for s in candidates]
    picked = stratified(candidates, flops, args.subnets, args.seed)
    print(f"{dataset.summary()}; space of {len(candidates)} subnets, {len(picked)} picked", flush=True)

    net, trainer, calibration, history, supernet_cpu = train_supernet(config, dataset, space, args.supernet_epochs,
                                                                      args.calibration_batches)
    print(f"supernet trained in {supernet_cpu:.0f} CPU-s", flush=True)

    rows = []
    eval_cpu = standalone_cpu = 0.0
    for n, i in enumerate(picked):
        subnet = candidates[i]
        inherited, seconds = inherited_accuracy(trainer, net, subnet, calibration)
        eval_cpu += seconds
        accuracy, seconds = standalone_accuracy(config, dataset, subnet, args.epochs, args.seed)
        standalone_cpu += seconds
        rows.append({"subnet": subnet, "flops": flops[i], "inherited": inherited,
                     "standalone": accuracy, "standalone_cpu_s": seconds})
        print(f"[{n + 1}/{len(picked)}] {subnet} flops={flops[i]} inherited={inherited:.4f} "
              f"standalone={rows[-1]['standalone']:.4f} ({seconds:.0f} CPU-s)", flush=True)

    inherited = [r["inherited"] for r in rows]
    standalone = [r["standalone"] for r in rows]
    tau = stats.kendalltau(inherited, standalone)
    rho = stats.spearmanr(inherited, standalone)
    by_size = stats.kendalltau([r["flops"] for r in rows], standalone)  # the baseline: rank by FLOPs alone
    summary = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "dataset": dataset.summary(), "space": space_spec,
        "subnets": len(rows), "epochs": args.epochs, "supernet_epochs": args.supernet_epochs,
        "calibration_batches": args.calibration_batches,
        "kendall_tau": tau.statistic, "kendall_p": tau.pvalue, "spearman": rho.statistic,
        "kendall_tau_flops": by_size.statistic,
        "supernet_final": history.history[-1], "supernet_cpu_s": supernet_cpu,
        "inherited_eval_cpu_s": eval_cpu, "standalone_cpu_s": standalone_cpu, "rows": rows,
    }
    print(f"\nKendall tau = {tau.statistic:.3f} (p = {tau.pvalue:.2g}), Spearman rho = {rho.statistic:.3f}; "
          f"ranking by FLOPs alone: tau = {by_size.statistic:.3f}")
    print(f"CPU-s: supernet {supernet_cpu:.0f} + inherited evaluation {eval_cpu:.0f}; "
          f"standalone sum {standalone_cpu:.0f} ({len(rows)} subnets)")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
