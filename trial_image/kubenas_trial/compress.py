"""Compression as search dimensions: magnitude / structured pruning and int8 post-training quantization."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune


def _prunable(model: nn.Module, include_head: bool) -> list[tuple[nn.Module, str]]:
    modules = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not include_head and modules and isinstance(modules[-1], nn.Linear):
        modules = modules[:-1]  # the classifier's output units are the classes: never remove them
    return [(m, "weight") for m in modules]


def apply_pruning(model: nn.Module, method: str, amount: float) -> int:
    """Prune ``model`` in place (masks stay attached, so fine-tuning keeps pruned weights at zero).

    ``unstructured``: global magnitude (L1) pruning of ``amount`` of all conv and linear weights.
    ``structured``: per layer, the ``amount`` of output channels with the smallest L2 norm
    (conv filters, hidden linear units; not the classifier).

    Returns the number of pruned tensors.
    """
    if method == "unstructured":
        targets = _prunable(model, include_head=True)
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    elif method == "structured":
        targets = _prunable(model, include_head=False)
        for module, name in targets:
            prune.ln_structured(module, name, amount=amount, n=2, dim=0)
    else:
        raise ValueError(f"unknown pruning method {method!r}")
    return len(targets)


def make_permanent(model: nn.Module) -> None:
    """Fold pruning masks into the weights and drop the re-parametrisation hooks."""
    for module in model.modules():
        if prune.is_pruned(module):
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    prune.remove(module, hook._tensor_name)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], max_batches: int = 50) -> None:
    """Re-estimate BatchNorm running statistics on training batches.

    Pruning changes every downstream activation distribution; stale running statistics can
    push a pruned network to chance accuracy before fine-tuning has seen enough batches.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for i, xb in enumerate(batches):
        if i >= max_batches:
            break
        model(xb)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def quantization_kind(requested: str, is_cnn: bool) -> str | None:
    """'dynamic', 'static' or None for the ``quantize`` parameter (``int8``: static for CNNs, dynamic otherwise)."""
    if requested == "none":
        return None
    if requested == "int8":
        return "static" if is_cnn else "dynamic"
    return requested


def _engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack"):
        if engine in engines:
            return engine
    raise RuntimeError(f"this torch build has no int8 quantization engine (has {engines})")


def quantize(model: nn.Module, kind: str, calibration: Iterable[torch.Tensor], example: torch.Tensor) -> nn.Module:
    """An int8 copy of ``model`` for CPU inference.

    ``dynamic``: Linear weights in int8, activations quantized on the fly (no calibration).
    ``static``: FX graph mode: conv/linear (+BN, ReLU fused) weights and activations in int8,
    activation ranges observed on the ``calibration`` batches.
    """
    # torch.ao.quantization is deprecated in favour of torchao but still works in torch 2.13;
    # torchao is not a dependency of this image.
    from torch.ao import quantization as tq
    from torch.ao.quantization import quantize_fx

    engine = _engine()
    torch.backends.quantized.engine = engine
    float_model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        if kind == "dynamic":
            return tq.quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
        if kind != "static":
            raise ValueError(f"unknown quantization {kind!r}")
        mapping = tq.get_default_qconfig_mapping(engine)
        prepared = quantize_fx.prepare_fx(float_model, mapping, (example.cpu(),))
        with torch.no_grad():
            for batch in calibration:
                prepared(batch.cpu())
        return quantize_fx.convert_fx(prepared)


def calibration_batches(x: torch.Tensor, batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Up to ``batches`` random training batches for static-quantization calibration."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)[: batches * batch_size]
    return [x.cpu()[order[i : i + batch_size]] for i in range(0, len(order), batch_size)]


def summary(config: dict[str, Any]) -> dict[str, Any]:
    """The compression settings in effect, for architecture.json."""
    return {
        "prune": config["prune"], "prune_amount": config["prune_amount"] if config["prune"] != "none" else 0.0,
        "quantize": config["quantize"], "teacher": config["teacher"],
    }
