"""Offline datasets as in-memory tensors with deterministic train/validation/test splits."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class DataError(RuntimeError):
    """A dataset is missing or malformed; the message names the path looked at."""


@dataclass
class Dataset:
    """Normalised tensors for the three splits.

    Images are float32 ``(N, C, H, W)``; tabular data is ``(N, F)``. Labels are int64 in
    ``[0, num_classes)``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def is_image(self) -> bool:
        return self.x_train.dim() == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test),
        }


def _split(n: int, fraction: float, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of indices [0, n) into (rest, held_out) with ``fraction`` held out per class."""
    held, rest = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        k = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        held.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found: looked for {path}")
    return path


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32)[:, None] / 16.0, bunch.target.astype(np.int64)


def _load_iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    bunch = load_iris()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {array.size}")
    return array.reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise DataError(f"Fashion-MNIST file not found: looked for {root / stem}.gz (and without .gz)")


def _load_fashion_mnist(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    _require(root, "Fashion-MNIST directory")
    x_train = _read_idx(_idx_file(root, "train-images-idx3-ubyte"))
    y_train = _read_idx(_idx_file(root, "train-labels-idx1-ubyte"))
    x_test = _read_idx(_idx_file(root, "t10k-images-idx3-ubyte"))
    y_test = _read_idx(_idx_file(root, "t10k-labels-idx1-ubyte"))
    scale = np.float32(1 / 255)
    return (x_train[:, None] * scale, y_train.astype(np.int64), x_test[:, None] * scale, y_test.astype(np.int64))


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches without executing arbitrary code from a mounted volume."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(_require(path, "CIFAR-10 batch"), "rb") as handle:
        try:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DataError(f"{path} is not a CIFAR-10 python batch: {exc}") from exc
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path} has no data/labels entries")
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images.astype(np.float32) / 255.0, np.asarray(labels, dtype=np.int64)


def _load_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    _require(root, "CIFAR-10 directory")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    parts = [_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _cifar_batch(root / "test_batch")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test


def _as_features(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3:  # (N, H, W) grayscale
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
        array = array.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    elif array.ndim not in (2, 4):
        raise DataError(f"{path}: {key} must have 2 (tabular), 3 or 4 (images) dimensions, got {array.ndim}")
    array = array.astype(np.float32)
    if array.ndim == 4 and array.max(initial=0.0) > 1.5:
        array /= 255.0  # 8-bit images
    return array


def _load_npz(path: Path) -> tuple[np.ndarray, ...]:
    _require(path, "npz dataset")
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if len(files) != 1:
            raise DataError(f"expected exactly one .npz file in {path}, found {len(files)}")
        path = files[0]
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    with archive:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)} (needs x_train, y_train, x_test, y_test)")
        arrays = [_as_features(archive["x_train"], path, "x_train"), archive["y_train"].astype(np.int64),
                  _as_features(archive["x_test"], path, "x_test"), archive["y_test"].astype(np.int64)]
        if "x_val" in archive and "y_val" in archive:
            arrays += [_as_features(archive["x_val"], path, "x_val"), archive["y_val"].astype(np.int64)]
    return tuple(arrays)


def _load_image_dir(root: Path, size: int, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images, labels = [], []
    for label, cls in enumerate(classes):
        for file in sorted((root / cls).iterdir()) if (root / cls).is_dir() else []:
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(file) as image:
                rgb = image.convert("RGB").resize((size, size))
                images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
                labels.append(label)
    if not images:
        raise DataError(f"no images found under {root}/<class>/")
    return np.stack(images).astype(np.float32) / 255.0, np.asarray(labels, dtype=np.int64)


def _load_imagefolder(root: Path, size: int) -> tuple[np.ndarray, ...]:
    _require(root, "image folder")
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir() and p.name not in ("train", "test", "val"))
    if not classes:
        raise DataError(f"no class directories found in {train_root}")
    x, y = _load_image_dir(train_root, size, classes)
    if (root / "test").is_dir():
        x_test, y_test = _load_image_dir(root / "test", size, classes)
        return x, y, x_test, y_test
    return x, y


def load(config: dict[str, Any]) -> Dataset:
    """Load the dataset named by ``config['dataset']``, split and normalise it (statistics from train only).

    Raises:
        DataError: the dataset's files are missing or malformed.
    """
    name = config["dataset"]
    data_dir = config["data_dir"]
    rng = np.random.default_rng(config["split_seed"])
    if name in ("npz", "cifar10", "imagefolder") and not data_dir:
        raise DataError(f"dataset {name!r} needs the 'data_dir' parameter (a mounted path)")
    root = Path(os.path.expanduser(data_dir)) if data_dir else None

    val: tuple[np.ndarray, np.ndarray] | None = None
    if name == "digits":
        arrays: tuple[np.ndarray, ...] = _load_digits()
    elif name == "iris":
        arrays = _load_iris()
    elif name == "fashion-mnist":
        arrays = _load_fashion_mnist(root or Path(FASHION_MNIST_DIR))
    elif name == "cifar10":
        arrays = _load_cifar10(root)  # type: ignore[arg-type]
    elif name == "imagefolder":
        arrays = _load_imagefolder(root, config["image_size"])  # type: ignore[arg-type]
    else:
        arrays = _load_npz(root)  # type: ignore[arg-type]
        if len(arrays) == 6:
            val = (arrays[4], arrays[5])
            arrays = arrays[:4]

    if len(arrays) == 2:  # no official test split: hold one out, stratified and seeded
        x, y = arrays
        rest, test = _split(len(y), config["test_fraction"], y, rng)
        arrays = (x[rest], y[rest], x[test], y[test])
    x_train, y_train, x_test, y_test = arrays
    if val is None:
        train, held = _split(len(y_train), config["val_fraction"], y_train, rng)
        val = (x_train[held], y_train[held])
        x_train, y_train = x_train[train], y_train[train]
    if config["max_train_samples"] and len(y_train) > config["max_train_samples"]:
        keep = np.sort(rng.permutation(len(y_train))[: config["max_train_samples"]])
        x_train, y_train = x_train[keep], y_train[keep]

    for split, labels in (("train", y_train), ("validation", val[1]), ("test", y_test)):
        if len(labels) == 0:
            raise DataError(f"dataset {name!r}: the {split} split is empty")
    num_classes = int(max(y_train.max(), val[1].max(), y_test.max())) + 1
    if min(y_train.min(), val[1].min(), y_test.min()) < 0:
        raise DataError(f"dataset {name!r}: labels must be integers ≥ 0")

    # Per-channel (images) or per-feature (tabular) standardisation from the training split.
    axes = (0, 2, 3) if x_train.ndim == 4 else (0,)
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True) + 1e-6

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray((x - mean) / std, dtype=np.float32))

    return Dataset(
        name=name,
        x_train=tensor(x_train), y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_val=tensor(val[0]), y_val=torch.from_numpy(np.ascontiguousarray(val[1])),
        x_test=tensor(x_test), y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        num_classes=num_classes,
    )

