"""Gradient-based search of a NAS-Bench-201 cell (``mode: gradient-search``): GDAS, or plain DARTS to compare.

**Why GDAS.** On this space plain DARTS collapses: NAS-Bench-201 (Dong & Yang, ICLR 2020)
reports that first- and second-order DARTS both derive the cell of skip connections only
(54.3 % on CIFAR-10), while GDAS (Dong & Yang, CVPR 2019) derives convolutional cells
(93.6 %). DARTS trains a softmax mixture of all five operations on every edge; the
parameter-free operations help that mixture train early (a skip connection is a residual path
for the supernet), their weights keep growing, and the argmax of a mixture that was trained
as a mixture says little about the discrete cell. GDAS instead samples one operation per edge
at every step (Gumbel-softmax with a hard one-hot in the forward pass and the soft
probabilities' gradient in the backward pass, temperature annealed 10 → 0.1), so the weights
are always trained as a discrete cell and each operation competes on what it achieves alone.
Among the variants that avoid the collapse it is also the cheapest per step, which matters on
a CPU: only the sampled operation of each edge runs, so a step costs about one discrete
network's forward and backward, where DrNAS (a Dirichlet over the same mixture) computes all
five operations per edge like DARTS, and DARTS-PT adds a perturbation-and-fine-tune phase
per edge after training the supernet.

**Bilevel optimisation** (first order, as GDAS and DARTS-V1): the training split is divided
once, seeded by ``seed``, into a weight part and an architecture part (``arch_fraction``).
Every step first updates the architecture weights (Adam, ``arch_lr``) on a batch of the
architecture part, then the network weights (the trainer's optimizer, learning rate,
schedule and weight decay) on a batch of the weight part. The validation split only reports.
The first ``arch_warmup`` of the epochs train only the network weights (every operation
sampled uniformly, or mixed uniformly for DARTS), as PC-DARTS and DARTS-PT do: architecture
weights compared against untrained convolutions favour the operations that work from the
first step (skip, pooling). The derived cell is the argmax operation of every edge, written as
the NAS-Bench-201 architecture string and retrained from scratch as an ordinary trial (``cell``
parameter). The reported ``accuracy`` is the search network's, with batch-norm statistics
re-estimated for its evaluation cell (GDAS: the argmax cell with the shared weights).

``search_method: darts`` keeps plain first-order DARTS (the same code with the softmax
mixture) so the two can be compared on the same settings. At the small CPU budgets measured
in ``benchmarks/gradient_nas.py`` (6 architecture epochs on 1,000 images) plain DARTS did not
collapse, and GDAS derived mostly skip and pooling cells that retrained worse than DARTS's
and than the black-box search's at the same CPU: the choice rests on the long-search results
above, which that benchmark does not reach.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kubenas_trial import artifacts, cells, compress, cost, data, runtime
from kubenas_trial.config import SEARCH_ONLY, SPECS, ConfigError
from kubenas_trial.data import Dataset
from kubenas_trial.nb201 import EDGES, OPS, PARAMETER_FREE, format_arch, share
from kubenas_trial.sdk import TrialReporter
from kubenas_trial.train import Batches, evaluate, lr_factor, make_optimizer, place
from kubenas_trial.trial import seed_everything

TAU_MAX, TAU_MIN = 10.0, 0.1
"""GDAS's Gumbel-softmax temperature, annealed linearly from the first epoch to the last."""
ARCH_BETAS = (0.5, 0.999)
ARCH_WEIGHT_DECAY = 1e-3
RECALIBRATION_BATCHES = 10
GRAD_CLIP = 5.0
"""Gradient-norm clip of the network weights when ``grad_clip`` is 0 (DARTS and GDAS use 5)."""

Batch = tuple[torch.Tensor, torch.Tensor]


class SearchCell(nn.Module):
    """A cell holding all five operations on every edge; the architecture sample picks how they combine."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleList(cells.make_op(op, channels, affine=False) for op in OPS) for _ in EDGES
        )

    def forward(self, x: torch.Tensor, weights: torch.Tensor, chosen: list[int] | None) -> torch.Tensor:
        nodes = [x]
        for incoming in cells.INCOMING:
            nodes.append(functools.reduce(operator.add, (self.mixed_op(edge, nodes[source], weights[edge], chosen)
                                                         for edge, source in incoming)))
        return nodes[-1]

    def mixed_op(self, edge: int, x: torch.Tensor, weights: torch.Tensor, chosen: list[int] | None) -> torch.Tensor:
        """The edge's output: the weighted sum of all operations, or (``chosen``) only the chosen one.

        With a choice, ``weights`` is GDAS's straight-through one-hot: the other operations'
        weights are zero in value, and adding them keeps their gradient path.
        """
        ops = self.edges[edge]
        assert isinstance(ops, nn.ModuleList)  # a container's item is typed as any Module
        if chosen is None:
            return functools.reduce(operator.add, (w * op(x) for w, op in zip(weights, ops, strict=True)))
        k = chosen[edge]
        return weights[k] * ops[k](x) + (weights.sum() - weights[k])


class SearchNetwork(nn.Module):
    """The weight-sharing network: the cell skeleton of :mod:`kubenas_trial.cells` with searchable cells.

    ``alphas`` (edges × operations) are the architecture weights, shared by every cell. In
    training mode GDAS samples one operation per edge per forward pass and DARTS mixes all of
    them by softmax; in evaluation mode GDAS runs the argmax cell and DARTS the mixture.
    """

    def __init__(self, in_channels: int, num_classes: int, config: dict[str, Any]) -> None:
        super().__init__()
        self.method = config["search_method"]
        self.net = cells.CellNetwork(in_channels, num_classes, cells.stage_width(config), config["stages"],
                                     config["blocks"], SearchCell, config["dropout"])
        self.alphas = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))
        self.tau = TAU_MAX
        self.generator: torch.Generator | None = None

    def seed_sampler(self, seed: int) -> None:
        """Seed the Gumbel noise, on the device the architecture weights live on."""
        self.generator = torch.Generator(device=self.alphas.device).manual_seed(seed)

    def sample(self) -> tuple[torch.Tensor, list[int] | None]:
        """Per-edge operation weights, and the chosen operation of each edge (None: use them all)."""
        if self.method == "darts":
            return F.softmax(self.alphas, dim=-1), None
        if not self.training:
            index = self.alphas.argmax(-1)
            return F.one_hot(index, len(OPS)).to(self.alphas.dtype), index.tolist()
        if self.generator is None:
            self.seed_sampler(0)
        # F.gumbel_softmax(hard=True), with the noise drawn from the seeded generator (it takes none).
        noise = torch.empty_like(self.alphas).exponential_(generator=self.generator)
        gumbel = -noise.clamp_min(torch.finfo(noise.dtype).tiny).log()
        probs = F.softmax((F.log_softmax(self.alphas, dim=-1) + gumbel) / self.tau, dim=-1)
        index = probs.argmax(-1)
        hard = F.one_hot(index, len(OPS)).to(probs.dtype)
        return hard - probs.detach() + probs, index.tolist()  # one host sync per step, for the choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.sample()
        return self.net(x, weights, chosen)

    def derived_ops(self) -> tuple[str, ...]:
        """The derived cell: the operation with the largest architecture weight on every edge."""
        return tuple(OPS[i] for i in self.alphas.detach().argmax(-1).tolist())

    def probabilities(self) -> list[list[float]]:
        return [[round(p, 4) for p in row] for row in F.softmax(self.alphas.detach().float(), -1).tolist()]


class Frozen(nn.Module):
    """The search network with its evaluation-mode architecture sample fixed (GDAS: the argmax cell)."""

    def __init__(self, network: SearchNetwork) -> None:
        super().__init__()
        self.net = network.net
        was_training = network.training
        network.eval()
        with torch.no_grad():
            self.weights, self.chosen = network.sample()
        network.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.weights, self.chosen)


def evaluate_supernet(network: SearchNetwork, x: torch.Tensor, y: torch.Tensor, batches: Batches,
                      device: torch.device, batch_size: int, amp: torch.dtype | None) -> tuple[float, float]:
    """(loss, accuracy) of the network's evaluation-mode cell, after re-estimating its batch-norm statistics.

    The shared statistics mix every architecture sampled in training; the fixed cell's own,
    from a few training batches, measure that cell.
    """
    frozen = Frozen(network)
    with torch.no_grad():
        compress.recalibrate_batchnorm(frozen, (xb for xb, _ in batches), RECALIBRATION_BATCHES)
    return evaluate(frozen, x, y, device, batch_size, amp)


class Bilevel:
    """Alternating first-order updates: architecture weights on one split, network weights on the other.

    Args:
        network: the search network (on ``device``).
        config: validated trainer parameters (optimizer, lr, schedule, ``arch_lr``, …).
        device: where the network lives; decides mixed precision as the trainer does.
        steps_per_epoch: weight steps per epoch, for the learning-rate schedule.
    """

    def __init__(self, network: SearchNetwork, config: dict[str, Any], device: torch.device,
                 steps_per_epoch: int) -> None:
        self.network = network
        self.weights = list(network.net.parameters())
        self.weight_optimizer = make_optimizer(network.net, config)
        self.arch_optimizer = torch.optim.Adam([network.alphas], lr=config["arch_lr"], betas=ARCH_BETAS,
                                               weight_decay=ARCH_WEIGHT_DECAY)
        self.device = device
        self.amp = runtime.amp_dtype(config["amp"], device)
        fp16 = self.amp == torch.float16  # bf16 has fp32's range and needs no loss scaling
        self.weight_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.arch_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
        self.clip = config["grad_clip"] or GRAD_CLIP
        self.peak_lr = config["lr"]
        self.lr_factor = lr_factor(config, config["epochs"])
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.steps = 0

    def _loss(self, batch: Batch) -> torch.Tensor:
        x, y = batch
        with torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            return self.criterion(self.network(x), y)

    def step(self, weight_batch: Batch, arch_batch: Batch | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One architecture update (unless ``arch_batch`` is None: warm-up) then one weight update.

        Returns their losses (weights, architecture).
        """
        arch_loss = None
        if arch_batch is not None:
            arch_loss = self._loss(arch_batch)
            self.arch_optimizer.zero_grad(set_to_none=True)
            self.arch_scaler.scale(arch_loss).backward(inputs=[self.network.alphas])
            self.arch_scaler.step(self.arch_optimizer)
            self.arch_scaler.update()
            arch_loss = arch_loss.detach()

        lr = self.peak_lr * self.lr_factor(self.steps / self.steps_per_epoch)
        for group in self.weight_optimizer.param_groups:
            group["lr"] = lr
        self.steps += 1
        weight_loss = self._loss(weight_batch)
        self.weight_optimizer.zero_grad(set_to_none=True)
        # Operations GDAS did not sample get no gradient (None) and so no update, not even decay.
        self.weight_scaler.scale(weight_loss).backward(inputs=self.weights)
        self.weight_scaler.unscale_(self.weight_optimizer)
        nn.utils.clip_grad_norm_(self.weights, self.clip)
        self.weight_scaler.step(self.weight_optimizer)
        self.weight_scaler.update()
        return weight_loss.detach(), arch_loss


def split_train(dataset: Dataset, arch_fraction: float, seed: int) -> tuple[Batch, Batch]:
    """The training split divided at random (seeded) into (weight part, architecture part)."""
    n = len(dataset.y_train)
    n_arch = min(max(1, round(n * arch_fraction)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    arch, weights = order[:n_arch], order[n_arch:]
    return (dataset.x_train[weights], dataset.y_train[weights]), (dataset.x_train[arch], dataset.y_train[arch])


def _endless(batches: Batches) -> Iterator[Batch]:
    while True:
        yield from batches


def cell_metrics(ops: tuple[str, ...]) -> dict[str, float]:
    """The derived cell as numbers: shares of parameter-free operations and each edge's operation index."""
    return {
        "skip_share": share(ops, ("skip_connect",)),
        "none_share": share(ops, ("none",)),
        "parameter_free_share": share(ops, PARAMETER_FREE),
        **{f"cell_op_{edge}": OPS.index(op) for edge, op in enumerate(ops)},
    }


def retrain_parameters(config: dict[str, Any], arch: str) -> dict[str, Any]:
    """The parameters of the ordinary trial that retrains the derived cell: the search's own, minus the search."""
    kept = {name: value for name, value in config.items()
            if name not in (*SEARCH_ONLY, "mode") and value != SPECS[name].default}
    return {**kept, "cell": arch}


def run(config: dict[str, Any], reporter: TrialReporter, say: Callable[[str], None]) -> dict[str, Any]:
    """Search a cell as ``config`` says; report every epoch and the derived cell through ``reporter``.

    Returns the final metrics (numbers only, also written to the termination log).

    Raises:
        ConfigError: the dataset is not images.
        data.DataError: the dataset is missing or malformed.
    """
    started = time.perf_counter()
    torch.set_num_threads(runtime.thread_count(config["num_threads"]))
    device = runtime.select_device(config["device"])
    seed_everything(config["seed"])
    dataset = data.load(config)
    if not dataset.is_image:
        raise ConfigError(f"mode 'gradient-search' searches image cells; dataset {config['dataset']!r} is tabular")
    network = SearchNetwork(dataset.input_shape[0], dataset.num_classes, config).to(device)
    network.seed_sampler(config["seed"])
    (wx, wy), (ax, ay) = split_train(dataset, config["arch_fraction"], config["seed"])
    wx, wy, ax, ay = (place(t, device) for t in (wx, wy, ax, ay))
    batch_size, epochs = config["batch_size"], config["epochs"]
    weight_batches = Batches(wx, wy, batch_size, device, torch.Generator(device=wx.device).manual_seed(config["seed"]))
    arch_batches = _endless(
        Batches(ax, ay, batch_size, device, torch.Generator(device=ax.device).manual_seed(config["seed"] + 1))
    )
    bilevel = Bilevel(network, config, device, len(weight_batches))
    say(f"gradient-search {config['search_method']} device={runtime.device_name(device)} "
        f"weights={len(wy)} architecture={len(ay)} samples, {len(weight_batches)} steps/epoch, "
        f"params={sum(p.numel() for p in network.net.parameters())}")
    reporter.final_step(epochs)

    history: list[dict[str, Any]] = []
    seconds, samples = 0.0, 0
    val_loss = val_acc = 0.0
    warmup = min(round(epochs * config["arch_warmup"]), epochs - 1)  # the architecture learns for ≥ 1 epoch
    for epoch in range(1, epochs + 1):
        searching = epoch > warmup
        network.tau = TAU_MAX - (TAU_MAX - TAU_MIN) * max(epoch - 1 - warmup, 0) / max(epochs - 1 - warmup, 1)
        network.train()
        start = time.perf_counter()
        weight_losses: list[torch.Tensor] = []
        arch_losses: list[torch.Tensor] = []
        for weight_batch in weight_batches:
            arch_batch = next(arch_batches) if searching else None
            weight_loss, arch_loss = bilevel.step(weight_batch, arch_batch)
            weight_losses.append(weight_loss)
            samples += len(weight_batch[1])
            if arch_batch is not None:
                samples += len(arch_batch[1])
            if arch_loss is not None:  # a search step (not warm-up)
                arch_losses.append(arch_loss)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        train_loss = torch.stack(weight_losses).float().mean().item()
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"search diverged in epoch {epoch}: loss is {train_loss}")
        val_loss, val_acc = evaluate_supernet(network, dataset.x_val, dataset.y_val, weight_batches, device,
                                              config["eval_batch_size"], bilevel.amp)
        ops = network.derived_ops()
        metrics = {"accuracy": val_acc, "loss": val_loss, "train_loss": train_loss,
                   **({"arch_loss": torch.stack(arch_losses).float().mean().item()} if arch_losses else {}),
                   "tau": network.tau, **cell_metrics(ops)}
        reporter.report(epoch, metrics)
        history.append({"epoch": epoch, "cell": format_arch(ops), **metrics})
        say(f"epoch {epoch} accuracy={val_acc:.4g} train_loss={train_loss:.4g} cell={format_arch(ops)}")

    ops = network.derived_ops()
    arch = format_arch(ops)
    derived = cells.build({**config, "cell": arch}, dataset.input_shape, dataset.num_classes).eval()
    params, _ = cost.parameter_counts(derived)
    final: dict[str, Any] = {
        "accuracy": val_acc,
        "loss": val_loss,
        **cell_metrics(ops),
        "derived_params": params,
        "derived_flops": cost.flops(derived, dataset.x_val[:1].cpu()),
        "epochs": epochs,
        "train_seconds": seconds,
        "samples_per_second": samples / seconds if seconds > 0 else 0.0,
        "wall_seconds": time.perf_counter() - started,
    }
    reporter.report(epochs, final)
    written = reporter.finish(final)
    say(f"derived cell {arch} skip_share={final['skip_share']:.3g} none_share={final['none_share']:.3g}")

    out = artifacts.output_dir()
    if out is not None:
        search = {
            "cell": arch, "ops": list(ops), "operations": list(OPS), "search_method": config["search_method"],
            "probabilities": network.probabilities(), "retrain_parameters": retrain_parameters(config, arch),
        }
        report = {"metrics": final, "history": history, "data": dataset.summary(),
                  "runtime": runtime.summary(config, device)}
        files = artifacts.save_search(out, search=search, metrics=report)
        say("wrote " + ", ".join(str(f) for f in files))
    return written
