"""Checkpoints and reports in the output directory; loading a checkpoint back (e.g. as a teacher)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubenas_trial.config import ConfigError, defaults
from kubenas_trial.models import ARCHITECTURE_KEYS, build_model, resize_to

FORMAT = "kubenas-trial/1"
OUTPUT_DIR_ENV = "KUBENAS_OUTPUT_DIR"


def output_dir() -> Path | None:
    """The artifact directory from ``KUBENAS_OUTPUT_DIR``, or None when artifacts are not wanted."""
    value = os.environ.get(OUTPUT_DIR_ENV)
    return Path(value) if value else None


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def checkpoint(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
               quantization: str | None = None) -> dict[str, Any]:
    """A self-describing checkpoint: enough to rebuild the network without the original parameters."""
    return {
        "format": FORMAT,
        "architecture": {key: config[key] for key in ARCHITECTURE_KEYS},
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "quantization": quantization,
        "state_dict": model.state_dict(),
    }


def save(directory: Path, *, float_model: nn.Module, final_model: nn.Module, quantization: str | None,
         config: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
         architecture: dict[str, Any], metrics: dict[str, Any]) -> list[Path]:
    """Write model.pt (the final, possibly quantized model), model_float.pt when quantized,
    architecture.json and metrics.json. Returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    model_path = directory / "model.pt"
    torch.save(checkpoint(final_model, config, input_shape, num_classes, quantization), model_path)
    written.append(model_path)
    if quantization is not None:
        float_path = directory / "model_float.pt"
        torch.save(checkpoint(float_model, config, input_shape, num_classes), float_path)
        written.append(float_path)
    write_json(directory / "architecture.json", {"parameters": config, "architecture": architecture})
    write_json(directory / "metrics.json", metrics)
    written += [directory / "architecture.json", directory / "metrics.json"]
    return written


def save_search(directory: Path, *, search: dict[str, Any], metrics: dict[str, Any]) -> list[Path]:
    """Write a gradient search's cell.json (the derived cell) and metrics.json. Returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "cell.json", search)
    write_json(directory / "metrics.json", metrics)
    return [directory / "cell.json", directory / "metrics.json"]


def read_checkpoint(file: Path, field: str, fmt: str, kind: str) -> dict[str, Any]:
    """A checkpoint file of format ``fmt``, loaded with ``weights_only`` (no code from the file runs).

    Raises:
        ConfigError: naming ``field``, when the file does not load or is not a ``kind``.
    """
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ConfigError(f"{field}: cannot load {file}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ConfigError(f"{field}: {file} is not a {kind}")
    return data


def _resolve(path: Path, field: str) -> Path:
    if path.is_dir():
        for name in ("model_float.pt", "model.pt"):
            if (path / name).exists():
                return path / name
        raise ConfigError(f"{field}: no model.pt in {path}")
    if not path.exists():
        raise ConfigError(f"{field}: checkpoint not found: {path}")
    return path


def load_model(path: str | Path, field: str = "parameter 'teacher'") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a float model from a checkpoint written by :func:`save` (a file, or the directory holding it).

    A quantized model.pt is skipped for its float twin ``model_float.pt``.

    Raises:
        ConfigError: the checkpoint is missing, quantized without a float twin, or not ours.
    """
    file = _resolve(Path(path), field)
    data = read_checkpoint(file, field, FORMAT, "kubenas trial checkpoint")
    if data.get("quantization"):
        twin = file.with_name("model_float.pt")
        if twin == file or not twin.exists():
            raise ConfigError(f"{field}: {file} is quantized and has no model_float.pt beside it")
        return load_model(twin, field)
    config = defaults() | data["architecture"]
    model = build_model(config, tuple(data["input_shape"]), int(data["num_classes"]))
    resize_to(model, data["state_dict"])  # structurally pruned checkpoints have fewer channels
    model.load_state_dict(data["state_dict"])
    return model.eval(), data
