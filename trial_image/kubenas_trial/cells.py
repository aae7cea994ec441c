"""The NAS-Bench-201 cell network: the cell's operations, a discrete cell, and the macro skeleton.

The skeleton follows NAS-Bench-201, scaled by the trainer parameters: a 3×3 stem with
``width`` channels, then ``stages`` stages of ``blocks`` cells each; every stage after the
first starts with a residual reduction block that halves the resolution and doubles the
channels; then batch norm, ReLU, global pooling and a linear classifier. The weight-sharing
search network (:mod:`kubenas_trial.gradient_nas`) uses the same skeleton with searchable cells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from kubenas_trial.nb201 import EDGES, NODES, parse_arch

INCOMING: tuple[tuple[tuple[int, int], ...], ...] = tuple(
    tuple((edge, source) for edge, (target, source) in enumerate(EDGES) if target == node)
    for node in range(1, NODES)
)
"""For nodes 1..3: the (edge index, source node) pairs that feed it."""


class Zero(nn.Module):
    """The ``none`` operation: zeros of the input's shape (the edge contributes nothing)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out, affine=affine)
    )


def make_op(name: str, channels: int, affine: bool = True) -> nn.Module:
    """One NAS-Bench-201 operation on ``channels`` channels (stride 1, shape-preserving).

    ``affine=False`` gives batch norms without learnable scale and shift, as in the
    weight-sharing search network, where they would rescale the operations' outputs and blur
    what the architecture weights compare.
    """
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return relu_conv_bn(channels, channels, 1, affine=affine)
    if name == "nor_conv_3x3":
        return relu_conv_bn(channels, channels, 3, affine=affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}")


class Cell(nn.Module):
    """A discrete cell: node j is the sum of each edge's operation applied to its source node."""

    def __init__(self, channels: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.ops = tuple(ops)
        self.edges = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for incoming in INCOMING:
            nodes.append(sum(self.edges[edge](nodes[source]) for edge, source in incoming))
        return nodes[-1]


class Reduction(nn.Module):
    """NAS-Bench-201's residual reduction block: stride-2 ReLU-conv-BN pair plus a strided 1×1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(relu_conv_bn(c_in, c_out, 3, 2), relu_conv_bn(c_out, c_out, 3, 1))
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, 2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class CellNetwork(nn.Module):
    """Stem, ``stages`` × ``cells_per_stage`` cells with a reduction between stages, pooled linear head.

    ``forward(x, *cell_args)`` hands ``cell_args`` to every cell (the search network's
    architecture sample); a discrete network takes none.

    Args:
        in_channels: input image channels.
        num_classes: output classes.
        width: channels of the first stage (doubled at every reduction).
        stages: number of stages.
        cells_per_stage: cells in each stage.
        make_cell: builds one cell for a channel count.
        dropout: dropout before the classifier.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int, stages: int, cells_per_stage: int,
        make_cell: Callable[[int], nn.Module], dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.channels = [width * 2**s for s in range(stages)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))
        layers: list[nn.Module] = []
        c_prev = width
        for c in self.channels:
            if c != c_prev:
                layers.append(Reduction(c_prev, c))
            layers += [make_cell(c) for _ in range(cells_per_stage)]
            c_prev = c
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(c_prev), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(c_prev, num_classes),
        )

    def forward(self, x: torch.Tensor, *cell_args: Any) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x) if isinstance(layer, Reduction) else layer(x, *cell_args)
        return self.head(x)


def build(config: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> CellNetwork:
    """The discrete network of the architecture string ``config['cell']``."""
    if len(input_shape) != 3:
        raise ValueError(f"model 'cell' needs image data (C, H, W); this dataset has shape {list(input_shape)}")
    ops = parse_arch(config["cell"])
    return CellNetwork(input_shape[0], num_classes, stage_width(config), config["stages"], config["blocks"],
                       lambda c: Cell(c, ops), config["dropout"])


def stage_width(config: dict[str, Any]) -> int:
    """Channels of the first stage: ``width`` × ``width_mult``, as for the CNN family."""
    return max(1, round(config["width"] * config["width_mult"]))
