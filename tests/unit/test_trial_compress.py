"""Pruning and int8 quantization of the trainer's models, and the cost measurements."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kubenas_trial import artifacts, compress, cost
from kubenas_trial.config import parse
from kubenas_trial.models import Block, build_model
from torch import nn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _cnn(**params: object) -> nn.Module:
    torch.manual_seed(0)
    return build_model(parse({"width": 32, **params}), (1, 8, 8), 10).eval()


def test_global_unstructured_pruning_halves_nonzero_weights() -> None:
    model = _cnn()
    total, nonzero = cost.parameter_counts(model)
    assert nonzero > 0.95 * total  # only zero-initialised biases
    compress.apply_pruning(model, "unstructured", 0.5)
    compress.make_permanent(model)
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    n_weights = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == round(0.5 * n_weights)
    _, after = cost.parameter_counts(model)
    assert after <= 0.55 * nonzero
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())  # masks folded in


@pytest.mark.parametrize(
    "params",
    [{}, {"expansion": 4, "se": True}, {"blocks": 3, "share_weights": True}, {"batch_norm": False}],
)
def test_structured_pruning_removes_internal_channels(params: dict) -> None:
    model = _cnn(**params)
    example = torch.randn(4, 1, 8, 8)
    params_before, _ = cost.parameter_counts(model)
    flops_before = cost.flops(model, example[:1])
    internal_before = [b.body[0].out_channels for b in model.modules() if isinstance(b, Block)]
    compress.apply_pruning(model, "structured", 0.5)
    internal_after = [b.body[0].out_channels for b in model.modules() if isinstance(b, Block)]
    assert internal_after == [round(c * 0.5) for c in internal_before]
    assert model(example).shape == (4, 10)  # residual stream and classes intact
    params_after, _ = cost.parameter_counts(model)
    assert params_after < 0.8 * params_before
    assert cost.flops(model, example[:1]) < 0.8 * flops_before


def test_structured_pruning_keeps_the_strongest_filters() -> None:
    model = _cnn(stages=1)
    conv = model.stages[0][0].body[0]
    with torch.no_grad():
        conv.weight[:16] *= 100  # make the first half clearly the strongest
    kept = conv.weight[:16].clone()
    compress.apply_pruning(model, "structured", 0.5)
    assert torch.equal(model.stages[0][0].body[0].weight, kept)


def test_structured_pruning_of_mlp_hidden_units() -> None:
    torch.manual_seed(0)
    model = build_model(parse({"hidden_layers": 2, "hidden_units": 40}), (6,), 3).eval()
    compress.apply_pruning(model, "structured", 0.25)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 30), (30, 30), (30, 3)]
    assert model(torch.randn(5, 6)).shape == (5, 3)


def test_pruned_checkpoint_round_trip(tmp_path: Path) -> None:
    config = parse({"width": 32, "expansion": 2, "se": True})
    model = build_model(config, (1, 8, 8), 10).eval()
    compress.apply_pruning(model, "structured", 0.5)
    path = tmp_path / "model.pt"
    torch.save(artifacts.checkpoint(model, config, (1, 8, 8), 10), path)
    loaded, _meta = artifacts.load_model(path)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_batchnorm_recalibration_restores_statistics() -> None:
    model = _cnn()
    x = torch.randn(64, 1, 8, 8) * 3 + 1
    compress.recalibrate_batchnorm(model, [x[:32], x[32:]])
    bn = model.stem[1]
    stem_out = model.stem[0](x)
    assert torch.allclose(bn.running_mean, stem_out.mean((0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1 and not model.training


def test_static_int8_quantization_shrinks_cnn_and_keeps_predictions() -> None:
    model = _cnn(se=True)
    x = torch.randn(256, 1, 8, 8)
    reference = model(x).argmax(1)
    quantized = compress.quantize(model, "static", [x[:128], x[128:]], x[:1])
    agreement = (quantized(x).argmax(1) == reference).float().mean().item()
    assert agreement > 0.8
    assert cost.size_bytes(model) >= 3 * cost.size_bytes(quantized)


def test_dynamic_quantization_of_mlp() -> None:
    torch.manual_seed(0)
    model = build_model(parse({"hidden_units": 256}), (64,), 10).eval()
    x = torch.randn(32, 64)
    quantized = compress.quantize(model, "dynamic", [], x[:1])
    assert torch.allclose(quantized(x), model(x), atol=0.1)
    assert cost.size_bytes(model) >= 3 * cost.size_bytes(quantized)


@pytest.mark.parametrize(("requested", "is_cnn", "kind"),
                         [("int8", True, "static"), ("int8", False, "dynamic"), ("dynamic", True, "dynamic"),
                          ("none", True, None)])
def test_quantization_kind(requested: str, is_cnn: bool, kind: str | None) -> None:
    assert compress.quantization_kind(requested, is_cnn) == kind


def test_flops_of_a_linear_layer() -> None:
    assert cost.flops(nn.Linear(30, 20), torch.randn(1, 30)) == 2 * 30 * 20


def test_sparse_flops_follow_pruning() -> None:
    model = _cnn()
    example = torch.randn(1, 1, 8, 8)
    dense, sparse = cost.flop_counts(model, example)
    assert sparse == dense
    compress.apply_pruning(model, "unstructured", 0.5)
    compress.make_permanent(model)
    after_dense, after_sparse = cost.flop_counts(model, example)
    assert after_dense == dense
    assert 0.4 * dense < after_sparse < 0.6 * dense


def test_flops_grow_with_width() -> None:
    example = torch.randn(1, 1, 8, 8)
    assert cost.flops(_cnn(width=16), example) * 3 < cost.flops(_cnn(width=32), example)


def test_shared_parameters_counted_once() -> None:
    layer = nn.Linear(4, 4)
    assert cost.parameter_counts(nn.Sequential(layer, layer)) == (20, 20)


def test_latency_is_positive_median() -> None:
    assert cost.measure_latency(nn.Linear(8, 8), torch.randn(1, 8), threads=1, repeats=5, warmup=1).median_ms > 0
