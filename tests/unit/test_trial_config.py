"""Trainer parameters: defaults, coercion, and clear errors for typos and bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubenas_trial.__main__ import main
from kubenas_trial.config import SPECS, ConfigError, parse


def test_empty_parameters_give_every_default() -> None:
    config = parse({})
    assert config == {name: spec.default for name, spec in SPECS.items()}


def test_search_space_values_are_coerced() -> None:
    config = parse({"blocks": 3.0, "width": "24", "se": "true", "residual": 0, "optimizer": "SGD", "lr": "0.1"})
    assert config["blocks"] == 3 and isinstance(config["blocks"], int)
    assert config["width"] == 24
    assert config["se"] is True and config["residual"] is False
    assert config["optimizer"] == "sgd"
    assert config["lr"] == 0.1


def test_unknown_parameter_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown parameter 'learning_rat'.*") as info:
        parse({"learning_rat": 0.1, "epochs": 2, "widht": 8})
    assert "'widht' (did you mean 'width'?)" in str(info.value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": 0}, "'epochs' must be ≥ 1"),
        ({"blocks": 2.5}, "'blocks' must be an integer"),
        ({"optimizer": "lion"}, "'optimizer' must be one of sgd, adam, adamw"),
        ({"kernel_size": 4}, "'kernel_size' must be one of 1, 3, 5, 7"),
        ({"lr": float("nan")}, "'lr' must be a finite number"),
        ({"se": "maybe"}, "'se' must be true or false"),
        ({"dataset": None}, "'dataset' must not be null"),
        ({"device": "tpu"}, "'device' must be auto, cpu, cuda, cuda:N or mps"),
        ({"prune_amount": 1.0}, "'prune_amount' must be ≤ 0.99"),
    ],
)
def test_bad_values_are_named(params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(params)
    assert message in str(info.value)


def test_main_exits_2_on_unknown_parameter(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("KUBENAS_PARAMETERS", json.dumps({"epoch": 3}))
    monkeypatch.setenv("KUBENAS_TERMINATION_LOG", str(tmp_path / "log"))
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'epoch'" in err and "did you mean 'epochs'" in err
    assert not (tmp_path / "log").exists()


def test_main_exits_2_on_invalid_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KUBENAS_PARAMETERS", "{epochs: 3}")
    assert main([]) == 2
    assert "KUBENAS_PARAMETERS is not valid JSON" in capsys.readouterr().err


def test_main_exits_3_on_missing_dataset(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    monkeypatch.delenv("KUBENAS_PARAMETERS", raising=False)
    missing = tmp_path / "cifar"
    assert main(["-p", "dataset=cifar10", "-p", f"data_dir={missing}"]) == 3
    assert f"looked for {missing}" in capsys.readouterr().err


def test_list_parameters_covers_every_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-parameters"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == set(SPECS)
    assert table["optimizer"]["choices"] == ["sgd", "adam", "adamw"]


def test_every_parameter_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "trial.md").read_text()
    missing = [name for name in SPECS if f"| `{name}` |" not in docs]
    assert not missing, f"docs/trial.md lacks {missing}"
