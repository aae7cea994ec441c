"""A parametrization of choices and bounded scalars (as ``kubenas.space`` builds them) as a flat genome.

A genome has one float per dimension: a choice's index, or a scalar's position in [0, 1] between
its bounds (on a log scale for ``Log`` scalars). kubenas's own optimizers search genomes and
convert at the ask/tell boundary, so a configuration told without being asked (a rebuild
replaying history) reads back exactly as one they proposed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import nevergrad as ng
import numpy as np
from nevergrad.parametrization.choice import BaseChoice
from nevergrad.parametrization.core import Constant
from nevergrad.parametrization.data import Data


@dataclass(frozen=True)
class Dim:
    name: str
    size: int  # number of choices; 0 for a numeric dimension
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    integer: bool = False

    def integers(self) -> np.ndarray:
        """An integer scalar's values, in order (``kubenas.space`` widens its bounds by almost half a step)."""
        return np.arange(math.ceil(self.low), math.floor(self.high) + 1, dtype=float)

    def unit(self, values: np.ndarray) -> np.ndarray:
        """A numeric dimension's values as genome positions in [0, 1]."""
        values = np.asarray(values, dtype=float)
        if self.log:
            span = math.log(self.high) - math.log(self.low)
            return (np.log(np.maximum(values, self.low)) - math.log(self.low)) / span
        return (values - self.low) / (self.high - self.low)

    def value(self, genes: np.ndarray) -> np.ndarray:
        """Genome positions in [0, 1] as a numeric dimension's values."""
        genes = np.asarray(genes, dtype=float)
        if self.log:
            return np.exp(math.log(self.low) + genes * (math.log(self.high) - math.log(self.low)))
        return self.low + genes * (self.high - self.low)


def dimensions(parametrization: ng.p.Parameter) -> list[Dim] | None:
    """The search dimensions, or None when the parametrization has leaves these optimizers cannot handle."""
    dims: list[Dim] = []
    choices: list[str] = []
    for name, leaf in ng.p.helpers.flatten(parametrization):
        if any(name.startswith(prefix + ".") for prefix in choices):
            continue
        if isinstance(leaf, BaseChoice):
            if not all(isinstance(option, Constant) for option in leaf.choices):
                return None
            dims.append(Dim(name, len(leaf.choices)))
            choices.append(name)
        elif isinstance(leaf, Data):
            low, high = leaf.bounds
            if leaf.dimension != 1 or low is None or high is None:
                return None
            lo, hi = float(np.ravel(low)[0]), float(np.ravel(high)[0])
            if not lo < hi:
                return None
            dims.append(Dim(name, 0, lo, hi, isinstance(leaf, ng.p.Log) and lo > 0, bool(leaf.integer)))
    return dims or None


def read(dims: list[Dim], candidate: ng.p.Parameter) -> np.ndarray:
    """The genome of ``candidate``."""
    leaves = dict(ng.p.helpers.flatten(candidate))
    out = np.empty(len(dims))
    for i, d in enumerate(dims):
        leaf = leaves[d.name]
        if d.size:
            out[i] = float(leaf.indices.value[0])
        else:
            out[i] = float(d.unit(np.array(float(np.ravel(leaf.value)[0]))))
    return np.clip(out, 0.0, [d.size - 1 if d.size else 1.0 for d in dims])


def write(parametrization: ng.p.Parameter, dims: list[Dim], genome: np.ndarray) -> ng.p.Parameter:
    """A new candidate of ``parametrization`` with ``genome``."""
    child = parametrization.spawn_child()
    leaves = dict(ng.p.helpers.flatten(child))
    for d, g in zip(dims, genome, strict=True):
        leaf = leaves[d.name]
        if d.size:
            leaf.indices.value = np.array([int(g)])
        else:
            leaf.value = float(d.value(np.array(g)))
    return child


def key(genome: np.ndarray) -> tuple[float, ...]:
    """A genome's identity (robust to float round-off)."""
    return tuple(np.round(genome, 9).tolist())


def random(dims: list[Dim], rng: np.random.RandomState, n: int) -> np.ndarray:
    """``n`` genomes drawn uniformly (log-uniformly on log scales)."""
    out = np.empty((n, len(dims)))
    for i, d in enumerate(dims):
        out[:, i] = rng.randint(d.size, size=n) if d.size else rng.uniform(size=n)
    return out


def normalise(dims: list[Dim], genomes: np.ndarray) -> np.ndarray:
    """The genomes candidates built from ``genomes`` (shape (..., dimensions)) read back as: integer casting."""
    out = genomes
    for i, d in enumerate(dims):
        if d.size or not d.integer:
            continue
        if out is genomes:
            out = genomes.copy()
        value = np.clip(np.round(d.value(genomes[..., i])), d.low, d.high)
        out[..., i] = d.unit(value)
    return out
