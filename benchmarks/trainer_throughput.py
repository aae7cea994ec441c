"""Trainer throughput: samples/s of kubenas_trial's training loop vs a plain hand-written PyTorch loop.

Both train the same architecture (same initial weights) on the same in-memory data with the
same optimizer and batch size; only the loop differs. The trainer's loop adds its learning-rate
schedule, loss accounting, AMP/scaler and augmentation hooks, so the ratio is the overhead a
user pays for them. Both are timed by the same clock around the whole call: on CPU with one
thread, the thread's CPU time (robust to other processes on shared cores); otherwise wall time
(with CUDA synchronisation). Runs are interleaved and the median is kept. The device is printed
with the table so GPU rows can be added from a GPU node.

    python benchmarks/trainer_throughput.py [--rounds 5] [--epochs 2] [--device auto] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from kubenas_trial import runtime
from kubenas_trial.config import parse
from kubenas_trial.data import Dataset, load
from kubenas_trial.models import build_model, count_parameters
from kubenas_trial.train import Trainer
from torch import nn

CASES: list[tuple[str, dict[str, Any]]] = [
    ("digits CNN (default)", {}),
    ("digits CNN w32 b256", {"width": 32, "batch_size": 256}),
    ("digits CNN MBConv+SE", {"expansion": 4, "se": True, "blocks": 2}),
    ("fashion-mnist MLP 256x2", {"dataset": "fashion-mnist", "model": "mlp", "hidden_units": 256,
                                 "batch_size": 128, "max_train_samples": 6000}),
]


def plain_loop(model: nn.Module, data: Dataset, config: dict[str, Any], device: torch.device, epochs: int) -> int:
    """The loop anyone would write by hand; returns the samples trained on."""
    x, y = data.x_train.to(device), data.y_train.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    batch = config["batch_size"]
    model.train()
    seen = 0
    for _ in range(epochs):
        order = torch.randperm(len(y), device=device)
        for i in range(0, len(y) - 1, batch):
            idx = order[i : i + batch]
            if len(idx) < 2:
                continue
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(idx)
    return seen


def trainer_loop(model: nn.Module, data: Dataset, config: dict[str, Any], device: torch.device, epochs: int) -> int:
    """kubenas_trial's Trainer.fit (its per-epoch validation runs on 2 samples here)."""
    return Trainer(model, data, config, device).fit(epochs).samples


def timed(loop: Any, *args: Any) -> float:
    """samples/s of ``loop(*args)``."""
    device = args[3]
    cpu_clock = device.type == "cpu" and torch.get_num_threads() == 1
    clock = time.thread_time if cpu_clock else time.perf_counter
    start = clock()
    samples = loop(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return samples / (clock() - start)


def measure(name: str, params: dict[str, Any], device: torch.device, rounds: int, epochs: int) -> dict[str, Any]:
    config = parse({**params, "device": device.type, "seed": 0})
    data = load(config)
    # The trainer validates every epoch; the plain loop does not: make that negligible.
    data.x_val, data.y_val = data.x_val[:2], data.y_val[:2]
    torch.manual_seed(0)
    initial = build_model(config, data.input_shape, data.num_classes)
    state = {k: v.clone() for k, v in initial.state_dict().items()}
    rates: dict[str, list[float]] = {"trainer": [], "plain": []}
    for r in range(rounds + 1):
        for label, loop in (("trainer", trainer_loop), ("plain", plain_loop))[:: 1 if r % 2 else -1]:
            model = build_model(config, data.input_shape, data.num_classes)
            model.load_state_dict(state)
            rate = timed(loop, model.to(device), data, config, device, epochs)
            if r > 0:  # round 0 warms up allocators and caches
                rates[label].append(rate)
    trainer, plain = statistics.median(rates["trainer"]), statistics.median(rates["plain"])
    return {"case": name, "params": count_parameters(initial), "batch": config["batch_size"],
            "trainer": trainer, "plain": plain, "ratio": trainer / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: the trainer's own choice)")
    args = parser.parse_args()
    torch.set_num_threads(runtime.thread_count(args.threads))
    device = runtime.select_device(args.device)
    clock = "thread CPU time" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall time"
    print(f"device: {runtime.device_name(device)}; torch {torch.__version__}; clock: {clock}; "
          f"{args.rounds} interleaved rounds × {args.epochs} epochs, median\n")
    print("| case | params | batch | trainer samples/s | plain loop samples/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, params in CASES:
        row = measure(name, params, device, args.rounds, args.epochs)
        print(f"| {row['case']} | {row['params']:,} | {row['batch']} | {row['trainer']:,.0f} | "
              f"{row['plain']:,.0f} | {row['ratio']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
