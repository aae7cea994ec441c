"""The searchable network families: a configurable CNN and NAS-Bench-201 cell networks for images, an MLP for
tabular data."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kubenas_trial import cells

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "hardswish": nn.Hardswish,
    "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh,
}

# The keys of a trainer config that determine the architecture (saved with checkpoints).
ARCHITECTURE_KEYS = (
    "model", "stages", "blocks", "width", "width_mult", "kernel_size", "expansion", "activation", "residual",
    "se", "share_weights", "batch_norm", "dropout", "hidden_layers", "hidden_units", "cell",
)


def _act(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def _norm(channels: int, enabled: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if enabled else nn.Identity()


def stage_channels(config: dict[str, Any]) -> list[int]:
    """Channels of each CNN stage: ``width × width_mult``, doubled every stage, at least 1."""
    return [max(1, round(config["width"] * config["width_mult"] * 2**s)) for s in range(config["stages"])]


def se_hidden(channels: int) -> int:
    """Channels of a squeeze-and-excite bottleneck over ``channels``."""
    return max(1, channels // 4)


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, bottleneck, sigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = se_hidden(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class Block(nn.Module):
    """A conv block: two k×k convolutions (expansion 1) or an inverted bottleneck (expansion > 1).

    Optional squeeze-excite, and a residual connection when input and output shapes match.
    """

    def __init__(
        self, c_in: int, c_out: int, stride: int, kernel: int, expansion: int, activation: str,
        se: bool, batch_norm: bool, residual: bool,
    ) -> None:
        super().__init__()
        pad = kernel // 2
        bias = not batch_norm
        layers: list[nn.Module]
        if expansion == 1:
            layers = [
                nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=bias), _norm(c_out, batch_norm), _act(activation),
                nn.Conv2d(c_out, c_out, kernel, 1, pad, bias=bias), _norm(c_out, batch_norm),
            ]
            c_mid = c_out
        else:
            c_mid = c_in * expansion
            layers = [
                nn.Conv2d(c_in, c_mid, 1, bias=bias), _norm(c_mid, batch_norm), _act(activation),
                nn.Conv2d(c_mid, c_mid, kernel, stride, pad, groups=c_mid, bias=bias), _norm(c_mid, batch_norm),
                _act(activation),
            ]
        self.body = nn.Sequential(*layers)
        self.se = SqueezeExcite(c_mid) if se else nn.Identity()
        self.project = (
            nn.Sequential(nn.Conv2d(c_mid, c_out, 1, bias=bias), _norm(c_out, batch_norm))
            if expansion > 1 else nn.Identity()
        )
        self.residual = residual and stride == 1 and c_in == c_out
        self.out_act = _act(activation) if expansion == 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.body(x)))
        if self.residual:
            out = out + x
        return self.out_act(out)


class CNN(nn.Module):
    """A staged CNN: stem, ``stages`` × ``blocks`` blocks (stride 2 at each new stage), pooled linear head.

    Args:
        in_channels: input image channels.
        num_classes: output classes.
        config: the trainer parameters (see :data:`ARCHITECTURE_KEYS`).
    """

    def __init__(self, in_channels: int, num_classes: int, config: dict[str, Any]) -> None:
        super().__init__()
        self.channels = stage_channels(config)
        kernel, act, bn = config["kernel_size"], config["activation"], config["batch_norm"]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, self.channels[0], kernel, 1, kernel // 2, bias=not bn),
            _norm(self.channels[0], bn), _act(act),
        )
        stages: list[nn.Module] = []
        c_in = self.channels[0]
        for s, c_out in enumerate(self.channels):
            blocks: list[nn.Module] = []
            shared: nn.Module | None = None
            for b in range(config["blocks"]):
                stride = 2 if (s > 0 and b == 0) else 1
                if b >= 1 and config["share_weights"] and shared is not None:
                    blocks.append(shared)  # the same module object: its weights are shared
                    continue
                block = Block(c_in, c_out, stride, kernel, config["expansion"], act, config["se"], bn,
                              config["residual"])
                if b >= 1:
                    shared = block
                blocks.append(block)
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(config["dropout"])
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.flatten(self.pool(self.stages(self.stem(x))))))


class MLP(nn.Module):
    """A multilayer perceptron: ``hidden_layers`` × (Linear, BatchNorm, activation, dropout), then a Linear head.

    Args:
        in_features: input features (images are flattened).
        num_classes: output classes.
        config: the trainer parameters (see :data:`ARCHITECTURE_KEYS`).
    """

    def __init__(self, in_features: int, num_classes: int, config: dict[str, Any]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(config["hidden_layers"]):
            layers += [nn.Linear(width, config["hidden_units"])]
            if config["batch_norm"]:
                layers.append(nn.BatchNorm1d(config["hidden_units"]))
            layers.append(_act(config["activation"]))
            if config["dropout"] > 0:
                layers.append(nn.Dropout(config["dropout"]))
            width = config["hidden_units"]
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def model_kind(config: dict[str, Any], input_shape: tuple[int, ...]) -> str:
    """'cnn', 'mlp' or 'cell': what ``model: auto`` resolves to for these parameters and this input."""
    if config["model"] != "auto":
        return config["model"]
    if config["cell"] is not None:
        return "cell"
    return "cnn" if len(input_shape) == 3 else "mlp"


def build_model(config: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network the parameters describe, for inputs of ``input_shape`` (without the batch dimension)."""
    kind = model_kind(config, input_shape)
    if kind == "cell":
        return cells.build(config, input_shape, num_classes)
    if kind == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"model 'cnn' needs image data (C, H, W); this dataset has shape {list(input_shape)}")
        return CNN(input_shape[0], num_classes, config)
    features = 1
    for dim in input_shape:
        features *= dim
    return MLP(features, num_classes, config)


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (shared weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def describe(
    model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> dict[str, Any]:
    """The derived architecture for architecture.json: kind, channels, blocks and per-layer shapes."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            layers.append({"name": name, "type": "conv", "in": module.in_channels, "out": module.out_channels,
                           "kernel": module.kernel_size[0], "stride": module.stride[0], "groups": module.groups})
        elif isinstance(module, nn.Linear):
            layers.append({"name": name, "type": "linear", "in": module.in_features, "out": module.out_features})
    info: dict[str, Any] = {
        "kind": model_kind(config, input_shape),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "params": count_parameters(model),
        "layers": layers,
    }
    if isinstance(model, CNN | cells.CellNetwork):
        info["stage_channels"] = model.channels
        info["blocks_per_stage"] = config["blocks"]
    if isinstance(model, cells.CellNetwork):
        info["cell"] = config["cell"]
    return info


def resize_to(model: nn.Module, state_dict: dict[str, Any]) -> nn.Module:
    """Resize conv, linear and batch-norm layers to the shapes in ``state_dict``, in place.

    A structurally pruned checkpoint has fewer channels than its parameters describe; this
    makes the freshly built network match it before ``load_state_dict``.
    """
    for name, module in list(model.named_modules()):
        weight = state_dict.get(f"{name}.weight")
        new: nn.Module | None = None
        if isinstance(module, nn.Conv2d) and weight is not None and weight.shape != module.weight.shape:
            out = weight.shape[0]
            depthwise = module.groups > 1
            # Conv2d's own sizes are pairs, but torch annotates them as _ConvNd's tuple[int, ...].
            new = nn.Conv2d(out if depthwise else weight.shape[1], out,
                            module.kernel_size, module.stride, module.padding, module.dilation,  # type: ignore[arg-type]
                            groups=out if depthwise else 1, bias=module.bias is not None)
        elif isinstance(module, nn.Linear) and weight is not None and weight.shape != module.weight.shape:
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            stats = state_dict.get(f"{name}.running_mean", weight)
            if stats is not None and stats.shape[0] != module.num_features:
                new = type(module)(stats.shape[0], eps=module.eps, momentum=module.momentum, affine=module.affine)
        if new is not None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new.train(module.training))
    return model
