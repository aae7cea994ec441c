"""Trainer checkpoints: atomic saves, and every unusable checkpoint ignored with a warning, never a crash."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from kubenas_trial import checkpoints
from kubenas_trial.config import parse


def _state(epoch: int = 2) -> dict[str, Any]:
    return {"phase": "train", "epoch": epoch, "model": {"w": torch.ones(3)}, "optimizer": {"state": {}},
            "rng": [{"torch": torch.get_rng_state()}], "history": [{"epoch": 1, "accuracy": 0.5}], "extra": {},
            "samples": 100, "seconds": 1.5}


def test_saved_checkpoint_loads_back(tmp_path: Path) -> None:
    file = checkpoints.save(tmp_path / "new", _state(), "abc")
    assert file == tmp_path / "new" / checkpoints.FILE_NAME
    loaded = checkpoints.load(tmp_path / "new", "abc", last_epoch=5)
    assert loaded is not None and loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path / "new") == [checkpoints.FILE_NAME]  # no temporary file left behind


def test_no_checkpoint_is_none_without_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert checkpoints.load(tmp_path, "abc", last_epoch=5) is None
    assert capsys.readouterr().err == ""


class _Foreign:
    pass


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not a checkpoint")


def _truncated(path: Path) -> None:
    checkpoints.save(path.parent, _state(), "abc")
    path.write_bytes(path.read_bytes()[:200])


def _arbitrary_object(path: Path) -> None:
    torch.save({"format": checkpoints.FORMAT, "parameters_hash": "abc", "payload": _Foreign()}, path)


def _other_parameters(path: Path) -> None:
    checkpoints.save(path.parent, _state(), "other")


def _epoch_beyond_the_run(path: Path) -> None:
    checkpoints.save(path.parent, _state(epoch=9), "abc")


def _field_missing(path: Path) -> None:
    state = _state()
    del state["optimizer"]
    checkpoints.save(path.parent, state, "abc")


@pytest.mark.parametrize(("spoil", "reason"), [
    (_garbage, "cannot load it"), (_truncated, "cannot load it"), (_arbitrary_object, "cannot load it"),
    (_other_parameters, "written for other parameters"), (_epoch_beyond_the_run, "epoch 9 out of range"),
    (_field_missing, "missing or malformed optimizer"),
])
def test_unusable_checkpoint_is_ignored_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       spoil: Any, reason: str) -> None:
    spoil(tmp_path / checkpoints.FILE_NAME)
    assert checkpoints.load(tmp_path, "abc", last_epoch=5) is None
    err = capsys.readouterr().err
    assert "kubenas-trial: warning: ignoring checkpoint" in err and reason in err and "from the start" in err


def test_unwritable_directory_warns_and_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert checkpoints.save(tmp_path / "file" / "sub", _state(), "abc") is None
    assert "cannot write checkpoint" in capsys.readouterr().err


def test_parameters_hash_ignores_where_and_how_fast() -> None:
    base = parse({"lr": 0.01})
    assert checkpoints.parameters_hash(base) == checkpoints.parameters_hash(
        parse({"lr": 0.01, "device": "cpu", "num_threads": 3, "latency_repeats": 5, "dist_timeout": 60}))
    assert checkpoints.parameters_hash(base) != checkpoints.parameters_hash(parse({"lr": 0.02}))
