"""The CNN and MLP families build what the parameters describe."""

from __future__ import annotations

import pytest
import torch
from kubenas_trial.config import parse
from kubenas_trial.models import CNN, MLP, build_model, count_parameters, describe
from torch import nn


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"stages": 3, "blocks": 2, "expansion": 4, "se": True, "activation": "hardswish", "kernel_size": 5},
        {"residual": False, "batch_norm": False, "dropout": 0.3, "activation": "gelu", "width_mult": 0.5},
        {"blocks": 3, "share_weights": True, "activation": "silu"},
    ],
)
def test_cnn_variants_produce_logits(params: dict) -> None:
    model = build_model(parse(params), (3, 16, 16), 7)
    assert isinstance(model, CNN)
    assert model(torch.randn(4, 3, 16, 16)).shape == (4, 7)


def test_cnn_stages_double_channels_and_downsample() -> None:
    model = build_model(parse({"stages": 3, "width": 8, "width_mult": 1.5}), (1, 8, 8), 10)
    assert model.channels == [12, 24, 48]
    strides = [c.stride[0] for c in _convs(model)]
    assert strides.count(2) == 2  # one downsampling block per stage after the first


def test_expansion_builds_depthwise_bottlenecks() -> None:
    model = build_model(parse({"expansion": 4, "width": 8, "stages": 1}), (1, 8, 8), 10)
    depthwise = [c for c in _convs(model) if c.groups > 1]
    assert depthwise and all(c.groups == c.in_channels == 32 for c in depthwise)


def test_weight_sharing_reuses_blocks_within_a_stage() -> None:
    base = {"stages": 1, "blocks": 4, "width": 8}
    separate = build_model(parse(base), (1, 8, 8), 10)
    shared = build_model(parse({**base, "share_weights": True}), (1, 8, 8), 10)
    block_params = count_parameters(separate.stages[0][1])
    assert count_parameters(separate) - count_parameters(shared) == 2 * block_params
    assert shared.stages[0][1] is shared.stages[0][3]


def test_squeeze_excite_and_kernel_change_parameters() -> None:
    plain = count_parameters(build_model(parse({}), (1, 8, 8), 10))
    assert count_parameters(build_model(parse({"se": True}), (1, 8, 8), 10)) > plain
    assert count_parameters(build_model(parse({"kernel_size": 5}), (1, 8, 8), 10)) > plain


def test_mlp_for_tabular_data() -> None:
    model = build_model(parse({"hidden_layers": 3, "hidden_units": 20, "dropout": 0.1}), (4,), 3)
    assert isinstance(model, MLP)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 20), (20, 20), (20, 20), (20, 3)]
    assert model(torch.randn(5, 4)).shape == (5, 3)


def test_mlp_on_images_flattens() -> None:
    model = build_model(parse({"model": "mlp"}), (1, 8, 8), 10)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cnn_on_tabular_data_is_refused() -> None:
    with pytest.raises(ValueError, match="needs image data"):
        build_model(parse({"model": "cnn"}), (4,), 3)


def test_describe_lists_layers_and_parameters() -> None:
    config = parse({"stages": 2, "width": 4})
    model = build_model(config, (1, 8, 8), 10)
    info = describe(model, config, (1, 8, 8), 10)
    assert info["kind"] == "cnn" and info["stage_channels"] == [4, 8]
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["layers"][-1] == {"name": "head", "type": "linear", "in": 8, "out": 10}
