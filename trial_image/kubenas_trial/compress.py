"""Compression as search dimensions: magnitude / structured pruning and int8 post-training quantization."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from kubenas_trial.models import MLP, Block, SqueezeExcite


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def apply_pruning(model: nn.Module, method: str, amount: float) -> int:
    """Prune ``model`` in place; returns the number of layers pruned.

    ``unstructured``: global magnitude (L1) pruning of ``amount`` of all conv and linear
    weights together. The masks stay attached (call :func:`make_permanent` after fine-tuning),
    so fine-tuning keeps pruned weights at zero.

    ``structured``: removes, in every block, the ``amount`` of its internal channels whose
    producing filters have the smallest L2 norm (the first convolution's outputs of a plain
    block, the expanded channels of an inverted bottleneck, an MLP's hidden units). The
    residual stream and the classes are kept, so the network stays valid, and really gets
    smaller and faster: fewer parameters, FLOPs and latency. New layers are created, so
    build optimizers after this call.
    """
    if method == "unstructured":
        targets = _prunable(model)
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
        return len(targets)
    if method == "structured":
        return remove_channels(model, amount)
    raise ValueError(f"unknown pruning method {method!r}")


def _keep(layer: nn.Module, amount: float) -> torch.Tensor:
    """Sorted indices of ``layer``'s output channels to keep: the largest filter L2 norms, at least one."""
    assert isinstance(layer, nn.Conv2d | nn.Linear)  # a container's item is typed as any Module
    norms = layer.weight.detach().flatten(1).norm(dim=1)
    keep = max(1, round(len(norms) * (1.0 - amount)))
    return norms.topk(keep).indices.sort().values


def _slice_conv(conv: nn.Module, out_idx: torch.Tensor | None = None,
                in_idx: torch.Tensor | None = None) -> nn.Conv2d:
    assert isinstance(conv, nn.Conv2d)  # a container's item is typed as any Module
    depthwise = conv.groups > 1
    if depthwise and conv.groups != conv.in_channels:
        raise ValueError("only plain and depthwise convolutions can be sliced")
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if out_idx is not None:
        weight = weight[out_idx]
        bias = bias[out_idx] if bias is not None else None
    if in_idx is not None and not depthwise:
        weight = weight[:, in_idx]
    out_c = weight.shape[0]
    in_c = out_c if depthwise else weight.shape[1]
    # Conv2d's own sizes are pairs, but torch annotates them as _ConvNd's tuple[int, ...].
    new = nn.Conv2d(in_c, out_c, conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
                    groups=out_c if depthwise else 1, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None and new.bias is not None:
            new.bias.copy_(bias)
    return new


def _slice_linear(linear: nn.Module, out_idx: torch.Tensor | None = None,
                  in_idx: torch.Tensor | None = None) -> nn.Linear:
    assert isinstance(linear, nn.Linear)  # a container's item is typed as any Module
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if out_idx is not None:
        weight = weight[out_idx]
        bias = bias[out_idx] if bias is not None else None
    if in_idx is not None:
        weight = weight[:, in_idx]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _slice_norm(norm: nn.Module, idx: torch.Tensor) -> nn.Module:
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return norm  # Identity when batch_norm is off
    new = type(norm)(len(idx), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     track_running_stats=norm.track_running_stats, device=idx.device)
    # Per channel: weight and bias (if affine), running mean and variance (if tracked); the batch count is a scalar.
    new.load_state_dict({k: v if v.dim() == 0 else v[idx] for k, v in norm.state_dict().items()})
    return new.train(norm.training)


def _prune_block(block: Block, amount: float) -> None:
    body = block.body
    if isinstance(block.project, nn.Identity):  # plain block: conv, norm, act, conv, norm
        idx = _keep(body[0], amount)
        body[0] = _slice_conv(body[0], out_idx=idx)
        body[1] = _slice_norm(body[1], idx)
        body[3] = _slice_conv(body[3], in_idx=idx)
        return
    # Inverted bottleneck: expand, norm, act, depthwise, norm, act; [SE]; project.
    idx = _keep(body[0], amount)
    body[0] = _slice_conv(body[0], out_idx=idx)
    body[1] = _slice_norm(body[1], idx)
    body[3] = _slice_conv(body[3], out_idx=idx)
    body[4] = _slice_norm(body[4], idx)
    if isinstance(block.se, SqueezeExcite):
        block.se.reduce = _slice_conv(block.se.reduce, in_idx=idx)
        block.se.expand = _slice_conv(block.se.expand, out_idx=idx)
    block.project[0] = _slice_conv(block.project[0], in_idx=idx)


def _prune_mlp(mlp: MLP, amount: float) -> int:
    layers = mlp.net
    positions = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
    for here, after in itertools.pairwise(positions):  # every hidden layer; never the classifier's outputs
        idx = _keep(layers[here], amount)
        layers[here] = _slice_linear(layers[here], out_idx=idx)
        if isinstance(layers[here + 1], nn.BatchNorm1d):
            layers[here + 1] = _slice_norm(layers[here + 1], idx)
        layers[after] = _slice_linear(layers[after], in_idx=idx)
    return len(positions) - 1


def remove_channels(model: nn.Module, amount: float) -> int:
    """Structured pruning by surgery (see :func:`apply_pruning`); returns the number of blocks or layers pruned."""
    if isinstance(model, MLP):
        return _prune_mlp(model, amount)
    blocks = [m for m in model.modules() if isinstance(m, Block)]  # shared blocks appear once
    for block in blocks:
        _prune_block(block, amount)
    return len(blocks)


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
    float_model = model.to("cpu", memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]  # Module.to takes memory_format; torch's overloads leave it out
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
