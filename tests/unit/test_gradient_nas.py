"""NAS-Bench-201 cells and the gradient-based cell search (GDAS, and plain DARTS to compare)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kubenas_trial import artifacts, cells, gradient_nas
from kubenas_trial.config import ConfigError, parse
from kubenas_trial.models import build_model
from kubenas_trial.nb201 import EDGES, OPS, format_arch, parse_arch
from kubenas_trial.sdk import TrialReporter
from kubenas_trial.trial import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RESNET_LIKE = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
# A tiny search on the bundled digits: seconds on one CPU thread.
TINY = {"dataset": "digits", "mode": "gradient-search", "width": 4, "stages": 2, "blocks": 1, "batch_size": 32,
        "max_train_samples": 600, "num_threads": 1, "device": "cpu", "seed": 3}


def test_arch_string_round_trips() -> None:
    ops = parse_arch(RESNET_LIKE)
    assert ops == ("nor_conv_3x3", "none", "nor_conv_3x3", "skip_connect", "none", "none")
    assert format_arch(ops) == RESNET_LIKE
    every = tuple(OPS[k % len(OPS)] for k in range(len(EDGES)))
    assert parse_arch(format_arch(every)) == every
    assert parse({"cell": f"  {RESNET_LIKE} "})["cell"] == RESNET_LIKE  # normalised


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", r"3 node groups"),
        ("|nor_conv_3x3~0|+|none~0|+|skip_connect~0|none~1|none~2|", r"node 2 needs 2 edge"),
        ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~0|+|skip_connect~0|none~1|none~2|", r"must be '<op>~1'"),
        ("|conv_5x5~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|", r"unknown operation 'conv_5x5'"),
        ("nor_conv_3x3~0+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|", r"start and end with '\|'"),
        (7, r"must be a string"),
    ],
)
def test_malformed_arch_strings_are_refused_naming_the_field(cell: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"parameter 'cell'.*{message}"):
        parse({"cell": cell})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "cell"}, r"'cell' is required with model 'cell'"),
        ({"model": "cnn", "cell": RESNET_LIKE}, r"'model' must be auto or cell"),
        ({"arch_lr": 0.01}, r"'arch_lr' applies only with mode 'gradient-search'"),
        ({"mode": "gradient-search", "cell": RESNET_LIKE}, r"'cell' does not apply with mode 'gradient-search'"),
        ({"mode": "gradient-search", "prune": "structured"}, r"'prune' does not apply"),
        ({"mode": "gradient-search", "model": "mlp"}, r"'model' must be auto or cell with mode"),
        ({"mode": "gradient-search", "search_method": "enas"}, r"'search_method' must be one of gdas, darts"),
    ],
)
def test_inconsistent_cell_and_search_parameters_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(params)


def test_cell_network_follows_the_arch_string() -> None:
    net = build_model(parse({"cell": RESNET_LIKE, "width": 4, "stages": 3}), (1, 28, 28), 10)
    assert isinstance(net, cells.CellNetwork) and net.channels == [4, 8, 16]
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    cell = net.layers[0]
    assert [type(e).__name__ for e in cell.edges] == ["Sequential", "Zero", "Sequential", "Identity", "Zero", "Zero"]
    # Node 3 reads node 0 through the skip only: this cell is the identity.
    x = torch.randn(2, 4, 7, 7)
    assert torch.equal(cell(x), x)
    skip_only = build_model(parse({"cell": ALL_SKIP, "width": 4, "stages": 3}), (1, 28, 28), 10)
    assert sum(p.numel() for p in skip_only.parameters()) < sum(p.numel() for p in net.parameters())
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)  # 8x8 digits: 8 -> 4 -> 2


def test_mixed_op_mixes_all_operations_or_runs_only_the_chosen_one() -> None:
    torch.manual_seed(0)
    cell = gradient_nas.SearchCell(4).eval()
    x = torch.randn(2, 4, 5, 5)
    outputs = [op(x) for op in cell.edges[0]]
    soft = torch.softmax(torch.randn(len(OPS)), 0)
    mixed = cell.mixed_op(0, x, soft, None)
    assert torch.allclose(mixed, sum(w * out for w, out in zip(soft, outputs, strict=True)), atol=1e-6)

    logits = torch.randn(len(OPS), requires_grad=True)
    probs = torch.softmax(logits, 0)
    hard = torch.nn.functional.one_hot(torch.tensor(3), len(OPS)).float() - probs.detach() + probs
    chosen = [3] * len(EDGES)
    out = cell.mixed_op(0, x, hard, chosen)
    assert torch.allclose(out, outputs[3], atol=1e-6)  # the value is the chosen operation's alone
    out.square().sum().backward()
    assert (logits.grad != 0).all()  # yet every operation's weight gets a gradient
    conv1x1, conv3x3 = cell.edges[0][2], cell.edges[0][3]
    assert all(p.grad is not None for p in conv3x3.parameters())
    assert all(p.grad is None for p in conv1x1.parameters())  # the others did not run


def test_derived_cell_is_the_argmax_of_every_edge() -> None:
    network = gradient_nas.SearchNetwork(1, 10, parse({**TINY}))
    with torch.no_grad():
        network.alphas.zero_()
        for edge, op in enumerate(parse_arch(RESNET_LIKE)):
            network.alphas[edge, OPS.index(op)] = 1.0
    assert format_arch(network.derived_ops()) == RESNET_LIKE
    metrics = gradient_nas.cell_metrics(network.derived_ops())
    assert metrics["none_share"] == 0.5 and metrics["skip_share"] == pytest.approx(1 / 6)
    assert [metrics[f"cell_op_{e}"] for e in range(6)] == [3, 0, 3, 1, 0, 0]
    network.eval()  # GDAS evaluates the argmax cell
    weights, chosen = network.sample()
    assert chosen == [3, 0, 3, 1, 0, 0] and weights.sum().item() == len(EDGES)
    network.method = "darts"  # DARTS always mixes, by the softmax of the architecture weights
    weights, chosen = network.sample()
    assert chosen is None and torch.allclose(weights, torch.softmax(network.alphas, -1))


def _batch(seed: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _after_step(method: str, weight_batch: tuple, arch_batch: tuple, arch_lr: float = 0.01) -> gradient_nas.Bilevel:
    torch.manual_seed(0)
    config = parse({**TINY, "search_method": method, "arch_lr": arch_lr, "epochs": 1})
    network = gradient_nas.SearchNetwork(1, 10, config)
    network.seed_sampler(0)
    bilevel = gradient_nas.Bilevel(network, config, torch.device("cpu"), steps_per_epoch=4)
    bilevel.step(weight_batch, arch_batch)
    return bilevel


def _weights(bilevel: gradient_nas.Bilevel) -> list[torch.Tensor]:
    return [p.detach().clone() for p in bilevel.network.net.parameters()]


@pytest.mark.parametrize("method", ["gdas", "darts"])
def test_a_search_step_updates_each_level_on_its_own_split(method: str) -> None:
    w1, w2, a1, a2 = _batch(1), _batch(2), _batch(3), _batch(4)
    torch.manual_seed(0)
    untouched = gradient_nas.SearchNetwork(1, 10, parse({**TINY, "search_method": method}))
    base = _after_step(method, w1, a1)
    assert not torch.equal(base.network.alphas, untouched.alphas)
    assert any(not torch.equal(p, q) for p, q in zip(_weights(base), untouched.net.parameters(), strict=True))

    # The architecture weights learn from the architecture batch only ...
    assert torch.equal(_after_step(method, w2, a1).network.alphas, base.network.alphas)
    assert not torch.equal(_after_step(method, w1, a2).network.alphas, base.network.alphas)
    # ... and the network weights from the weight batch only (the architecture frozen by a zero rate).
    frozen = _weights(_after_step(method, w1, a1, arch_lr=1e-6))
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(frozen, _weights(_after_step(method, w1, a2, 1e-6)),
                                                                 strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(frozen, _weights(_after_step(method, w2, a1, 1e-6)),
                                                     strict=True))


def _search(tmp_path: Path, method: str, **extra: object) -> tuple[dict, dict]:
    out = tmp_path / method
    reporter = TrialReporter(port=0, termination_log=tmp_path / f"{method}.result")
    params = {**TINY, "search_method": method, "epochs": 6, "arch_lr": 0.01, **extra}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(artifacts.OUTPUT_DIR_ENV, str(out))
        result = run(params, reporter)
    return result, json.loads((out / "cell.json").read_text())


def test_gdas_search_reports_and_writes_a_derived_cell_that_is_not_all_parameter_free(tmp_path: Path) -> None:
    result, cell = _search(tmp_path, "gdas")
    ops = parse_arch(cell["cell"])
    assert [OPS.index(op) for op in ops] == [result[f"cell_op_{e}"] for e in range(6)]
    assert result["parameter_free_share"] < 1 and result["skip_share"] < 1
    assert result["skip_share"] + result["none_share"] == pytest.approx(result["parameter_free_share"])
    assert json.loads((tmp_path / "gdas.result").read_text()) == result
    assert cell["retrain_parameters"]["cell"] == cell["cell"]
    assert "mode" not in cell["retrain_parameters"] and "search_method" not in cell["retrain_parameters"]
    again, _ = _search(tmp_path / "again", "gdas")  # seeded: the same cell again
    assert [again[f"cell_op_{e}"] for e in range(6)] == [result[f"cell_op_{e}"] for e in range(6)]


def test_the_derived_cell_retrains_as_an_ordinary_trial(tmp_path: Path) -> None:
    _, cell = _search(tmp_path, "gdas", epochs=2)
    params = {**cell["retrain_parameters"], "epochs": 3, "latency_repeats": 1, "latency_warmup": 0}
    reporter = TrialReporter(port=0, termination_log=tmp_path / "retrain.result")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(artifacts.OUTPUT_DIR_ENV, str(tmp_path / "retrain"))
        result = run(params, reporter)
    assert {"accuracy", "test_accuracy", "params", "flops", "latency_ms"} <= set(result)
    assert result["accuracy"] > 0.2  # learns digits in 3 epochs (chance: 0.1)
    model, meta = artifacts.load_model(tmp_path / "retrain")
    assert isinstance(model, cells.CellNetwork) and meta["architecture"]["cell"] == cell["cell"]
    description = json.loads((tmp_path / "retrain" / "architecture.json").read_text())["architecture"]
    assert description["kind"] == "cell" and description["cell"] == cell["cell"]



@pytest.mark.parametrize("seed", range(5))
def test_the_operator_reads_the_cell_a_search_reports_as_the_trainer_writes_it(seed: int) -> None:
    """The contract of spec.gradientSearch: cell_op_<edge> metrics out of a search, the `cell` parameter back in."""
    from kubenas.api import gradient as api_gradient
    from kubenas_trial.config import MODES, SEARCH_ONLY

    generator = torch.Generator().manual_seed(seed)
    ops = tuple(OPS[int(k)] for k in torch.randint(len(OPS), (len(EDGES),), generator=generator))
    reported = {k: float(v) for k, v in gradient_nas.cell_metrics(ops).items()}
    assert api_gradient.cell_of(reported) == format_arch(ops)
    assert parse_arch(format_arch(ops)) == ops
    assert api_gradient.CELL_OPERATIONS == OPS and api_gradient.SEARCH_ONLY == SEARCH_ONLY
    assert {api_gradient.SEARCH_MODE, "train"} <= set(MODES)
