"""Every parameter the trainer accepts: name, type, default and allowed values, and their validation."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("relu", "gelu", "silu", "hardswish", "leaky_relu", "tanh")
DATASETS = ("digits", "iris", "fashion-mnist", "cifar10", "npz", "imagefolder")
MODES = ("train", "gradient-search", "supernet-train", "supernet-eval")
SEARCH_METHODS = ("gdas", "darts")
SEARCH_ONLY = ("search_method", "arch_lr", "arch_warmup", "arch_fraction")
"""Parameters that only a gradient search reads (refused in ordinary trials)."""
SUPERNET_ONLY = {"supernet_space": ("supernet-train",), "supernet": ("supernet-eval",),
                 "subnets": ("supernet-eval",), "bn_recalibration_batches": ("supernet-train", "supernet-eval")}
"""Parameters that only the supernet modes read, and the modes that read them (refused elsewhere)."""
# What the supernet cannot do: it is one elastic CNN, evaluated as it was trained.
_NOT_IN_SUPERNET = {"cell": None, "share_weights": False, "compile": False, "prune": "none", "quantize": "none",
                    "teacher": None}
# Parameters that describe what happens to a trained network; a search trains none.
_NOT_IN_SEARCH = ("cell", "prune", "quantize", "teacher")


class ConfigError(ValueError):
    """A parameter is unknown or has a bad value; the message names it."""


@dataclass(frozen=True)
class Spec:
    """One trainer parameter: type, default, and the values it may take."""

    kind: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False


def _c(default: str, help: str, choices: tuple[str, ...]) -> Spec:
    return Spec(str, default, help, choices=choices)


SPECS: dict[str, Spec] = {
    "mode": _c("train", "train: train the network the parameters describe; gradient-search: search a "
                        "NAS-Bench-201 cell by gradient descent and report the derived cell; supernet-train, "
                        "supernet-eval: train a weight-sharing supernet, evaluate subnets from it", MODES),
    # data
    "dataset": _c("digits", "digits, iris (bundled), fashion-mnist, cifar10, npz, imagefolder (mounted)", DATASETS),
    "data_dir": Spec(str, None, "where the dataset lives (a directory, or the .npz file)", nullable=True),
    "val_fraction": Spec(float, 0.15, "share of the training data held out for validation", min=0.01, max=0.5),
    "test_fraction": Spec(float, 0.2, "share held out for the test split when the dataset has none", min=0.01, max=0.5),
    "split_seed": Spec(int, 0, "seed of the train/val/test split (kept fixed across trials)", min=0),
    "max_train_samples": Spec(int, 0, "use at most this many training samples (0: all)", min=0),
    "image_size": Spec(int, 32, "side length images are resized to (imagefolder only)", min=4, max=1024),
    # model
    "model": _c("auto", "cnn, mlp, cell, or auto (cell when 'cell' is set, else cnn for images, mlp for tabular "
                        "data)", ("auto", "cnn", "mlp", "cell")),
    "cell": Spec(str, None, "the NAS-Bench-201 cell of a cell network, as an architecture string "
                            "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| (stages, blocks, width shape the skeleton)",
                 nullable=True),
    "stages": Spec(int, 2, "CNN: number of stages; each after the first halves the resolution", min=1, max=6),
    "blocks": Spec(int, 1, "CNN: blocks per stage", min=1, max=8),
    "width": Spec(int, 16, "CNN: channels of the first stage (doubled every stage)", min=1, max=1024),
    "width_mult": Spec(float, 1.0, "CNN: multiplier applied to every stage's channels", min=0.125, max=8.0),
    "kernel_size": Spec(int, 3, "CNN: convolution kernel size (odd)", choices=(1, 3, 5, 7)),
    "expansion": Spec(int, 1, "CNN: inverted-bottleneck expansion ratio (1: plain conv blocks)", min=1, max=8),
    "activation": _c("relu", "activation function", ACTIVATIONS),
    "residual": Spec(bool, True, "CNN: residual connections where shapes allow"),
    "se": Spec(bool, False, "CNN: squeeze-and-excitation in every block"),
    "share_weights": Spec(bool, False, "CNN: blocks 2..n of a stage share one set of weights"),
    "batch_norm": Spec(bool, True, "batch normalisation after convolutions / hidden layers"),
    "dropout": Spec(float, 0.0, "dropout before the classifier (and after MLP hidden layers)", min=0.0, max=0.9),
    "hidden_layers": Spec(int, 2, "MLP: hidden layers", min=0, max=16),
    "hidden_units": Spec(int, 64, "MLP: units per hidden layer", min=1, max=8192),
    # optimisation
    "optimizer": _c("adamw", "sgd, adam or adamw", ("sgd", "adam", "adamw")),
    "lr": Spec(float, 0.003, "peak learning rate", min=1e-7, max=10.0),
    "momentum": Spec(float, 0.9, "SGD momentum (Nesterov); beta1 for Adam/AdamW", min=0.0, max=0.999),
    "weight_decay": Spec(float, 5e-4, "weight decay", min=0.0, max=1.0),
    "schedule": _c("cosine", "learning-rate schedule after warm-up: cosine, step or none", ("cosine", "step", "none")),
    "warmup_epochs": Spec(float, 0.0, "linear warm-up length in epochs", min=0.0, max=100.0),
    "step_size": Spec(int, 10, "step schedule: epochs between decays", min=1),
    "gamma": Spec(float, 0.1, "step schedule: decay factor", min=0.0, max=1.0),
    "epochs": Spec(int, 10, "training epochs", min=1, max=10_000),
    "batch_size": Spec(int, 64, "training batch size", min=1, max=65_536),
    "label_smoothing": Spec(float, 0.0, "label smoothing of the cross-entropy loss", min=0.0, max=0.5),
    "grad_clip": Spec(float, 0.0, "clip the gradient norm to this value (0: off)", min=0.0),
    "augment_crop": Spec(int, 0, "images: random-crop padding in pixels (0: off)", min=0, max=16),
    "augment_flip": Spec(bool, False, "images: random horizontal flips"),
    "seed": Spec(int, 0, "seed for initialisation, shuffling and augmentation", min=0),
    # speed
    "device": Spec(str, "auto", "auto (cuda if available), cpu, cuda, cuda:N or mps"),
    "amp": _c("auto", "mixed precision: auto (bf16/fp16 on CUDA, off on CPU), bf16, fp16 or off",
              ("auto", "bf16", "fp16", "off")),
    "channels_last": _c("auto", "CNN memory format: auto (on for CUDA), on or off", ("auto", "on", "off")),
    "compile": Spec(bool, False, "torch.compile the model"),
    "num_threads": Spec(int, 0, "CPU threads (0: from the CPU limit / OMP_NUM_THREADS)", min=0, max=1024),
    "eval_batch_size": Spec(int, 1024, "batch size for evaluation", min=1),
    "dist_timeout": Spec(float, 900.0, "multi-process trials: seconds a rank waits for the others (start-up and "
                                       "every exchange) before failing", min=1.0, max=86_400.0),
    # gradient-based cell search (mode gradient-search)
    "search_method": _c("gdas", "gdas (Gumbel-softmax, one sampled operation per edge) or darts (softmax "
                                "mixture, first order; known to collapse in long searches)", SEARCH_METHODS),
    "arch_lr": Spec(float, 0.003, "gradient-search: Adam learning rate of the architecture weights",
                    min=1e-6, max=1.0),
    "arch_warmup": Spec(float, 0.5, "gradient-search: share of the epochs that train only the network weights "
                                    "(operations sampled uniformly) before the architecture weights learn",
                        min=0.0, max=0.9),
    "arch_fraction": Spec(float, 0.5, "gradient-search: share of the training split that trains the "
                                      "architecture weights (the rest trains the network weights)",
                          min=0.1, max=0.9),
    # one-shot NAS (mode supernet-train / supernet-eval)
    "supernet_space": Spec(dict, None, "supernet-train: values per elastic dimension (stages, blocks, width, "
                                       "kernel_size, expansion), e.g. {\"blocks\": [1, 2]}; others stay fixed",
                           nullable=True),
    "supernet": Spec(str, None, "supernet-eval: the supernet checkpoint (supernet.pt or the directory holding it)",
                     nullable=True),
    "subnets": Spec(list, None, "supernet-eval: subnets to evaluate in one trial (a list of objects of the elastic "
                                "dimensions); unset: the one subnet the parameters describe", nullable=True),
    "bn_recalibration_batches": Spec(int, 20, "supernet modes: training batches that re-estimate a subnet's "
                                              "batch-norm statistics before it is evaluated", min=1, max=1000),
    # compression
    "prune": _c("none", "none, unstructured (global magnitude) or structured (removes internal channels by L2 norm)",
                ("none", "unstructured", "structured")),
    "prune_amount": Spec(float, 0.5, "fraction of weights (unstructured) or channels (structured) pruned",
                         min=0.0, max=0.99),
    "finetune_epochs": Spec(int, 2, "fine-tuning epochs after pruning", min=0, max=1000),
    "finetune_lr_scale": Spec(float, 0.1, "fine-tuning learning rate as a fraction of lr", min=1e-6, max=10.0),
    "quantize": _c("none", "int8 post-training quantization: none, int8 (dynamic for MLP, static for CNN), "
                           "dynamic or static", ("none", "int8", "dynamic", "static")),
    "calibration_batches": Spec(int, 8, "static quantization: calibration batches", min=1, max=1000),
    "teacher": Spec(str, None, "distil from this checkpoint (a model.pt or the output directory holding it)",
                    nullable=True),
    "distill_temperature": Spec(float, 4.0, "distillation temperature", min=0.01, max=100.0),
    "distill_alpha": Spec(float, 0.5, "weight of the distillation loss (1 - alpha for the labels)", min=0.0, max=1.0),
    # cost measurement
    "latency_repeats": Spec(int, 50, "batch-1 forwards timed for latency_ms (median)", min=1, max=100_000),
    "latency_warmup": Spec(int, 10, "untimed warm-up forwards before timing", min=0, max=10_000),
    "latency_threads": Spec(int, 0, "CPU threads for latency_ms (0: the CPU limit rounded down, 1 without one)",
                            min=0, max=1024),
}


def _coerce(name: str, spec: Spec, value: Any) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"parameter {name!r} must not be null")
    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"parameter {name!r} must be true or false, got {value!r}")
    if spec.kind is int:
        # Search spaces and ${parameters.X} substitution may deliver 3.0 or "3".
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not number.is_integer():
            raise ConfigError(f"parameter {name!r} must be an integer, got {value!r}")
        value = int(number)
    elif spec.kind is float:
        try:
            value = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"parameter {name!r} must be a finite number")
    elif spec.kind in (dict, list):
        if isinstance(value, str):  # ${parameters.X} substitution delivers JSON text
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = None
        if not isinstance(value, spec.kind):
            kind = "an object" if spec.kind is dict else "a list"
            raise ConfigError(f"parameter {name!r} must be {kind} (JSON), got {value!r}")
        return value
    elif spec.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"parameter {name!r} must be a string, got {value!r}")
        if spec.choices is not None:
            value = value.lower()
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(str(c) for c in spec.choices)
        raise ConfigError(f"parameter {name!r} must be one of {allowed}; got {value!r}")
    if spec.min is not None and value < spec.min:
        raise ConfigError(f"parameter {name!r} must be ≥ {spec.min}, got {value}")
    if spec.max is not None and value > spec.max:
        raise ConfigError(f"parameter {name!r} must be ≤ {spec.max}, got {value}")
    return value


def defaults() -> dict[str, Any]:
    """Every parameter at its default value."""
    return {name: spec.default for name, spec in SPECS.items()}


def parse(params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``params`` against :data:`SPECS` and fill in defaults.

    Raises:
        ConfigError: an unknown parameter (with the closest known name) or a bad value.
    """
    unknown = sorted(set(params) - set(SPECS))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), SPECS, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown parameter {', '.join(hints)}; see docs/trial.md for the list")
    config = defaults()
    for name, value in params.items():
        config[name] = _coerce(name, SPECS[name], value)
    device = config["device"].lower()
    if device not in ("auto", "cpu", "cuda", "mps") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise ConfigError(f"parameter 'device' must be auto, cpu, cuda, cuda:N or mps; got {config['device']!r}")
    config["device"] = device
    _check_cell(config, set(params))
    _check_supernet(config, set(params))
    return config


def _check_cell(config: dict[str, Any], given: set[str]) -> None:
    """The rules that tie ``mode``, ``model`` and ``cell`` together; normalises the architecture string."""
    from kubenas_trial.nb201 import ArchError, format_arch, parse_arch

    if config["cell"] is not None:
        try:
            config["cell"] = format_arch(parse_arch(config["cell"], "cell"))
        except ArchError as exc:
            raise ConfigError(str(exc)) from None
    if config["mode"] == "gradient-search":
        for name in _NOT_IN_SEARCH:
            if name in given and config[name] != SPECS[name].default:
                raise ConfigError(f"parameter {name!r} does not apply with mode 'gradient-search' "
                                  "(the search derives a cell; train it with 'cell' in an ordinary trial)")
        if config["model"] not in ("auto", "cell"):
            raise ConfigError(f"parameter 'model' must be auto or cell with mode 'gradient-search', "
                              f"got {config['model']!r}")
        return
    for name in SEARCH_ONLY:
        if name in given:
            raise ConfigError(f"parameter {name!r} applies only with mode 'gradient-search'")
    if config["cell"] is not None and config["model"] not in ("auto", "cell"):
        raise ConfigError(f"parameter 'cell' builds a cell network: 'model' must be auto or cell, "
                          f"got {config['model']!r}")
    if config["model"] == "cell" and config["cell"] is None:
        raise ConfigError("parameter 'cell' is required with model 'cell' (an architecture string "
                          "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|)")


def _check_supernet(config: dict[str, Any], given: set[str]) -> None:
    """The rules of the supernet modes: their own parameters, and what a supernet cannot do."""
    mode = config["mode"]
    for name, modes in SUPERNET_ONLY.items():
        if name in given and mode not in modes:
            raise ConfigError(f"parameter {name!r} applies only with mode {' or '.join(repr(m) for m in modes)}")
    if not mode.startswith("supernet-"):
        return
    for name, allowed in _NOT_IN_SUPERNET.items():
        if config[name] != allowed:
            raise ConfigError(f"parameter {name!r} does not apply with mode {mode!r} (a supernet is one elastic CNN; "
                              "retrain a chosen subnet as an ordinary trial to compress or distil it)")
    if config["model"] not in ("auto", "cnn"):
        raise ConfigError(f"parameter 'model' must be auto or cnn with mode {mode!r}, got {config['model']!r}")
    if mode == "supernet-eval" and not config["supernet"]:
        raise ConfigError("parameter 'supernet' is required with mode 'supernet-eval' (the supernet-train "
                          "trial's supernet.pt, or its output directory)")
