"""Cost of a trained model: parameters, FLOPs, latency and serialized size."""

from __future__ import annotations

import io
import statistics
import time

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


def latency_ms(model: nn.Module, example: torch.Tensor, repeats: int = 50, warmup: int = 10) -> float:
    """Median wall time in ms of a forward pass on ``example`` (batch 1) after ``warmup`` untimed passes."""
    model.eval()
    sync = torch.cuda.synchronize if example.device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(example)
        sync()
        for _ in range(repeats):
            start = time.perf_counter()
            model(example)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def size_bytes(model: nn.Module) -> int:
    """Bytes of the serialized state dict (what model.pt holds), quantized or not."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
