"""The weight-sharing supernet: its subnets are the trial image's CNNs, sharing one set of weights."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from kubenas_trial import artifacts, oneshot, supernet
from kubenas_trial.config import ConfigError, parse
from kubenas_trial.models import build_model, count_parameters
from kubenas_trial.sdk import MAX_RESULT_BYTES, encode_result
from torch import nn

PLAIN = {"stages": [1, 2, 3], "blocks": [1, 2], "width": [4, 8], "kernel_size": [3, 5], "expansion": [1]}
BOTTLENECK = {"stages": [1, 2], "blocks": [1, 2, 3], "width": [4, 6], "kernel_size": [3, 5, 7], "expansion": [2, 4]}
SHAPE = (1, 12, 12)


def make(space: dict, **params: object) -> tuple[supernet.Supernet, dict]:
    torch.manual_seed(0)
    config = parse(dict(params))
    return supernet.Supernet(SHAPE[0], 10, config, supernet.make_space(config, space)), config


def batches(n: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(16, *SHAPE, generator=generator) for _ in range(n)]


@pytest.mark.parametrize(("space", "params"), [(PLAIN, {}), (BOTTLENECK, {"se": True, "activation": "hardswish"})])
def test_largest_and_smallest_subnets_are_the_cnns_their_parameters_build(
        space: dict, params: dict, one_torch_thread: None) -> None:
    net, config = make(space, **params)
    for subnet in (net.space.largest(), net.space.smallest()):
        expected = build_model(supernet.subnet_config(config, subnet), SHAPE, 10)
        extracted = net.extract(subnet)
        assert {k: v.shape for k, v in extracted.state_dict().items()} == {
            k: v.shape for k, v in expected.state_dict().items()}
        assert count_parameters(extracted) == count_parameters(expected)
        with supernet.running(net, subnet):
            assert net(torch.randn(2, *SHAPE)).shape == (2, 10)
    # The supernet holds exactly the largest subnet's weights, and runs it as that CNN does.
    assert count_parameters(net) == count_parameters(net.extract(net.space.largest()))
    net.eval()
    x = torch.randn(4, *SHAPE)
    torch.testing.assert_close(net(x), net.net(x))


@pytest.mark.parametrize(("space", "params"), [(PLAIN, {}), (BOTTLENECK, {"se": True, "batch_norm": False})])
def test_an_extracted_subnet_computes_what_the_supernet_computes_for_it(
        space: dict, params: dict, one_torch_thread: None) -> None:
    net, _ = make(space, **params)
    rng = random.Random(3)
    x = torch.randn(5, *SHAPE)
    for _ in range(6):
        subnet = net.space.sample(rng)
        supernet.recalibrate(net, subnet, batches())
        net.eval()
        with supernet.running(net, subnet):
            expected = net(x)
        torch.testing.assert_close(net.extract(subnet).eval()(x), expected)


class _Trainer:
    """What sandwich_step reads from a Trainer."""

    def __init__(self, config: dict) -> None:
        self.config, self.scaler = config, None
        self.criterion = nn.CrossEntropyLoss()

    def autocast(self) -> torch.autocast:
        return torch.autocast("cpu", enabled=False)


def test_a_sandwich_step_trains_the_shared_weights_from_every_subnet(one_torch_thread: None) -> None:
    net, config = make(PLAIN)
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    stem = net.net.stem[0].weight
    before = stem.detach().clone()
    net.train()
    with supernet.running(net, net.space.largest()):
        nn.CrossEntropyLoss()(net(x), y).backward()
    largest_only = stem.grad.clone()

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = supernet.sandwich_step(_Trainer(config), net, optimizer, x, y, random.Random(0))  # type: ignore[arg-type]
    assert torch.isfinite(loss)
    smallest = net.space.smallest()
    shared = (slice(0, 4), slice(None), slice(1, 4), slice(1, 4))  # the smallest's 4 channels, centre 3×3
    # The smallest and the random subnets, distilled from the largest, add to the shared slice's gradient.
    assert not torch.allclose(stem.grad[shared], largest_only[shared])
    assert smallest["width"] == 4 and smallest["kernel_size"] == 3
    assert not torch.equal(stem.detach()[shared], before[shared])


def test_bn_recalibration_re_estimates_a_subnets_statistics(one_torch_thread: None) -> None:
    net, _ = make(PLAIN)
    norm = net.net.stages[0][0].body[1]
    supernet.recalibrate(net, net.space.largest(), batches())
    largest = norm.running_mean.clone()
    assert not torch.equal(largest, torch.zeros_like(largest))  # no longer the initial statistics
    supernet.recalibrate(net, {**net.space.largest(), "kernel_size": 3, "width": 4}, batches())
    # Other inputs (3×3 kernels) give the shared 4 channels other statistics; the channels it lacks are reset.
    assert not torch.allclose(norm.running_mean[:4], largest[:4])
    assert torch.equal(norm.running_mean[4:], torch.zeros(4))
    assert net.active == net.space.largest()  # recalibrating leaves the active subnet as it was


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ({"kernel_size": 7}, r"subnets\[2\]\.kernel_size must be one of the supernet's choices 3, 5; got 7"),
        ({"depth": 2}, r"subnets\[2\]\.depth is not an elastic dimension"),
        ({"width": 4.5}, r"subnets\[2\]\.width must be one of the supernet's choices 4, 8"),
        ([1, 2], r"subnets\[2\] must be an object"),
    ],
)
def test_a_bad_subnet_is_refused_naming_the_field(subnet: object, message: str) -> None:
    net, _ = make(PLAIN)
    with pytest.raises(ConfigError, match=message):
        net.space.check(subnet, "subnets[2]")


def test_a_subnet_takes_the_largest_value_of_what_it_omits() -> None:
    net, _ = make(PLAIN)
    assert net.space.check({"width": 4.0, "stages": "2"}, "s") == {
        "stages": 2, "blocks": 2, "width": 4, "kernel_size": 5, "expansion": 1}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"expansion": [1, 4]}, r"supernet_space\.expansion must be all 1 .* or all > 1"),
        ({"kernel_size": [3, 4]}, r"supernet_space\.kernel_size: parameter 'kernel_size' must be one of"),
        ({"blocks": 2}, r"supernet_space\.blocks must be a list"),
        ({"se": [True]}, r"supernet_space\.se is not an elastic dimension"),
    ],
)
def test_a_bad_space_is_refused_naming_the_field(space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        supernet.make_space(parse({}), space)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"subnets": [{}]}, r"'subnets' applies only with mode 'supernet-eval'"),
        ({"mode": "supernet-eval", "supernet_space": {}}, r"'supernet_space' applies only with mode 'supernet-train'"),
        ({"mode": "supernet-eval"}, r"'supernet' is required"),
        ({"mode": "supernet-train", "prune": "structured"}, r"'prune' does not apply with mode 'supernet-train'"),
        ({"mode": "supernet-train", "share_weights": True}, r"'share_weights' does not apply"),
        ({"mode": "supernet-eval", "supernet": "x", "subnets": "[{"}, r"'subnets' must be a list"),
    ],
)
def test_supernet_parameters_are_checked_with_the_mode(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(params)


def test_a_full_batch_result_fits_the_termination_message_whole() -> None:
    worst = {"accuracy": 0.123456789012, "loss": 12.3456789012, "params": 10**10, "log10_params": 10.123456789,
             "flops": 10**13, "latency_ms": 1234.56789012, "latency_noisy": 1}
    records = [{"index": i, "metrics": worst} for i in range(oneshot.MAX_SUBNETS)]
    result = oneshot.batch_result(records, 123456.789012)
    encoded = encode_result(result)
    assert len(encoded) <= MAX_RESULT_BYTES
    assert set(json.loads(encoded)) == set(result)  # rounded, never cut
    assert result[f"{oneshot.MAX_SUBNETS - 1}.accuracy"] == worst["accuracy"]


def test_a_file_that_is_not_a_supernet_checkpoint_is_refused_naming_the_parameter(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage" / oneshot.CHECKPOINT
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="parameter 'supernet': cannot load"):
        oneshot.load(garbage.parent, torch.device("cpu"))
    other = tmp_path / "other.pt"
    torch.save({"format": artifacts.FORMAT}, other)  # a trial's model, not a supernet
    with pytest.raises(ConfigError, match=r"parameter 'supernet': .* is not a kubenas supernet checkpoint"):
        oneshot.load(other, torch.device("cpu"))
    with pytest.raises(ConfigError, match="parameter 'supernet': no supernet checkpoint"):
        oneshot.load(tmp_path / "missing", torch.device("cpu"))
    torch.save({"format": oneshot.FORMAT}, other)
    with pytest.raises(ConfigError, match=r"parameter 'teacher': .* is not a kubenas trial checkpoint"):
        artifacts.load_model(other)
