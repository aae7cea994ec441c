"""One trial end to end: parameters → data → model → training → compression → cost → results."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from typing import Any, TextIO

import numpy as np
import torch

from kubenas_trial import artifacts, checkpoints, compress, cost, data, distributed, measure, models, runtime
from kubenas_trial.config import ConfigError, parse
from kubenas_trial.distributed import Topology
from kubenas_trial.sdk import TrialReporter
from kubenas_trial.train import Trainer, evaluate


def static_costs(model: torch.nn.Module, example: torch.Tensor) -> dict[str, float]:
    """The cost metrics training cannot change, with the names the final result uses.

    Not the nonzero counts: zero-initialised biases become nonzero as the model trains.
    """
    params, _ = cost.parameter_counts(model)
    return {"params": params, "flops": cost.flops(model, example)}


def _log(stream: TextIO, message: str) -> None:
    print(f"kubenas-trial: {message}", file=stream, flush=True)


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(params: dict[str, Any], reporter: TrialReporter, log: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the trial ``params`` describe; report each epoch and the final metrics through ``reporter``.

    Returns the final metrics (numbers only, also written to the termination log).

    Raises:
        ConfigError: a parameter is unknown or bad (exit code 2).
        data.DataError: the dataset is missing or malformed (exit code 3).

    With ``WORLD_SIZE`` > 1 in the environment this process is one rank of a multi-process
    trial (docs/trial.md): all ranks train together and only rank 0 reports and measures.
    """
    started = time.perf_counter()
    config = parse(params)
    if config["mode"].startswith("supernet-"):
        from kubenas_trial import oneshot  # one process: a supernet trains on one device

        return oneshot.run(params, config, reporter, log)
    if config["mode"] == "gradient-search":
        from kubenas_trial import gradient_nas  # one process: the search trains on one device

        return gradient_nas.run(config, reporter, lambda message: _log(log, message))
    topo = distributed.topology()
    threads = runtime.thread_count(config["num_threads"])
    torch.set_num_threads(threads if config["num_threads"] else max(1, threads // topo.nproc_per_node))
    device = distributed.local_device(runtime.select_device(config["device"]), topo)
    with distributed.process_group(topo, device, config["dist_timeout"]):
        return _run(config, topo, device, reporter, log, started)


def _run(config: dict[str, Any], topo: Topology, device: torch.device, reporter: TrialReporter, log: TextIO,
         started: float) -> dict[str, Any]:
    seed_everything(config["seed"])
    dataset = data.load(config)
    kind = models.model_kind(config, dataset.input_shape)
    if kind != "mlp" and not dataset.is_image:
        raise ConfigError(f"parameter 'model' is {kind!r} but dataset {config['dataset']!r} is tabular; use 'mlp'")
    model = models.build_model(config, dataset.input_shape, dataset.num_classes)
    teacher = None
    if config["teacher"]:
        teacher, meta = artifacts.load_model(config["teacher"])
        if tuple(meta["input_shape"]) != dataset.input_shape or meta["num_classes"] != dataset.num_classes:
            raise ConfigError(
                f"parameter 'teacher': checkpoint is for inputs {meta['input_shape']} with {meta['num_classes']} "
                f"classes, this dataset has {list(dataset.input_shape)} with {dataset.num_classes}"
            )
    run_info = runtime.summary(config, device)
    names = " ".join(f"{k}={os.environ[v]}" for k, v in (("experiment", "KUBENAS_EXPERIMENT"),
                                                          ("trial", "KUBENAS_TRIAL")) if os.environ.get(v))
    rank = f" rank={topo.rank}/{topo.world_size}" if topo.distributed else ""
    _log(log, f"{names + ' ' if names else ''}device={run_info['device']} amp={run_info['amp']} "
              f"torch={run_info['torch']}{rank}")
    if topo.is_main:
        _log(log, f"data {_fmt(dataset.summary())}")
        _log(log, f"model {kind} params={models.count_parameters(model)}" + (" (distilling)" if teacher else ""))

    pruned = config["prune"] != "none"
    last_step = config["epochs"] + (config["finetune_epochs"] if pruned else 0)
    reporter.final_step(last_step)
    resume = checkpoints.Resume(config, topo, last_step)
    resume.restore_model(model)
    if resume.epoch:
        _log(log, f"resuming after epoch {resume.epoch} from {checkpoints.FILE_NAME} ({resume.phase})")
    elif not pruned and topo.is_main:
        # Known before training and final (nothing prunes the model): an experiment whose constraint on
        # them has stopEarly ends an infeasible trial now instead of after training it.
        reporter.report(0, static_costs(model, dataset.x_val[:1].cpu()))  # the model is still on the CPU
    trainer = Trainer(model, dataset, config, device, teacher=teacher, topo=topo)
    resume.restore_rng(trainer)
    history, extra, result = resume.history, resume.extra, resume.result  # a resumed run continues them

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        reporter.report(epoch, metrics)
        history.append({"epoch": epoch, **metrics})
        if topo.is_main:
            _log(log, f"epoch {epoch} {_fmt(metrics)}")

    if resume.phase != "finetune":
        trainer.fit(config["epochs"], on_epoch, restart=resume.restart("train", 1),
                    after_epoch=resume.saver("train", trainer), result=result)

    if pruned:
        if resume.phase != "finetune":  # else the checkpoint holds the pruned, partly fine-tuned model
            extra["accuracy_before_prune"] = trainer.evaluate("val", trainer.model)[1]
            compress.apply_pruning(trainer.model, config["prune"], config["prune_amount"])
            if trainer.channels_last:  # structured pruning created new layers
                trainer.model.to(memory_format=torch.channels_last)
            compress.recalibrate_batchnorm(trainer.model, (xb for xb, _ in trainer.batches()))
            extra["accuracy_before_finetune"] = trainer.evaluate("val", trainer.model)[1]
        if config["finetune_epochs"]:
            # Fine-tune eagerly: pruning hooks and replaced layers would defeat a compiled graph.
            first = config["epochs"] + 1
            trainer.fit(config["finetune_epochs"], on_epoch, first_epoch=first,
                        lr_scale=config["finetune_lr_scale"], model=trainer.model, warmup=False,
                        restart=resume.restart("finetune", first), after_epoch=resume.saver("finetune", trainer),
                        result=result)
            compress.recalibrate_batchnorm(trainer.model, (xb for xb, _ in trainer.batches()))
        compress.make_permanent(trainer.model)
        extra["accuracy_after_finetune"] = trainer.evaluate("val", trainer.model)[1]

    float_model = trainer.model.eval()
    params_total, nonzero = cost.parameter_counts(float_model)
    example = dataset.x_val[:1]
    flop_count, sparse_flops = cost.flop_counts(float_model, example.to(device))
    val_loss, val_acc = trainer.evaluate("val", trainer.model)
    test_loss, test_acc = trainer.evaluate("test", trainer.model)  # once, on the final float model
    if not topo.is_main:
        return {}  # rank 0 measures the model and reports for the trial
    final_model = float_model
    latency_device = device
    qkind = compress.quantization_kind(config["quantize"], kind != "mlp")
    if qkind is not None:
        extra["accuracy_float"] = val_acc
        extra["model_size_bytes_float"] = cost.size_bytes(float_model)
        calibration = compress.calibration_batches(dataset.x_train, config["calibration_batches"],
                                                   min(config["batch_size"], 256), config["seed"])
        final_model = compress.quantize(float_model, qkind, calibration, example)
        cpu = torch.device("cpu")
        val_loss, val_acc = evaluate(final_model, dataset.x_val, dataset.y_val, cpu, config["eval_batch_size"])
        test_loss, test_acc = evaluate(final_model, dataset.x_test, dataset.y_test, cpu, config["eval_batch_size"])
        latency_device = cpu  # int8 kernels run on the CPU
    latency = measure.measure_in_fresh_process(float_model, final_model, qkind, config, dataset.input_shape,
                                               dataset.num_classes)

    final: dict[str, Any] = {
        "accuracy": val_acc,
        "test_accuracy": test_acc,
        "loss": val_loss,
        "test_loss": test_loss,
        "params": params_total,
        "nonzero_params": nonzero,
        "log10_params": math.log10(max(nonzero, 1)),  # for weighted objectives: α·accuracy − β·log(size)
        "flops": flop_count,
        "sparse_flops": sparse_flops,
        **latency,
        "model_size_bytes": cost.size_bytes(final_model),
        **extra,
        "epochs": last_step,
        "train_seconds": result.seconds,
        "samples_per_second": result.samples_per_second,
        "wall_seconds": time.perf_counter() - started,
    }
    reporter.report(last_step, final)
    written = reporter.finish(final)
    _log(log, f"final {_fmt(written)}")

    out = artifacts.output_dir()
    if out is not None:
        architecture = models.describe(float_model, config, dataset.input_shape, dataset.num_classes)
        architecture["compression"] = compress.summary(config)
        architecture["quantization"] = qkind
        report = {
            "metrics": final, "history": history, "data": dataset.summary(),
            "runtime": {**run_info, "latency_device": runtime.device_name(latency_device)},
        }
        files = artifacts.save(out, float_model=float_model, final_model=final_model, quantization=qkind,
                               config=config, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                               architecture=architecture, metrics=report)
        _log(log, "wrote " + ", ".join(str(f) for f in files))
    return written


def describe_parameters() -> str:
    """The parameter table as JSON (``python -m kubenas_trial --list-parameters``)."""
    from kubenas_trial.config import SPECS

    table = {name: {"type": spec.kind.__name__, "default": spec.default, "help": spec.help,
                    **({"choices": list(spec.choices)} if spec.choices else {}),
                    **({"min": spec.min} if spec.min is not None else {}),
                    **({"max": spec.max} if spec.max is not None else {})}
             for name, spec in SPECS.items()}
    return json.dumps(table, indent=2)
