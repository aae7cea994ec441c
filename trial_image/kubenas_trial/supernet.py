"""A weight-sharing supernet of the trial image's CNN family, for one-shot NAS.

One :class:`~kubenas_trial.models.CNN` built at the largest value of every elastic dimension
holds all the weights. A subnet (a choice of ``stages``, ``blocks``, ``width``, ``kernel_size``
and ``expansion``, the trainer's own parameter names) runs on slices of them: the first
``stages`` stages, the first ``blocks`` blocks of each, the first channels of every layer, and
the centre of every k×k kernel. :meth:`Supernet.extract` copies those slices into a standalone
``CNN`` built from the subnet's parameters: the network an ordinary trial with the same
parameters trains, with inherited weights.

Training follows the sandwich rule with in-place distillation (Yu et al., BigNAS / Slimmable
networks): each step the largest subnet learns from the labels and the smallest and two random
subnets from the largest one's soft labels. Batch-norm statistics are shared and meaningless for
any one subnet, so they are re-estimated on fixed training batches before a subnet is evaluated.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kubenas_trial import compress
from kubenas_trial.config import ConfigError, parse
from kubenas_trial.models import CNN, Block, SqueezeExcite, se_hidden, stage_channels
from kubenas_trial.train import Trainer, distillation_loss, lr_factor, make_optimizer

ELASTIC_KEYS = ("stages", "blocks", "width", "kernel_size", "expansion")
"""The dimensions a subnet chooses; every other architecture parameter is fixed by the supernet."""
MAX_CHOICES = 16
"""Values per elastic dimension at most."""
RANDOM_SUBNETS = 2
"""Random subnets per sandwich step, besides the largest and the smallest."""

Subnet = dict[str, int]


@dataclass(frozen=True)
class Space:
    """The values each elastic dimension may take, ascending."""

    choices: dict[str, tuple[int, ...]]

    def largest(self) -> Subnet:
        return {key: values[-1] for key, values in self.choices.items()}

    def smallest(self) -> Subnet:
        return {key: values[0] for key, values in self.choices.items()}

    def sample(self, rng: random.Random) -> Subnet:
        return {key: rng.choice(values) for key, values in self.choices.items()}

    def size(self) -> int:
        return math.prod(len(values) for values in self.choices.values())

    def check(self, subnet: Any, where: str) -> Subnet:
        """``subnet`` as a full subnet (dimensions it omits take the largest value).

        Raises:
            ConfigError: not an object, an unknown key, or a value outside the space; the
                message names ``where`` and the key.
        """
        if not isinstance(subnet, Mapping):
            raise ConfigError(f"{where} must be an object of {', '.join(ELASTIC_KEYS)}, got {subnet!r}")
        unknown = sorted(set(subnet) - set(ELASTIC_KEYS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]} is not an elastic dimension of the supernet "
                              f"(those are {', '.join(ELASTIC_KEYS)})")
        full = self.largest()
        for key, value in subnet.items():
            number = _integer(value)
            if number is None or number not in self.choices[key]:
                allowed = ", ".join(str(v) for v in self.choices[key])
                raise ConfigError(f"{where}.{key} must be one of the supernet's choices {allowed}; got {value!r}")
            full[key] = number
        return full


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def make_space(config: dict[str, Any], requested: Mapping[str, Any] | None) -> Space:
    """The space of ``supernet_space`` (a list of values per dimension); a dimension it omits is fixed
    at the parameter's value.

    Raises:
        ConfigError: a bad dimension or value, naming ``supernet_space.<key>``.
    """
    requested = requested or {}
    unknown = sorted(set(requested) - set(ELASTIC_KEYS))
    if unknown:
        raise ConfigError(f"supernet_space.{unknown[0]} is not an elastic dimension "
                          f"(choose from {', '.join(ELASTIC_KEYS)})")
    choices: dict[str, tuple[int, ...]] = {}
    for key in ELASTIC_KEYS:
        values = requested.get(key, [config[key]])
        where = f"supernet_space.{key}"
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_CHOICES:
            raise ConfigError(f"{where} must be a list of 1 to {MAX_CHOICES} values, got {values!r}")
        checked = set()
        for value in values:
            try:
                checked.add(parse({key: value})[key])
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        choices[key] = tuple(sorted(checked))
    expansions = choices["expansion"]
    if expansions[0] == 1 and expansions[-1] > 1:
        raise ConfigError("supernet_space.expansion must be all 1 (plain blocks) or all > 1 (inverted "
                          f"bottlenecks): the two are different blocks; got {list(expansions)}")
    return Space(choices)


def _conv(conv: nn.Module, x: torch.Tensor, c_out: int, kernel: int | None = None) -> torch.Tensor:
    """``conv`` on its first ``c_out`` outputs and ``x``'s channels, with the centre ``kernel``×``kernel``."""
    assert isinstance(conv, nn.Conv2d)  # a container's item is typed as any Module
    depthwise = conv.groups > 1
    weight = conv.weight[:c_out] if depthwise else conv.weight[:c_out, : x.shape[1]]
    padding = conv.padding
    if kernel is not None:
        cut = (weight.shape[-1] - kernel) // 2
        weight = weight[:, :, cut : cut + kernel, cut : cut + kernel]
        padding = (kernel // 2, kernel // 2)
    bias = conv.bias[:c_out] if conv.bias is not None else None
    return F.conv2d(x, weight, bias, conv.stride, padding, groups=c_out if depthwise else 1)


def _norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Batch norm over ``x``'s channels with the first slices of ``norm``'s parameters and statistics.

    Mirrors ``nn.BatchNorm2d``: in training the statistics are updated in place (a ``momentum``
    of None is a cumulative average, as ``compress.recalibrate_batchnorm`` sets it).
    """
    if not isinstance(norm, nn.BatchNorm2d):
        return x
    # The supernet's norms track running statistics (the default), so these are never None.
    assert norm.running_mean is not None and norm.running_var is not None and norm.num_batches_tracked is not None
    c = x.shape[1]
    momentum = 0.0
    if norm.training:
        norm.num_batches_tracked.add_(1)
        momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
    return F.batch_norm(x, norm.running_mean[:c], norm.running_var[:c], norm.weight[:c], norm.bias[:c],
                        norm.training, momentum, norm.eps)


def _squeeze_excite(se: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(se, SqueezeExcite):
        return x
    hidden = se.act(_conv(se.reduce, se.pool(x), se_hidden(x.shape[1])))
    return x * se.gate(_conv(se.expand, hidden, x.shape[1]))


def _block(block: nn.Module, x: torch.Tensor, c_out: int, kernel: int, expansion: int) -> torch.Tensor:
    assert isinstance(block, Block)  # a container's item is typed as any Module
    body = block.body
    if isinstance(block.project, nn.Identity):  # plain: k×k, norm, act, k×k, norm
        out = body[2](_norm(body[1], _conv(body[0], x, c_out, kernel)))
        out = _norm(body[4], _conv(body[3], out, c_out, kernel))
        out = _squeeze_excite(block.se, out)
    else:  # inverted bottleneck: 1×1 expand, depthwise k×k, squeeze-excite, 1×1 project
        c_mid = x.shape[1] * expansion
        out = body[2](_norm(body[1], _conv(body[0], x, c_mid)))
        out = body[5](_norm(body[4], _conv(body[3], out, c_mid, kernel)))
        out = _squeeze_excite(block.se, out)
        out = _norm(block.project[1], _conv(block.project[0], out, c_out))
    if block.residual:
        out = out + x
    return block.out_act(out)


def subnet_config(config: dict[str, Any], subnet: Subnet) -> dict[str, Any]:
    """The trainer parameters of ``subnet``: ``config`` with the subnet's choices."""
    return {**config, **subnet}


class Supernet(nn.Module):
    """The CNN family with every elastic dimension at its largest, run as any subnet of ``space``.

    ``forward`` runs the subnet in :attr:`active` (the largest until set), so the supernet
    works wherever a model does (evaluation, FLOP counting, autocast, channels-last).

    Args:
        in_channels, num_classes: as for :class:`~kubenas_trial.models.CNN`.
        config: validated trainer parameters; the architecture beyond the elastic dimensions.
        space: the elastic dimensions' values.
    """

    def __init__(self, in_channels: int, num_classes: int, config: dict[str, Any], space: Space) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.space = in_channels, num_classes, space
        self.config = subnet_config(config, space.largest())
        self.net = CNN(in_channels, num_classes, self.config)
        self.active: Subnet = space.largest()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sub = self.active
        kernel, expansion = sub["kernel_size"], sub["expansion"]
        channels = stage_channels(subnet_config(self.config, sub))
        net = self.net
        x = net.stem[2](_norm(net.stem[1], _conv(net.stem[0], x, channels[0], kernel)))
        for s, c_out in enumerate(channels):
            stage = net.stages[s]
            assert isinstance(stage, nn.Sequential)
            for b in range(sub["blocks"]):
                x = _block(stage[b], x, c_out, kernel, expansion)
        x = net.dropout(net.flatten(net.pool(x)))
        return F.linear(x, net.head.weight[:, : x.shape[1]], net.head.bias)

    def extract(self, subnet: Subnet | None = None) -> CNN:
        """A standalone ``CNN`` of ``subnet`` (default: the active one) holding its slices of the weights
        and batch-norm statistics, on the supernet's device."""
        subnet = subnet or self.active
        model = CNN(self.in_channels, self.num_classes, subnet_config(self.config, subnet))
        source = self.net.state_dict()
        with torch.no_grad():
            state = {key: _slice_to(source[key], target.shape) for key, target in model.state_dict().items()}
        model.load_state_dict(state)
        return model.to(self.net.head.weight.device).train(self.training)


def _slice_to(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The leading slice of ``tensor`` with ``shape``; the centre on the kernel dimensions of a 4-d weight."""
    index: list[slice] = []
    for dim, (have, want) in enumerate(zip(tensor.shape, shape, strict=True)):
        start = (have - want) // 2 if tensor.dim() == 4 and dim >= 2 else 0
        index.append(slice(start, start + want))
    return tensor[tuple(index)].clone()


@contextlib.contextmanager
def running(supernet: Supernet, subnet: Subnet) -> Any:
    """Run ``subnet`` inside the block; the previous active subnet after."""
    previous = supernet.active
    supernet.active = subnet
    try:
        yield supernet
    finally:
        supernet.active = previous


def calibration_set(trainer: Trainer, batches: int) -> list[torch.Tensor]:
    """``batches`` fixed random training batches of ``batch_size``, on the trainer's device and memory format."""
    memory_format = torch.channels_last if trainer.channels_last else torch.preserve_format
    return [xb.to(trainer.device, memory_format=memory_format)
            for xb in compress.calibration_batches(trainer.data.x_train, batches, trainer.config["batch_size"],
                                                   trainer.config["seed"])]


def recalibrate(supernet: Supernet, subnet: Subnet, batches: Sequence[torch.Tensor],
                autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
    """Re-estimate the batch-norm statistics of ``subnet`` on ``batches`` (its slices of the shared ones).

    Use the same batches for every subnet compared, so differences come from the subnets.
    """
    with running(supernet, subnet), torch.no_grad(), autocast():
        compress.recalibrate_batchnorm(supernet, batches, max_batches=len(batches))


def evaluate(trainer: Trainer, supernet: Supernet, subnet: Subnet, calibration: Sequence[torch.Tensor],
             split: str = "val") -> tuple[float, float]:
    """(loss, accuracy) of ``subnet`` with inherited weights on ``split``, after recalibrating it on ``calibration``."""
    recalibrate(supernet, subnet, calibration, trainer.autocast)
    with running(supernet, subnet):
        return trainer.evaluate(split, supernet)


@dataclass
class SandwichResult:
    """What supernet training did: per-epoch metrics and the training loop's time and samples."""

    history: list[dict[str, float]] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0


def sandwich_step(trainer: Trainer, supernet: Supernet, optimizer: torch.optim.Optimizer, xb: torch.Tensor,
                  yb: torch.Tensor, rng: random.Random, random_subnets: int = RANDOM_SUBNETS) -> torch.Tensor:
    """One optimizer step over the largest, the smallest and ``random_subnets`` random subnets.

    The largest learns from the labels; the others from its soft labels (in-place distillation,
    temperature 1). Gradients of all of them accumulate into the shared weights before one
    step. Returns the largest subnet's loss (detached).
    """
    space = supernet.space
    subnets = [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(random_subnets))]
    optimizer.zero_grad(set_to_none=True)
    soft: torch.Tensor | None = None
    first = torch.zeros(())
    for subnet in subnets:
        with running(supernet, subnet), trainer.autocast():
            logits = supernet(xb)
            if soft is None:
                loss = trainer.criterion(logits, yb)
                soft, first = logits.detach(), loss.detach()
            else:
                loss = distillation_loss(logits, soft, 1.0)
        if trainer.scaler is not None:
            trainer.scaler.scale(loss).backward()
        else:
            loss.backward()
    clip = trainer.config["grad_clip"]
    if trainer.scaler is not None:
        if clip > 0:
            trainer.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(supernet.parameters(), clip)
        trainer.scaler.step(optimizer)
        trainer.scaler.update()
    else:
        if clip > 0:
            nn.utils.clip_grad_norm_(supernet.parameters(), clip)
        optimizer.step()
    return first


def train(trainer: Trainer, supernet: Supernet, epochs: int, calibration: Sequence[torch.Tensor],
          on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> SandwichResult:
    """Train ``supernet`` (``trainer.model``) with the sandwich rule for ``epochs`` epochs.

    After each epoch the largest and the smallest subnets are recalibrated on ``calibration``
    and evaluated on the validation split: ``accuracy``, ``loss`` (largest), ``accuracy_smallest``
    and ``train_loss`` (the largest subnet's, on the labels) go to ``on_epoch``.
    """
    config = trainer.config
    optimizer = make_optimizer(supernet, config)
    factor = lr_factor(config, epochs)
    batches = trainer.batches()
    steps = max(len(batches), 1)
    rng = random.Random(config["seed"])
    augment = config["augment_crop"] > 0 or config["augment_flip"]
    result = SandwichResult()
    step = 0
    for epoch in range(1, epochs + 1):
        supernet.train()
        start = time.perf_counter()
        losses: list[torch.Tensor] = []
        sizes: list[int] = []
        for xb, yb in batches:
            for group in optimizer.param_groups:
                group["lr"] = config["lr"] * factor(step / steps)
            step += 1
            if augment:
                xb = trainer.augment(xb)
            losses.append(sandwich_step(trainer, supernet, optimizer, xb, yb, rng))
            sizes.append(len(yb))
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        result.seconds += time.perf_counter() - start
        result.samples += sum(sizes)
        weights = torch.tensor(sizes, device=trainer.device, dtype=torch.float32)
        train_loss = (torch.stack(losses).float().to(trainer.device) @ weights).item() / max(sum(sizes), 1)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"supernet training diverged in epoch {epoch}: loss is {train_loss}")
        metrics: dict[str, float] = {}
        for name, subnet in (("", supernet.space.largest()), ("_smallest", supernet.space.smallest())):
            loss, accuracy = evaluate(trainer, supernet, subnet, calibration)
            metrics |= {f"accuracy{name}": accuracy, f"loss{name}": loss}
        metrics["train_loss"] = train_loss
        result.history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    supernet.eval()
    return result
