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

from kubenas_trial import runtime
from kubenas_trial.data import Dataset

EpochCallback = Callable[[int, dict[str, float]], None]


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
        order = order.to(self.x.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            if xb.device != self.device:
                xb = xb.pin_memory().to(self.device, non_blocking=True)
                yb = yb.pin_memory().to(self.device, non_blocking=True)
            yield xb, yb


def place(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Put a split on the accelerator when it fits comfortably, else leave it in host memory."""
    if device.type != "cuda":
        return tensor.to(device)
    free, _total = torch.cuda.mem_get_info(device)
    return tensor.to(device) if tensor.numel() * tensor.element_size() < free // 4 else tensor


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 1024,
    amp: torch.dtype | None = None, channels_last: bool = False,
) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of ``model`` on ``x``, ``y``."""
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
    n = max(len(y), 1)
    return total_loss.item() / n, correct.item() / n


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: KL(teacher‖student) at ``temperature``, scaled by T²."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
        reduction="batchmean", log_target=True,
    ) * (t * t)


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
    """

    def __init__(
        self, model: nn.Module, data: Dataset, config: dict[str, Any], device: torch.device,
        teacher: nn.Module | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.data = data
        self.amp = runtime.amp_dtype(config["amp"], device)
        self.channels_last = runtime.use_channels_last(config["channels_last"], device, data.is_image)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=memory_format)
        self.forward: nn.Module = self.model
        self.compiled = False
        if config["compile"]:
            if device.type == "cpu" and not runtime.has_cxx_compiler():
                # Inductor generates C++ on CPU; the slim image has no compiler: train eagerly.
                print("kubenas-trial: warning: compile=true ignored, no C++ compiler for torch.compile on CPU",
                      file=sys.stderr)
            else:
                self.forward = torch.compile(self.model)  # type: ignore[assignment]
                self.compiled = True
        self.teacher = teacher.to(device).eval() if teacher is not None else None
        self.x_train = place(data.x_train, device)
        self.y_train = place(data.y_train, device)
        if self.channels_last:
            self.x_train = self.x_train.contiguous(memory_format=torch.channels_last)
        self.generator = torch.Generator(device=self.x_train.device).manual_seed(config["seed"])
        self.aug_generator = torch.Generator(device=device).manual_seed(config["seed"] + 1)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type) if self.amp == torch.float16 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])

    def batches(self) -> Batches:
        return Batches(self.x_train, self.y_train, self.config["batch_size"], self.device, self.generator)

    def evaluate(self, split: str = "val", model: nn.Module | None = None) -> tuple[float, float]:
        """(loss, accuracy) on the ``val`` or ``test`` split."""
        x, y = (self.data.x_val, self.data.y_val) if split == "val" else (self.data.x_test, self.data.y_test)
        net = model if model is not None else self.forward
        return evaluate(net, x, y, self.device, self.config["eval_batch_size"], self.amp, self.channels_last)

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
            lr_scale: float = 1.0, model: nn.Module | None = None, warmup: bool = True) -> TrainResult:
        """Train for ``epochs`` epochs, evaluating on the validation split after each one.

        ``on_epoch(epoch, metrics)`` receives ``accuracy`` and ``loss`` (validation) and
        ``train_loss``; epochs are numbered from ``first_epoch``. ``lr_scale`` scales the
        learning rate and ``warmup=False`` skips the warm-up (both for fine-tuning), and
        ``model`` trains another view of the model (e.g. the eager one instead of the compiled one).
        """
        net = model if model is not None else self.forward
        config = self.config
        optimizer = make_optimizer(self.model, config)
        peak = config["lr"] * lr_scale
        batches = self.batches()
        steps = max(len(batches), 1)
        factor = lr_factor(config if warmup else {**config, "warmup_epochs": 0.0}, epochs)
        step = 0
        augment = config["augment_crop"] > 0 or config["augment_flip"]
        temperature, alpha = config["distill_temperature"], config["distill_alpha"]
        result = TrainResult()
        net.train()
        for epoch in range(epochs):
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
            seen = sum(sizes)
            result.samples += seen
            weights = torch.tensor(sizes, device=self.device, dtype=torch.float32)
            train_loss = (torch.stack(losses).float() @ weights).item() / max(seen, 1) if losses else 0.0
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training diverged in epoch {first_epoch + epoch}: loss is {train_loss}")
            val_loss, val_acc = self.evaluate("val", net)
            net.train()
            metrics = {"accuracy": val_acc, "loss": val_loss, "train_loss": train_loss}
            result.history.append(metrics)
            if on_epoch is not None:
                on_epoch(first_epoch + epoch, metrics)
        net.eval()
        return result
