"""The training loop: batches from on-device tensors, optimizers, schedules, AMP, distillation, evaluation."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, TensorDataset

from kubenas_trial import distributed, runtime
from kubenas_trial.data import Dataset
from kubenas_trial.distributed import SINGLE, Topology

EpochCallback = Callable[[int, dict[str, float]], None]
SaveCallback = Callable[[int, torch.optim.Optimizer, dict[str, float]], None]


def make_optimizer(model: nn.Module, config: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum), Adam or AdamW; no weight decay on biases and normalisation parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    lr, momentum = config["lr"], config["momentum"]
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    cls = torch.optim.Adam if config["optimizer"] == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=(momentum, 0.999))


def lr_factor(config: dict[str, Any], epochs: int) -> Callable[[float], float]:
    """The learning-rate multiplier as a function of (fractional) epoch: linear warm-up, then the schedule."""
    warmup = config["warmup_epochs"]

    def factor(epoch: float) -> float:
        if warmup > 0 and epoch < warmup:
            return (epoch + 1e-3) / warmup
        if config["schedule"] == "cosine":
            span = max(epochs - warmup, 1e-9)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch - warmup) / span)))
        if config["schedule"] == "step":
            return config["gamma"] ** int((epoch - warmup) // config["step_size"])
        return 1.0

    return factor


def random_translate(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding (a random shift of up to ``padding`` pixels per sample)."""
    n, _c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator, device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    mask = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


@dataclass
class Batches:
    """Shuffled mini-batches drawn from tensors that stay on the device (or pinned host memory).

    A final batch of a single sample is dropped: batch normalisation cannot train on it.
    """

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    device: torch.device
    generator: torch.Generator

    def __len__(self) -> int:
        n = len(self.y)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest > 1 else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.y), generator=self.generator, device=self.generator.device)
        return _minibatches(self.x, self.y, order.to(self.x.device), self.batch_size, len(self), self.device)


def _minibatches(x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int, count: int,
                 device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(count):
        idx = order[i * batch_size : (i + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        if xb.device != device:
            xb = xb.pin_memory().to(device, non_blocking=True)
            yb = yb.pin_memory().to(device, non_blocking=True)
        yield xb, yb


class ShardedBatches:
    """One rank's mini-batches of a multi-process run: its :class:`DistributedSampler` shard of each epoch.

    Every rank gets the same number of samples (the sampler pads with repeats), hence the same
    number of batches: no rank waits at a gradient all-reduce that another never reaches. Each
    epoch's order depends only on ``seed`` and the epoch (:meth:`set_epoch`), so a resumed run
    draws the same batches as an uninterrupted one.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
                 topo: Topology, seed: int) -> None:
        self.x, self.y, self.batch_size, self.device = x, y, batch_size, device
        self.sampler: DistributedSampler[Any] = DistributedSampler(
            TensorDataset(y), num_replicas=topo.world_size, rank=topo.rank, shuffle=True, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.sampler.num_samples, self.batch_size)
        return full + (1 if rest > 1 else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long, device=self.x.device)
        return _minibatches(self.x, self.y, order, self.batch_size, len(self), self.device)


def place(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Put a split on the accelerator when it fits comfortably, else leave it in host memory."""
    if device.type != "cuda":
        return tensor.to(device)
    free, _total = torch.cuda.mem_get_info(device)
    return tensor.to(device) if tensor.numel() * tensor.element_size() < free // 4 else tensor


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 1024,
    amp: torch.dtype | None = None, channels_last: bool = False,
) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of ``model`` on ``x``, ``y``."""
    loss, correct, n = evaluation_sums(model, x, y, device, batch_size, amp, channels_last)
    return loss / max(n, 1), correct / max(n, 1)


@torch.no_grad()
def evaluation_sums(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 1024,
    amp: torch.dtype | None = None, channels_last: bool = False,
) -> tuple[float, int, int]:
    """(summed cross-entropy loss, correct predictions, samples) of ``model`` on ``x``, ``y``."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for start in range(0, len(y), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        yb = y[start : start + batch_size].to(device, non_blocking=True)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = model(xb)
        total_loss += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    return total_loss.item(), int(correct.item()), len(y)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: KL(teacher‖student) at ``temperature``, scaled by T²."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
        reduction="batchmean", log_target=True,
    ) * (t * t)


@dataclass
class Restart:
    """Where an interrupted :meth:`Trainer.fit` continues: epochs done, optimizer and loss-scaler state after them."""

    done: int
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None = None


@dataclass
class TrainResult:
    """What a training phase did."""

    history: list[dict[str, float]] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """Trains a model on a :class:`~kubenas_trial.data.Dataset` as the trainer parameters say.

    Args:
        model: the network (moved to ``device`` here).
        data: the dataset; splits are placed on the device when they fit.
        config: validated trainer parameters.
        device: where to train.
        teacher: optional frozen teacher for knowledge distillation.
        topo: this process's place in a multi-process trial. With several processes each trains
            DistributedDataParallel on its shard of every epoch with ``batch_size / world_size``
            samples per step, so the global batch and the learning-rate schedule are the
            single-process ones; every evaluation covers the whole split, shared out among ranks.
    """

    def __init__(
        self, model: nn.Module, data: Dataset, config: dict[str, Any], device: torch.device,
        teacher: nn.Module | None = None, topo: Topology = SINGLE,
    ) -> None:
        self.config = config
        self.topo = topo
        self.device = device
        self.data = data
        self.amp = runtime.amp_dtype(config["amp"], device)
        self.channels_last = runtime.use_channels_last(config["channels_last"], device, data.is_image)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=memory_format)  # type: ignore[call-overload]  # Module.to takes memory_format; torch's overloads leave it out
        self.forward: nn.Module = self.model
        self.compiled = False
        if config["compile"]:
            if device.type == "cpu" and not runtime.has_cxx_compiler():
                # Inductor generates C++ on CPU; the slim image has no compiler: train eagerly.
                print("kubenas-trial: warning: compile=true ignored, no C++ compiler for torch.compile on CPU",
                      file=sys.stderr)
            else:
                self.compiled = True
                if not topo.distributed:  # else fit compiles the DistributedDataParallel wrapper
                    self.forward = torch.compile(self.model)  # type: ignore[assignment]
        self.teacher = teacher.to(device).eval() if teacher is not None else None
        self.x_train = place(data.x_train, device)
        self.y_train = place(data.y_train, device)
        if self.channels_last:
            self.x_train = self.x_train.contiguous(memory_format=torch.channels_last)
        self.generator = torch.Generator(device=self.x_train.device).manual_seed(config["seed"])
        # Each rank augments its own samples differently.
        self.aug_generator = torch.Generator(device=device).manual_seed(config["seed"] + 1 + topo.rank)
        self.local_batch_size = math.ceil(config["batch_size"] / topo.world_size)
        if topo.is_main and config["batch_size"] % topo.world_size:
            print(f"kubenas-trial: warning: batch_size {config['batch_size']} is not a multiple of the "
                  f"{topo.world_size} processes; each trains on {self.local_batch_size} samples per step",
                  file=sys.stderr)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type) if self.amp == torch.float16 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])

    def batches(self) -> Batches | ShardedBatches:
        """This process's training batches (its shard of each epoch when there are several processes)."""
        if self.topo.distributed:
            return ShardedBatches(self.x_train, self.y_train, self.local_batch_size, self.device, self.topo,
                                  self.config["seed"])
        return Batches(self.x_train, self.y_train, self.config["batch_size"], self.device, self.generator)

    def evaluate(self, split: str = "val", model: nn.Module | None = None) -> tuple[float, float]:
        """(loss, accuracy) on the whole ``val`` or ``test`` split.

        With several processes every rank must call this: each evaluates a slice of the split with
        rank 0's batch-norm statistics, and the sums are added up, so all get the whole split's figures.
        """
        x, y = (self.data.x_val, self.data.y_val) if split == "val" else (self.data.x_test, self.data.y_test)
        net = model if model is not None else self.forward
        args = (self.device, self.config["eval_batch_size"], self.amp, self.channels_last)
        if not self.topo.distributed:
            return evaluate(net, x, y, *args)
        distributed.broadcast_state(net, buffers_only=True)
        size = math.ceil(len(y) / self.topo.world_size)
        part = slice(self.topo.rank * size, (self.topo.rank + 1) * size)
        loss, correct, n = distributed.sum_across(evaluation_sums(net, x[part], y[part], *args), self.device)
        return loss / max(n, 1), correct / max(n, 1)

    def rng_state(self) -> dict[str, torch.Tensor]:
        """Every random stream training draws from (shuffling, augmentation, dropout), for a checkpoint."""
        state = {"torch": torch.get_rng_state(), "shuffle": self.generator.get_state(),
                 "augment": self.aug_generator.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        """Continue the random streams from a :meth:`rng_state`."""
        torch.set_rng_state(state["torch"])
        self.generator.set_state(state["shuffle"])
        self.aug_generator.set_state(state["augment"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision as the ``amp`` parameter resolved on this device (a no-op without it)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def augment(self, xb: torch.Tensor) -> torch.Tensor:
        """A training batch with the configured augmentations applied."""
        if self.config["augment_crop"] and xb.dim() == 4:
            xb = random_translate(xb, self.config["augment_crop"], self.aug_generator)
        if self.config["augment_flip"] and xb.dim() == 4:
            xb = random_flip(xb, self.aug_generator)
        if self.channels_last and (self.config["augment_crop"] or self.config["augment_flip"]):
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def fit(self, epochs: int, on_epoch: EpochCallback | None = None, first_epoch: int = 1,
            lr_scale: float = 1.0, model: nn.Module | None = None, warmup: bool = True,
            restart: Restart | None = None, after_epoch: SaveCallback | None = None,
            result: TrainResult | None = None) -> TrainResult:
        """Train for ``epochs`` epochs, evaluating on the validation split after each one.

        ``on_epoch(epoch, metrics)`` receives ``accuracy`` and ``loss`` (validation) and
        ``train_loss``; epochs are numbered from ``first_epoch``. ``lr_scale`` scales the
        learning rate and ``warmup=False`` skips the warm-up (both for fine-tuning), and
        ``model`` trains another view of the model (e.g. the eager one instead of the compiled one).
        ``restart`` continues an interrupted call after its ``done`` epochs (the model's weights
        and :meth:`rng_state` restored by the caller); ``after_epoch(epoch, optimizer, metrics)``
        precedes ``on_epoch`` (to save a checkpoint). Samples and seconds are added to ``result`` if given.
        """
        eager = model if model is not None else self.model
        net = model if model is not None else self.forward
        evaluated = net
        if self.topo.distributed:
            # The wrapper averages gradients across ranks; evaluation runs on the bare module, rank by rank.
            ddp = DistributedDataParallel(eager, device_ids=[self.device.index] if self.device.type == "cuda"
                                          else None)
            net = torch.compile(ddp) if self.compiled and model is None else ddp  # type: ignore[assignment]
            evaluated = eager
        config = self.config
        optimizer = make_optimizer(self.model, config)
        done = 0
        if restart is not None:
            optimizer.load_state_dict(restart.optimizer)
            if self.scaler is not None and restart.scaler:
                self.scaler.load_state_dict(restart.scaler)
            done = restart.done
        peak = config["lr"] * lr_scale
        batches = self.batches()
        steps = max(len(batches), 1)
        factor = lr_factor(config if warmup else {**config, "warmup_epochs": 0.0}, epochs)
        step = done * steps
        augment = config["augment_crop"] > 0 or config["augment_flip"]
        temperature, alpha = config["distill_temperature"], config["distill_alpha"]
        result = result if result is not None else TrainResult()
        net.train()
        for epoch in range(done, epochs):
            if isinstance(batches, ShardedBatches):
                batches.set_epoch(first_epoch + epoch)
            start = time.perf_counter()
            losses: list[torch.Tensor] = []  # summed once per epoch: no extra kernels per batch
            sizes: list[int] = []
            for xb, yb in batches:
                # Set the scheduled rate directly: LRScheduler wraps optimizer.step, which costs per batch.
                lr = peak * factor(step / steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step += 1
                if augment:
                    xb = self.augment(xb)
                with self.autocast():
                    logits = net(xb)
                    loss = self.criterion(logits, yb)
                    if self.teacher is not None:
                        with torch.no_grad():
                            soft = self.teacher(xb)
                        loss = (1 - alpha) * loss + alpha * distillation_loss(logits, soft, temperature)
                optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    if config["grad_clip"] > 0:
                        self.scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(self.model.parameters(), config["grad_clip"])
                    self.scaler.step(optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    if config["grad_clip"] > 0:
                        nn.utils.clip_grad_norm_(self.model.parameters(), config["grad_clip"])
                    optimizer.step()
                losses.append(loss.detach())
                sizes.append(len(yb))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            result.seconds += time.perf_counter() - start
            weights = torch.tensor(sizes, device=self.device, dtype=torch.float32)
            loss_sum = (torch.stack(losses).float() @ weights).item() if losses else 0.0
            loss_sum, seen = distributed.sum_across([loss_sum, sum(sizes)], self.device)  # every rank's samples
            result.samples += int(seen)
            train_loss = loss_sum / max(seen, 1)
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training diverged in epoch {first_epoch + epoch}: loss is {train_loss}")
            val_loss, val_acc = self.evaluate("val", evaluated)
            net.train()
            metrics = {"accuracy": val_acc, "loss": val_loss, "train_loss": train_loss}
            result.history.append(metrics)
            if after_epoch is not None:  # before the report: a step once reported is never reported again
                after_epoch(first_epoch + epoch, optimizer, metrics)
            if on_epoch is not None:
                on_epoch(first_epoch + epoch, metrics)
        net.eval()
        return result
