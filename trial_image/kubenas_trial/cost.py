"""Cost of a trained model: parameters, FLOPs, latency and serialized size."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters), shared weights counted once."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in params)
    return total, nonzero


def flop_counts(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(dense, sparse) floating-point operations of one forward pass on ``example`` (a multiply-add counts 2).

    Sparse FLOPs scale each convolution's and linear layer's FLOPs by the share of its weights
    that are nonzero: what pruning would save with sparse kernels.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    model.train(was_training)
    dense = int(counter.get_total_flops())
    per_module = counter.get_flop_counts()
    prefix = type(model).__name__
    saved = 0.0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        counts = per_module.get(f"{prefix}.{name}" if name else prefix)
        if counts:
            weight = module.weight.detach()
            density = int(torch.count_nonzero(weight)) / weight.numel()
            saved += sum(counts.values()) * (1.0 - density)
    return dense, round(dense - saved)


def flops(model: nn.Module, example: torch.Tensor) -> int:
    """Dense floating-point operations of one forward pass on ``example`` (a multiply-add counts 2)."""
    return flop_counts(model, example)[0]


SPREAD_THRESHOLD = 0.25
"""A round whose IQR/median exceeds this was disturbed (a quiet CPU stays well under 0.1)."""
MAX_ROUNDS = 3
"""Rounds of timed runs at most: the first, then up to two re-measurements while disturbed."""


@dataclass(frozen=True)
class LatencyRound:
    """One round of timed forwards: their median (ms) and spread (interquartile range / median)."""

    median_ms: float
    spread: float


@dataclass(frozen=True)
class Latency:
    """The kept round of a latency measurement and how it was obtained."""

    median_ms: float
    spread: float
    remeasured: int
    noisy: bool
    threads: int

    def metrics(self) -> dict[str, float]:
        """The trial's final metrics for this measurement (see docs/trial.md)."""
        return {"latency_ms": self.median_ms, "latency_ms_spread": self.spread,
                "latency_remeasured": self.remeasured, "latency_noisy": int(self.noisy),
                "latency_threads": self.threads}


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation between order statistics)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(times_ms: Sequence[float]) -> LatencyRound:
    """Median and spread (IQR / median, 0 for a zero median) of one round's timings."""
    median = quantile(times_ms, 0.5)
    iqr = quantile(times_ms, 0.75) - quantile(times_ms, 0.25)
    return LatencyRound(median, iqr / median if median > 0 else 0.0)


def is_noisy(measured: LatencyRound, threshold: float = SPREAD_THRESHOLD) -> bool:
    """Whether a round's spread shows interference (other processes took the CPU mid-run)."""
    return measured.spread > threshold


def settle(measure_round: Callable[[], LatencyRound], threads: int, max_rounds: int = MAX_ROUNDS,
           threshold: float = SPREAD_THRESHOLD) -> Latency:
    """Measure rounds until one is quiet or ``max_rounds`` ran; keep the round with the smallest spread."""
    rounds = [measure_round()]
    while is_noisy(rounds[-1], threshold) and len(rounds) < max_rounds:
        rounds.append(measure_round())
    kept = min(rounds, key=lambda r: r.spread)
    return Latency(kept.median_ms, kept.spread, len(rounds) - 1, is_noisy(kept, threshold), threads)


def forward_timer(model: nn.Module, example: torch.Tensor, threads: int) -> Callable[[], float]:
    """A function running one forward of ``model`` on ``example`` and returning its time in ms.

    On CUDA: the time between two CUDA events around the forward, read after synchronising
    (the kernels' time, not the launch time). On the CPU with one thread, torch computes in
    the calling thread, so its CPU time is the forward's time without the moments another
    process held the CPU (on an idle CPU the two are equal). With more threads: wall time.
    """
    if example.device.type == "cuda":
        def cuda_forward() -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(example)
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        return cuda_forward
    clock = time.thread_time_ns if example.device.type == "cpu" and threads == 1 else time.perf_counter_ns

    def forward() -> float:
        start = clock()
        model(example)
        return (clock() - start) / 1e6
    return forward


def timed_round(forward: Callable[[], float], repeats: int, warmup: int) -> LatencyRound:
    """``warmup`` untimed forwards, then the summary of ``repeats`` timed ones."""
    for _ in range(warmup):
        forward()
    return summarize([forward() for _ in range(repeats)])


def measure_latency(model: nn.Module, example: torch.Tensor, threads: int, repeats: int = 50, warmup: int = 10,
                    max_rounds: int = MAX_ROUNDS, threshold: float = SPREAD_THRESHOLD) -> Latency:
    """Latency of a forward pass on ``example`` with torch using ``threads`` CPU threads (restored after).

    Each round runs ``warmup`` untimed then ``repeats`` timed forwards; a disturbed round is
    measured again (see ``settle``).
    """
    model.eval()
    forward = forward_timer(model, example, threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            if example.device.type == "cuda":
                torch.cuda.synchronize(example.device)
            return settle(lambda: timed_round(forward, repeats, warmup), threads, max_rounds, threshold)
    finally:
        torch.set_num_threads(previous)


def size_bytes(model: nn.Module) -> int:
    """Bytes of the serialized state dict (what model.pt holds), quantized or not."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
