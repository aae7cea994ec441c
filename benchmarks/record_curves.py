"""Record full learning curves of real trainer runs on Fashion-MNIST, for the early-stopping replay.

Each run is the built-in trainer (``python -m kubenas_trial``) as a subprocess, with parameters drawn
at random (seeded) from a CNN space like the examples'. The per-epoch validation accuracy comes from
the run's ``metrics.json`` artifact (its ``history``); the final and test accuracy from its metrics.
One JSON line per run is appended to the output (in completion order), so an interrupted recording
resumes where it stopped; ``--deadline`` starts no run after that time. Each run is small on purpose
(1,200 training samples, 12 epochs, one thread: ~30 s on a shared core), so 50 fit in a quarter hour.

    nice -n 5 .venv/bin/python benchmarks/record_curves.py --runs 60 --jobs 2 --deadline "$(date -d '+14 min' +%s)"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).parent / "data" / "fashion_mnist_curves.jsonl"

# Fixed for every run: the data budget and the cost measurement we do not need.
FIXED: dict[str, Any] = {
    "dataset": "fashion-mnist",
    "max_train_samples": 1200,
    "val_fraction": 0.03,
    "epochs": 12,
    "num_threads": 1,
    "latency_repeats": 1,
    "latency_warmup": 0,
}


def sample_parameters(rng: random.Random) -> dict[str, Any]:
    """One random point of the recorded CNN space (architecture and optimisation)."""
    params: dict[str, Any] = {
        "stages": rng.choice([2, 3]),
        "blocks": rng.randint(1, 2),
        "width": round(math.exp(rng.uniform(math.log(8), math.log(16)))),
        "kernel_size": rng.choice([3, 5]),
        "expansion": rng.choice([1, 1, 2]),
        "activation": rng.choice(["relu", "gelu", "silu", "hardswish"]),
        "optimizer": rng.choice(["adamw", "adamw", "sgd"]),
        "batch_size": rng.choice([64, 128]),
        "dropout": round(rng.uniform(0.0, 0.3), 3),
        "weight_decay": round(10 ** rng.uniform(-5, -2), 7),
    }
    low, high = (1e-3, 3e-2) if params["optimizer"] == "adamw" else (3e-3, 0.3)
    params["lr"] = round(math.exp(rng.uniform(math.log(low), math.log(high))), 6)
    params["seed"] = rng.randrange(10_000)
    return params


def run_one(index: int, params: dict[str, Any], python: str) -> dict[str, Any]:
    """Train once; return the recorded line (or an ``error`` line when the trainer failed)."""
    with tempfile.TemporaryDirectory(prefix="kubenas-curve-") as tmp:
        env = {
            **os.environ,
            "KUBENAS_PARAMETERS": json.dumps({**FIXED, **params}),
            "KUBENAS_OUTPUT_DIR": tmp,
            "KUBENAS_TERMINATION_LOG": str(Path(tmp) / "termination-log"),
            "KUBENAS_METRICS_PORT": "0",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        start = time.monotonic()
        proc = subprocess.run([python, "-m", "kubenas_trial"], env=env, capture_output=True, text=True, check=False)
        seconds = round(time.monotonic() - start, 1)
        line: dict[str, Any] = {"index": index, "params": params, "fixed": FIXED, "seconds": seconds}
        metrics_file = Path(tmp) / "metrics.json"
        if proc.returncode != 0 or not metrics_file.exists():
            line["error"] = f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
            return line
        record = json.loads(metrics_file.read_text())
        history = sorted(record["history"], key=lambda h: h["epoch"])
        final = record["metrics"]
        line.update(
            curve=[round(float(h["accuracy"]), 5) for h in history],
            first_epoch=int(history[0]["epoch"]),
            final_accuracy=round(float(final["accuracy"]), 5),
            test_accuracy=round(float(final["test_accuracy"]), 5),
            params_count=int(final["params"]),
        )
        return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2, help="trainer processes at once (1 thread each)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--deadline", type=float, default=0.0, help="unix time after which no run starts")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    plan = [(i, sample_parameters(rng)) for i in range(args.runs)]
    done: set[int] = set()
    if args.out.exists():
        done = {json.loads(x)["index"] for x in args.out.read_text().splitlines() if x.strip()}
    todo = [(i, p) for i, p in plan if i not in done]
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def job(item: tuple[int, dict[str, Any]]) -> None:
        if args.deadline and time.time() > args.deadline:
            return
        line = run_one(item[0], item[1], sys.executable)
        with args.out.open("a") as f:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
        status = line.get("error") or f"final {line['final_accuracy']:.4f} in {line['seconds']}s"
        print(f"run {item[0]}: {status}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(job, todo))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
