"""The supernet modes of ``python -m kubenas_trial``: train a weight-sharing supernet, evaluate subnets from it.

``mode: supernet-train`` trains :class:`~kubenas_trial.supernet.Supernet` over ``supernet_space``
and writes ``supernet.pt`` to the output directory. ``mode: supernet-eval`` loads it
(``supernet``) and evaluates one subnet (the elastic parameters, as an ordinary trial takes them)
or a batch (``subnets``), each with inherited weights after batch-norm recalibration. See
docs/trial.md for the results.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from kubenas_trial import artifacts, cost, data, models, runtime, supernet
from kubenas_trial.config import ConfigError, parse
from kubenas_trial.sdk import TrialReporter
from kubenas_trial.train import Trainer

FORMAT = "kubenas-supernet/1"
CHECKPOINT = "supernet.pt"
BATCH_FILE = "subnets.json"
MAX_SUBNETS = 16
"""Subnets one supernet-eval trial evaluates at most: their metrics must fit in the 4 KiB result."""
BATCH_METRICS = ("accuracy", "loss", "params", "log10_params", "flops", "latency_ms", "latency_noisy")
"""Each subnet's metrics in a batch result, as ``"<index>.<metric>"``; subnets.json holds them all."""
INHERITED_KEYS = ("dataset", "data_dir", "val_fraction", "test_fraction", "split_seed", "max_train_samples",
                  "image_size", *(k for k in models.ARCHITECTURE_KEYS if k not in supernet.ELASTIC_KEYS))
"""Parameters supernet-eval takes from the checkpoint unless given: the data and the fixed architecture."""


def _log(stream: TextIO, message: str) -> None:
    print(f"kubenas-trial: {message}", file=stream, flush=True)


def _setup(config: dict[str, Any]) -> tuple[torch.device, data.Dataset]:
    torch.set_num_threads(runtime.thread_count(config["num_threads"]))
    device = runtime.select_device(config["device"])
    torch.manual_seed(config["seed"])
    dataset = data.load(config)
    if not dataset.is_image:
        raise ConfigError(f"mode {config['mode']!r} needs image data (the supernet is a CNN); "
                          f"dataset {config['dataset']!r} is tabular")
    return device, dataset


def run(params: dict[str, Any], config: dict[str, Any], reporter: TrialReporter,
        log: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the supernet mode ``config['mode']`` names; ``params`` are the parameters as given.

    Raises:
        ConfigError: a bad parameter, subnet or checkpoint (exit code 2).
        data.DataError: the dataset is missing or malformed (exit code 3).
    """
    if config["mode"] == "supernet-train":
        return train(config, reporter, log)
    return evaluate(params, config, reporter, log)


def train(config: dict[str, Any], reporter: TrialReporter, log: TextIO = sys.stdout) -> dict[str, Any]:
    """Train the supernet, report each epoch, write ``supernet.pt`` to the output directory."""
    started = time.perf_counter()
    out = artifacts.output_dir()
    if out is None:
        raise ConfigError(f"mode 'supernet-train' writes {CHECKPOINT} to the output directory: set "
                          f"{artifacts.OUTPUT_DIR_ENV}")
    space = supernet.make_space(config, config["supernet_space"])
    device, dataset = _setup(config)
    net = supernet.Supernet(dataset.input_shape[0], dataset.num_classes, config, space)
    _log(log, f"supernet of {space.size()} subnets {dict(space.choices)} params={models.count_parameters(net)} "
              f"device={runtime.device_name(device)}")
    trainer = Trainer(net, dataset, config, device)
    calibration = supernet.calibration_set(trainer, config["bn_recalibration_batches"])
    reporter.final_step(config["epochs"])

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        reporter.report(epoch, metrics)
        _log(log, f"epoch {epoch} " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    result = supernet.train(trainer, net, config["epochs"], calibration, on_epoch)
    largest = space.largest()
    val_loss, val_acc = supernet.evaluate(trainer, net, largest, calibration)
    with supernet.running(net, largest):
        test_loss, test_acc = trainer.evaluate("test", net)
    final = {
        "accuracy": val_acc, "test_accuracy": test_acc, "loss": val_loss, "test_loss": test_loss,
        "accuracy_smallest": result.history[-1]["accuracy_smallest"],
        "params": models.count_parameters(net), "flops": cost.flops(net.extract(largest), dataset.x_val[:1].to(device)),
        "subnets": space.size(), "epochs": config["epochs"], "train_seconds": result.seconds,
        "samples_per_second": result.samples / result.seconds if result.seconds > 0 else 0.0,
        "wall_seconds": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save({
        "format": FORMAT, "space": {k: list(v) for k, v in space.choices.items()},
        "parameters": {k: config[k] for k in INHERITED_KEYS}, "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes, "state_dict": net.net.state_dict(),
    }, tmp)
    os.replace(tmp, path)
    artifacts.write_json(out / "metrics.json", {"metrics": final, "history": result.history,
                                                 "data": dataset.summary(), "space": dict(space.choices)})
    _log(log, f"wrote {path}")
    reporter.report(config["epochs"], final)
    return reporter.finish(final)


def load(path: str | Path, device: torch.device) -> tuple[supernet.Supernet, dict[str, Any]]:
    """The supernet of a checkpoint written by :func:`train` (the file, or the directory holding it)."""
    file = Path(path)
    if file.is_dir():
        file = file / CHECKPOINT
    if not file.is_file():
        raise ConfigError(f"parameter 'supernet': no supernet checkpoint at {file}")
    saved = artifacts.read_checkpoint(file, "parameter 'supernet'", FORMAT, "kubenas supernet checkpoint")
    config = parse(saved["parameters"])
    net = supernet.Supernet(saved["input_shape"][0], saved["num_classes"], config,
                            supernet.make_space(config, saved["space"]))
    net.net.load_state_dict(saved["state_dict"])
    return net.to(device), saved


def _subnets(params: dict[str, Any], config: dict[str, Any], space: supernet.Space) -> list[supernet.Subnet]:
    if config["subnets"] is None:
        return [space.check({k: params[k] for k in supernet.ELASTIC_KEYS if k in params}, "parameters")]
    given = [k for k in supernet.ELASTIC_KEYS if k in params]
    if given:
        raise ConfigError(f"parameter {given[0]!r} cannot be given with 'subnets' (each subnet names its own)")
    if not 1 <= len(config["subnets"]) <= MAX_SUBNETS:
        raise ConfigError(f"parameter 'subnets' must hold 1 to {MAX_SUBNETS} subnets, got {len(config['subnets'])}")
    return [space.check(s, f"subnets[{i}]") for i, s in enumerate(config["subnets"])]


def subnet_metrics(trainer: Trainer, net: supernet.Supernet, subnet: supernet.Subnet,
                   calibration: list[torch.Tensor], test: bool = True) -> tuple[dict[str, float], models.CNN]:
    """A subnet's final metrics with inherited weights, named as an ordinary trial's; and its standalone model.

    Without ``test`` the test split is not evaluated (``test_accuracy``, ``test_loss`` left out).
    """
    config = trainer.config
    val_loss, val_acc = supernet.evaluate(trainer, net, subnet, calibration)
    test_loss = test_acc = None
    if test:
        with supernet.running(net, subnet):
            test_loss, test_acc = trainer.evaluate("test", net)
    scores = {"accuracy": val_acc, "test_accuracy": test_acc, "loss": val_loss, "test_loss": test_loss}
    model = net.extract(subnet).eval()
    example = trainer.data.x_val[:1].to(trainer.device)
    params, nonzero = cost.parameter_counts(model)
    flops, sparse_flops = cost.flop_counts(model, example)
    if trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes memory_format; torch's overloads leave it out
        example = example.contiguous(memory_format=torch.channels_last)
    threads = runtime.latency_threads(config["latency_threads"], runtime.cpu_quota(), runtime.usable_cpus())
    latency = cost.measure_latency(model, example, threads, config["latency_repeats"], config["latency_warmup"])
    return {
        **{name: value for name, value in scores.items() if value is not None},
        "params": params, "nonzero_params": nonzero, "log10_params": math.log10(max(nonzero, 1)),
        "flops": flops, "sparse_flops": sparse_flops, **latency.metrics(), "model_size_bytes": cost.size_bytes(model),
        # Nothing is trained here; the supernet's training is its own trial's.
        "epochs": 0, "train_seconds": 0.0, "samples_per_second": 0.0,
    }, model


def evaluate(params: dict[str, Any], config: dict[str, Any], reporter: TrialReporter,
             log: TextIO = sys.stdout) -> dict[str, Any]:
    """Evaluate the subnet the parameters describe, or each of ``subnets``, with inherited weights."""
    started = time.perf_counter()
    net, saved = load(config["supernet"], torch.device("cpu"))
    inherited = saved["parameters"]
    config = parse({**inherited, **params})
    for key in INHERITED_KEYS:
        if key in models.ARCHITECTURE_KEYS and config[key] != inherited[key]:
            raise ConfigError(f"parameter {key!r} is fixed by the supernet ({inherited[key]!r}); got {config[key]!r}")
    subnets = _subnets(params, config, net.space)
    device, dataset = _setup(config)
    if list(dataset.input_shape) != saved["input_shape"] or dataset.num_classes != saved["num_classes"]:
        raise ConfigError(f"parameter 'supernet': checkpoint is for inputs {saved['input_shape']} with "
                          f"{saved['num_classes']} classes, this dataset has {list(dataset.input_shape)} with "
                          f"{dataset.num_classes}")
    trainer = Trainer(net, dataset, config, device)
    calibration = supernet.calibration_set(trainer, config["bn_recalibration_batches"])
    reporter.final_step(len(subnets))
    out = artifacts.output_dir()
    if config["subnets"] is None:
        subnet = subnets[0]
        final, model = subnet_metrics(trainer, net, subnet, calibration)
        final["wall_seconds"] = time.perf_counter() - started
        reporter.report(1, final)
        written = reporter.finish(final)
        _log(log, f"subnet {subnet} " + " ".join(f"{k}={v:.4g}" for k, v in written.items()))
        if out is not None:
            standalone = supernet.subnet_config(config, subnet)
            architecture = models.describe(model, standalone, dataset.input_shape, dataset.num_classes)
            artifacts.save(out, float_model=model, final_model=model, quantization=None, config=standalone,
                           input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                           architecture=architecture, metrics={"metrics": final, "data": dataset.summary()})
        return written
    records = []
    for i, subnet in enumerate(subnets):
        # A search chooses among these: the test split stays unseen until the chosen ones are retrained.
        metrics, _ = subnet_metrics(trainer, net, subnet, calibration, test=False)
        records.append({"index": i, "subnet": subnet, "metrics": metrics})
        reporter.report(i + 1, {"subnets_evaluated": i + 1})
        _log(log, f"subnet {i} {subnet} accuracy={metrics['accuracy']:.4g} params={metrics['params']} "
                  f"latency_ms={metrics['latency_ms']:.3g}")
    final = batch_result(records, time.perf_counter() - started)
    written = reporter.finish(final)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        artifacts.write_json(out / BATCH_FILE, {"supernet": str(config["supernet"]), "subnets": records})
    return written


def batch_result(records: list[dict[str, Any]], wall_seconds: float) -> dict[str, float]:
    """The termination message of a batch: ``subnets``, then ``"<i>.<metric>"`` for :data:`BATCH_METRICS`."""
    result: dict[str, float] = {"subnets": len(records)}
    for record in records:
        result |= {f"{record['index']}.{name}": record["metrics"][name] for name in BATCH_METRICS}
    result["wall_seconds"] = wall_seconds
    return result
