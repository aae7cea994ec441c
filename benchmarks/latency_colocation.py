"""Latency under co-location: does a trial's latency_ms survive neighbours on the same CPUs?

Builds 24 configurations of the built-in trainer's CNN on digits (stages, blocks, width, fp32
or int8 static quantization, with or without structured pruning; untrained weights, since a
dense forward's time does not depend on their values) and measures each one's batch-1
latency twice:

- **isolated**: one process per method, nothing else of ours running (3 passes, the smallest
  value kept: the machine may be shared with other work);
- **co-located**: 3 trial processes measuring at the same time (each in its own order, all
  busy until the last one is done) plus one CPU-burning neighbour process.

With two methods:

- **before**: the trainer's measurement up to this change — torch with the trainer's threads
  (the usable CPUs when there is no CPU limit), one round, median of 50 timed forwards after
  10 warm-up ones (reimplemented here);
- **after**: ``kubenas_trial.cost.measure_latency`` with ``runtime.latency_threads`` (the CPU
  limit rounded down, 1 without one) and up to 3 rounds when the spread says disturbed.

The ratio co-located / isolated is reported for every (configuration, co-located trial) pair.

    python benchmarks/latency_colocation.py [--trials 3] [--burners 1] [--isolated-repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from kubenas_trial import compress, cost, data, models, runtime
from kubenas_trial.config import parse
from torch import nn

SHAPES = [(1, 1, 12), (1, 2, 16), (2, 1, 8), (2, 1, 16), (3, 2, 15), (3, 1, 24)]
CONFIGS: list[dict[str, Any]] = [
    {"stages": stages, "blocks": blocks, "width": width, "quantize": quantize, "prune": prune}
    for stages, blocks, width in SHAPES
    for quantize in ("none", "int8")
    for prune in ("none", "structured")
]
METHODS = ("before", "after")


def label(config: dict[str, Any]) -> str:
    """A short name of a configuration."""
    precision = "int8" if config["quantize"] == "int8" else "fp32"
    text = f"s{config['stages']} b{config['blocks']} w{config['width']} {precision}"
    return text + (" pruned" if config["prune"] != "none" else "")


def build(config: dict[str, Any], dataset: data.Dataset) -> nn.Module:
    """The model a trial with ``config`` ends with (untrained)."""
    torch.manual_seed(0)
    params = parse({**config, "prune_amount": 0.5})
    model = models.build_model(params, dataset.input_shape, dataset.num_classes).eval()
    if config["prune"] != "none":
        compress.apply_pruning(model, config["prune"], 0.5)
        compress.make_permanent(model)
    if config["quantize"] == "int8":
        calibration = compress.calibration_batches(dataset.x_train, 4, 64, 0)
        model = compress.quantize(model, "static", calibration, dataset.x_val[:1])
    return model.eval()


def before(model: nn.Module, example: torch.Tensor) -> float:
    """The old measurement: the trainer's threads, one round, median of 50 after 10 warm-up."""
    torch.set_num_threads(runtime.thread_count(0))
    times = []
    with torch.inference_mode():
        for _ in range(10):
            model(example)
        for _ in range(50):
            start = time.perf_counter()
            model(example)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def after(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """The new measurement, as the trial runs it."""
    threads = runtime.latency_threads(0, runtime.cpu_quota(), runtime.usable_cpus())
    return cost.measure_latency(model, example, threads).metrics()


def build_all() -> tuple[list[nn.Module], torch.Tensor]:
    """Every configuration's model, and the batch-1 input they are timed on."""
    dataset = data.load(parse({}))
    return [build(c, dataset) for c in CONFIGS], dataset.x_val[:1]


def measure_all(method: str, offset: int, built: list[nn.Module], example: torch.Tensor) -> list[dict[str, Any]]:
    """Every configuration measured with ``method``, starting at ``offset`` (so trials differ)."""
    rows = []
    for step in range(len(CONFIGS)):
        index = (offset + step) % len(CONFIGS)
        if method == "before":
            rows.append({"index": index, "latency_ms": before(built[index], example)})
        else:
            rows.append({"index": index, **after(built[index], example)})
    return sorted(rows, key=lambda row: row["index"])


def isolated_rows(method: str, repeats: int) -> list[dict[str, Any]]:
    """``method``'s rows measured ``repeats`` times in this process, the smallest latency kept per configuration."""
    built, example = build_all()
    passes = [measure_all(method, 0, built, example) for _ in range(repeats)]
    return [min(rows, key=lambda r: r["latency_ms"]) for rows in zip(*passes, strict=True)]


def isolated(repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Each method's isolated rows, each in a fresh process of its own, as a trial measures.

    A fresh process matters: once torch has run with 2 threads, int8 forwards at 1 thread were
    measured up to 2x slower in the same process. The machine is shared with other work: the
    smallest of a few isolated values is the best estimate of the undisturbed latency.
    """
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            out = Path(tmp) / f"{method}.json"
            subprocess.run([sys.executable, __file__, "--isolated-worker", method, str(repeats), str(out)], check=True)
            rows[method] = json.loads(out.read_text())
    return rows


def worker(method: str, offset: int, out: Path) -> None:
    """A co-located trial: measure, write the results, then stay busy until killed."""
    built, example = build_all()
    rows = measure_all(method, offset, built, example)
    out.with_suffix(".tmp").write_text(json.dumps(rows))
    out.with_suffix(".tmp").rename(out)
    x = 0
    while True:  # keep loading the CPU like a trial still training
        x += 1


def colocated(method: str, trials: int, burners: int) -> list[list[dict[str, Any]]]:
    """Run ``trials`` measuring processes beside ``burners`` CPU burners; each one's rows."""
    burning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"trial{k}.json" for k in range(trials)]
        step = max(1, len(CONFIGS) // trials)
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", method, str(k * step), str(out)])
                 for k, out in enumerate(outs)]
        try:
            while not all(out.exists() for out in outs):
                if any(p.poll() not in (None, 0) for p in procs):
                    raise RuntimeError("a co-located trial failed")
                time.sleep(0.2)
            return [json.loads(out.read_text()) for out in outs]
        finally:
            for p in procs + burning:
                p.kill()
                p.wait()


def ratios(isolated: list[dict[str, Any]], together: list[list[dict[str, Any]]]) -> list[list[float]]:
    """Per configuration, co-located / isolated latency for each co-located trial."""
    return [[trial[i]["latency_ms"] / isolated[i]["latency_ms"] for trial in together] for i in range(len(CONFIGS))]


def share_within(values: list[float], bound: float) -> float:
    """Share of ratios r with 1/bound <= r <= bound."""
    return sum(1 / bound <= v <= bound for v in values) / len(values)


def trusted_summary(result: dict[str, Any]) -> str:
    """How well ``latency_noisy`` separates the values that are off from those that are not."""
    pairs = [(ratio, trial[i]["latency_noisy"]) for i, row in enumerate(result["ratios"]["after"])
             for ratio, trial in zip(row, result["colocated"]["after"], strict=True)]
    kept = [r for r, noisy in pairs if not noisy]
    off = [noisy for r, noisy in pairs if not 1 / 1.5 <= r <= 1.5]
    within = f"{share_within(kept, 1.5):.0%}" if kept else "-"
    return (f"after, values not flagged noisy: {len(kept)} pairs, within 1.5x: {within}, "
            f"error > 2x: {sum(not (0.5 <= r <= 2) for r in kept)}; "
            f"values off by more than 1.5x: {len(off)}, flagged noisy: {sum(off)}")


def report(result: dict[str, Any]) -> str:
    """The markdown table and the summary."""
    lines = ["| configuration | before: isolated ms | before: co-located / isolated | "
             "after: isolated ms | after: co-located / isolated | after: noisy flags |",
             "|---|---|---|---|---|---|"]
    for i, config in enumerate(CONFIGS):
        b, a = result["ratios"]["before"][i], result["ratios"]["after"][i]
        noisy = sum(trial[i]["latency_noisy"] for trial in result["colocated"]["after"])
        lines.append(f"| {label(config)} | {result['isolated']['before'][i]['latency_ms']:.3f} | "
                     + " ".join(f"{r:.2f}" for r in b)
                     + f" | {result['isolated']['after'][i]['latency_ms']:.3f} | " + " ".join(f"{r:.2f}" for r in a)
                     + f" | {noisy}/{len(a)} |")
    for method in METHODS:
        flat = [r for row in result["ratios"][method] for r in row]
        lines.append(f"\n{method}: {len(flat)} pairs, within 1.5x: {share_within(flat, 1.5):.0%}, "
                     f"error > 2x: {sum(not (0.5 <= r <= 2) for r in flat)}, "
                     f"median ratio {statistics.median(flat):.2f}, worst {max(max(flat), 1 / min(flat)):.1f}x")
    lines.append(trusted_summary(result))
    spreads = [t[i]["latency_ms_spread"] for t in result["colocated"]["after"] for i in range(len(CONFIGS))]
    alone = [row["latency_ms_spread"] for row in result["isolated"]["after"]]
    lines.append(f"\nafter: spread (IQR/median) median {statistics.median(alone):.2f} isolated, "
                 f"{statistics.median(spreads):.2f} co-located; "
                 f"noisy {sum(r['latency_noisy'] for r in result['isolated']['after'])}/{len(alone)} isolated, "
                 f"{sum(t[i]['latency_noisy'] for t in result['colocated']['after'] for i in range(len(CONFIGS)))}"
                 f"/{len(spreads)} co-located")
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in result["phase_seconds"].items())
    lines.append(f"\nload average before/after: {result['load_before']} / {result['load_after']}; "
                 f"{len(os.sched_getaffinity(0))} usable CPUs; torch {torch.__version__}; "
                 f"{result['seconds']:.0f} s ({phases})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="co-located trial processes")
    parser.add_argument("--burners", type=int, default=1, help="CPU-burning neighbour processes")
    parser.add_argument("--isolated-repeats", type=int, default=3, help="isolated passes; the smallest value is kept")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--isolated-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.isolated_worker:
        method, repeats, out = args.isolated_worker
        Path(out).write_text(json.dumps(isolated_rows(method, int(repeats))))
        return
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), Path(args.worker[2]))
        return
    started = time.perf_counter()
    result: dict[str, Any] = {"load_before": os.getloadavg()[:3], "isolated": {}, "colocated": {}, "ratios": {}}
    result["isolated"] = isolated(args.isolated_repeats)
    result["phase_seconds"] = {"isolated": time.perf_counter() - started}
    for method in METHODS:
        phase_start = time.perf_counter()
        result["colocated"][method] = colocated(method, args.trials, args.burners)
        result["phase_seconds"][f"co-located {method}"] = time.perf_counter() - phase_start
        result["ratios"][method] = ratios(result["isolated"][method], result["colocated"][method])
    result["load_after"] = os.getloadavg()[:3]
    result["load_before"] = [round(v, 2) for v in result["load_before"]]
    result["load_after"] = [round(v, 2) for v in result["load_after"]]
    result["seconds"] = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(report(result))


if __name__ == "__main__":
    main()
