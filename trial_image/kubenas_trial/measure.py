"""``python -m kubenas_trial.measure``: measure a trained trial's latency again, from its artifacts.

kubenas runs this after a trial whose ``latency_ms`` stayed noisy (and, with
``costMeasurement.remeasure: Always``, after every trial), as a short process or Job of its
own: the model the trial wrote (``model.pt``, rebuilt int8 when it was quantized) is timed
exactly as the trial timed it (same repeats and warm-up from ``architecture.json``, threads
from this process's CPU limit, :func:`kubenas_trial.cost.measure_latency`), and the
``latency_*`` metrics go to the termination log. No data, no training: seconds.

Exit codes: 0 measured, 2 no usable model in the directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubenas_trial.sdk import DEFAULT_TERMINATION_LOG, TERMINATION_LOG_ENV, encode_result, write_atomically

if TYPE_CHECKING:
    import torch
    from torch import nn

MODEL_DIR_ENV = "KUBENAS_MODEL_DIR"
EXIT_MEASURED, EXIT_NO_MODEL = 0, 2


def _settings(directory: Path) -> dict[str, Any]:
    """The trial's parameters (defaults filled in) from its architecture.json, or the defaults."""
    from kubenas_trial.config import defaults

    try:
        saved = json.loads((directory / "architecture.json").read_text(encoding="utf-8")[:1_000_000])
        parameters = saved.get("parameters") if isinstance(saved, dict) else None
    except (OSError, ValueError):
        parameters = None
    return defaults() | (parameters if isinstance(parameters, dict) else {})


def final_model(directory: Path, device_name: str = "auto",
                channels_last: str = "auto") -> tuple[nn.Module, torch.Tensor]:
    """The model the trial ended with (int8 when it was quantized) and a batch-1 input on its device.

    Raises:
        ConfigError: no kubenas checkpoint in ``directory``.
    """
    import torch

    from kubenas_trial import artifacts, compress, runtime
    from kubenas_trial.config import ConfigError

    field = f"--model {directory}"
    float_model, data = artifacts.load_model(directory, field)
    example = torch.zeros(1, *data["input_shape"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notices about quantized storages
            final = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ConfigError(f"{field}: cannot load model.pt: {exc}") from exc
    kind = final.get("quantization") if isinstance(final, dict) else None
    if not kind:
        device = runtime.select_device(device_name)
        model, example = float_model.to(device), example.to(device)
        if runtime.use_channels_last(channels_last, device, example.dim() == 4):  # as the trainer ran it
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes memory_format; torch's overloads leave it out
            example = example.contiguous(memory_format=torch.channels_last)
        return model, example
    # Quantize the float twin again to get the same graph, then load the trial's int8 weights,
    # scales and zero points over it: the calibration batch only shapes observers we overwrite.
    quantized = compress.quantize(float_model, kind, [example], example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized.load_state_dict(final["state_dict"])
    return quantized, example


def _timed(model: nn.Module, example: torch.Tensor, settings: dict[str, Any]) -> dict[str, float]:
    """The ``latency_*`` metrics of ``model`` on ``example``, with the trial's repeats, warm-up and thread rule."""
    from kubenas_trial import cost, runtime

    threads = runtime.latency_threads(int(settings["latency_threads"]), runtime.cpu_quota(), runtime.usable_cpus())
    latency = cost.measure_latency(model, example, threads, int(settings["latency_repeats"]),
                                   int(settings["latency_warmup"]))
    return latency.metrics()


def measure(directory: Path) -> dict[str, float]:
    """The ``latency_*`` metrics of the trial model in ``directory``, measured now."""
    settings = _settings(directory)
    model, example = final_model(directory, str(settings["device"]), str(settings["channels_last"]))
    return _timed(model, example, settings)


FRESH_PROCESS_TIMEOUT_SECONDS = 600


def measure_in_fresh_process(float_model: nn.Module, final: nn.Module, quantization: str | None,
                             config: dict[str, Any], input_shape: tuple[int, ...],
                             num_classes: int) -> dict[str, float]:
    """The trial's own latency measurement: this module run in a new process on the saved model.

    A process that has trained carries torch state that slows small int8 forwards by up to
    3x (thread pools sized for training, allocator state), and a later re-measurement runs in
    a fresh process: measuring fresh here too keeps every latency of an experiment comparable.
    Falls back to measuring in this process when the child fails (the reason goes to stderr).
    """
    import torch

    from kubenas_trial import artifacts, runtime
    from kubenas_trial.config import defaults

    with tempfile.TemporaryDirectory(prefix="kubenas-latency-") as tmp:
        directory = Path(tmp)
        torch.save(artifacts.checkpoint(final, config, input_shape, num_classes, quantization), directory / "model.pt")
        if quantization is not None:
            torch.save(artifacts.checkpoint(float_model, config, input_shape, num_classes),
                       directory / "model_float.pt")
        (directory / "architecture.json").write_text(json.dumps({"parameters": config}, default=str))
        result = directory / "latency.json"
        env = {**os.environ, TERMINATION_LOG_ENV: str(result)}
        try:
            done = subprocess.run([sys.executable, "-m", "kubenas_trial.measure", "--model", str(directory)],
                                  env=env, capture_output=True, text=True, timeout=FRESH_PROCESS_TIMEOUT_SECONDS,
                                  check=False)
            if done.returncode == EXIT_MEASURED:
                metrics: dict[str, float] = json.loads(result.read_text()[:4096])
                return metrics
            reason = (done.stderr or "").strip()[-500:]
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            reason = str(exc)
    print(f"kubenas-trial: latency measured in the training process (fresh process failed: {reason})",
          file=sys.stderr)
    settings = defaults() | config
    device = runtime.select_device(str(settings["device"])) if quantization is None else torch.device("cpu")
    return _timed(final, torch.zeros(1, *input_shape, device=device), settings)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")  # torch's deprecation notices for int8 tensors, once per run
    parser = argparse.ArgumentParser(prog="python -m kubenas_trial.measure",
                                     description="Measure a trained trial's latency again from its artifacts.")
    parser.add_argument("--model", default=os.environ.get(MODEL_DIR_ENV),
                        help=f"the trial's artifact directory (default ${MODEL_DIR_ENV})")
    args = parser.parse_args(argv)
    if not args.model:
        print(f"kubenas-measure: error: no model directory (--model or ${MODEL_DIR_ENV})", file=sys.stderr)
        return EXIT_NO_MODEL
    if not Path(args.model, "model.pt").is_file():  # before torch's import: a stub trial's output says no at once
        print(f"kubenas-measure: error: --model {args.model}: no model.pt there", file=sys.stderr)
        return EXIT_NO_MODEL
    from kubenas_trial.config import ConfigError

    try:
        metrics = measure(Path(args.model))
    except ConfigError as exc:
        print(f"kubenas-measure: error: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    write_atomically(os.environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG, encode_result(metrics))
    print(f"kubenas-measure: {json.dumps(metrics)}")
    return EXIT_MEASURED


if __name__ == "__main__":
    sys.exit(main())
