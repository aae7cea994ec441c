"""Datasets: deterministic, disjoint splits; file formats; errors that name the path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from kubenas_trial.config import parse
from kubenas_trial.data import DataError, load


def test_digits_splits_are_disjoint_stratified_and_deterministic() -> None:
    first = load(parse({}))
    again = load(parse({"seed": 7}))  # the training seed must not move the split
    assert first.input_shape == (1, 8, 8) and first.num_classes == 10 and first.is_image
    assert len(first.y_train) + len(first.y_val) + len(first.y_test) == 1797
    assert torch.equal(first.x_val, again.x_val) and torch.equal(first.y_test, again.y_test)
    assert set(first.y_val.tolist()) == set(range(10))
    train_rows = {tuple(r) for r in first.x_train.flatten(1).tolist()}
    assert not any(tuple(r) in train_rows for r in first.x_test.flatten(1).tolist()[:50])
    assert abs(float(first.x_train.mean())) < 1e-3  # standardised on the training split


def test_split_seed_moves_the_split() -> None:
    assert not torch.equal(load(parse({})).y_val, load(parse({"split_seed": 1})).y_val)


def test_iris_is_tabular() -> None:
    data = load(parse({"dataset": "iris"}))
    assert data.input_shape == (4,) and data.num_classes == 3 and not data.is_image


def test_max_train_samples() -> None:
    assert len(load(parse({"max_train_samples": 100})).y_train) == 100


def test_npz_nhwc_images_with_validation_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "set.npz"
    np.savez(
        path, x_train=rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8), y_train=np.arange(40) % 4,
        x_test=rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8), y_test=np.arange(8) % 4,
        x_val=rng.integers(0, 256, (12, 6, 6, 3), dtype=np.uint8), y_val=np.arange(12) % 4,
    )
    data = load(parse({"dataset": "npz", "data_dir": str(tmp_path)}))
    assert data.input_shape == (3, 6, 6) and data.num_classes == 4
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (40, 12, 8)


def test_npz_missing_arrays_are_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "set.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(4))
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        load(parse({"dataset": "npz", "data_dir": str(tmp_path / "set.npz")}))


def _cifar_batch(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
    path.write_bytes(pickle.dumps(batch))


def test_cifar10_python_batches(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        _cifar_batch(root / f"data_batch_{i}", 20, i)
    _cifar_batch(root / "test_batch", 10, 0)
    data = load(parse({"dataset": "cifar10", "data_dir": str(tmp_path)}))
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.y_train) + len(data.y_val) == 100 and len(data.y_test) == 10


def test_cifar10_refuses_code_in_pickles(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(DataError, match=r"refusing to load builtins\.print"):
        load(parse({"dataset": "cifar10", "data_dir": str(tmp_path)}))


@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist", "npz", "imagefolder"])
def test_missing_dataset_names_the_path(dataset: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"looked for {missing}"):
        load(parse({"dataset": dataset, "data_dir": str(missing)}))


def test_mounted_dataset_needs_data_dir() -> None:
    with pytest.raises(DataError, match="needs the 'data_dir' parameter"):
        load(parse({"dataset": "npz"}))


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for split, count in (("train", 6), ("test", 2)):
        for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (10, 7), color).save(tmp_path / split / cls / f"{i}.png")
    data = load(parse({"dataset": "imagefolder", "data_dir": str(tmp_path), "image_size": 12}))
    assert data.input_shape == (3, 12, 12) and data.num_classes == 2 and len(data.y_test) == 4
