"""``RegularizedEvolution``: aging evolution (Real et al. 2019, "Regularized Evolution for Image
Classifier Architecture Search").

A population of the ``population`` most recent results (by trial order). The first
``population`` proposals are random; after that each ask runs a tournament: ``tournament``
members drawn without replacement, the best of them (lowest loss) is the parent, and the child
is the parent with one dimension mutated. Each result joins the population and the *oldest*
member leaves, however good it is (aging: a configuration that scored well once by luck does not
stay a parent for ever).

Mutations: a choice takes another of its values, uniformly; a number (integer or real) takes a
Gaussian step of ``step`` of its range (on a log scale for log-scaled ones), reflected at the
bounds, and an integer moves at least one value. Numbers step rather than jump because nearby
values of a learning rate or a width score alike.

Parallel asks run independent tournaments on the same population; no proposal repeats a
configuration told or pending. Ages come from trial indices, so a rebuild that replays results
best first ends with the population the uninterrupted search had. Constraints and failures
reach it as the Suggester's penalised losses: such members lose tournaments until they age out.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import nevergrad as ng
import numpy as np
from nevergrad.optimization import base

from kubenas.algorithms import dimensions
from kubenas.algorithms.ordered import Order, OrderedGenomeOptimizer


@dataclass(frozen=True)
class EvolutionSettings:
    """``RegularizedEvolution``'s knobs (population and tournament chosen on NAS-Bench-201 CIFAR-10 and
    CIFAR-100, seeds 100–115, from (10, 3), (10, 5), (20, 5), (20, 10), (30, 10): the smaller
    population reached the top 1% sooner at budgets of a few hundred trials)."""

    population: int = 10  # members kept (the most recent results); also the random start
    tournament: int = 5  # members drawn per ask; the best of them is the parent
    step: float = 0.2  # numeric mutation: standard deviation as a share of the range

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError("population must be at least 2")
        if not 1 <= self.tournament <= self.population:
            raise ValueError("tournament must be between 1 and population")
        if not 0 < self.step <= 1:
            raise ValueError("step must be in (0, 1]")


@dataclass(frozen=True)
class _Member:
    order: Order
    genome: np.ndarray
    loss: float


class _RegularizedEvolution(OrderedGenomeOptimizer):
    algorithm = "RegularizedEvolution"

    def __init__(
        self, parametrization: ng.p.Parameter, budget: int | None = None, num_workers: int = 1, **settings: Any
    ) -> None:
        super().__init__(parametrization, budget, num_workers)
        self._s = EvolutionSettings(**settings)
        self._population: list[_Member] = []  # by order, oldest first
        self._mutable = [i for i, d in enumerate(self._dims) if d.size != 1]

    @property
    def population(self) -> list[tuple[np.ndarray, float]]:
        """The members (genome, loss), oldest first."""
        return [(m.genome.copy(), m.loss) for m in self._population]

    def _observe(self, order: Order, genome: np.ndarray, loss: float) -> None:
        at = bisect.bisect([m.order for m in self._population], order)
        self._population.insert(at, _Member(order, genome, loss))
        if len(self._population) > self._s.population:
            self._population.pop(0)  # the oldest, which may be the one just told

    def _internal_ask_candidate(self) -> ng.p.Parameter:
        self._begin_ask()
        genome = None
        started = len(self._told) + len(self._pending)
        if started >= self._s.population and self._population and self._mutable:
            for _ in range(16):
                child = self._mutate(self._tournament())
                if self._fresh(child):
                    genome = child
                    break
        if genome is None:
            genome = self._random_fresh()
        if genome is None:
            genome = self._settle(dimensions.random(self._dims, self._draws, 1)[0])
        return self._propose(genome)

    def _tournament(self) -> np.ndarray:
        """The best of ``tournament`` members drawn without replacement."""
        size = min(self._s.tournament, len(self._population))
        drawn = self._draws.choice(len(self._population), size=size, replace=False)
        best = min(drawn, key=lambda i: self._population[i].loss)
        return self._population[best].genome

    def _mutate(self, parent: np.ndarray) -> np.ndarray:
        """``parent`` with one dimension changed."""
        rng = self._draws
        child = parent.copy()
        i = self._mutable[rng.randint(len(self._mutable))]
        d = self._dims[i]
        if d.size:
            child[i] = (int(parent[i]) + 1 + rng.randint(d.size - 1)) % d.size
        elif d.integer:
            values = d.integers()
            current = int(np.abs(values - np.round(d.value(parent[i]))).argmin())
            moved = int(np.clip(round(current + rng.normal() * self._s.step * (len(values) - 1)), 0, len(values) - 1))
            if moved == current:
                moved = current + (1 if current == 0 or (current < len(values) - 1 and rng.uniform() < 0.5) else -1)
            child[i] = float(d.unit(values[moved]))
        else:
            x = abs(parent[i] + rng.normal() * self._s.step)
            child[i] = min(max(2.0 - x if x > 1.0 else x, 0.0), 1.0)
        return child


class RegularizedEvolution:
    """Factory for aging evolution (``EvolutionSettings`` as keyword arguments)."""

    def __init__(self, **settings: Any) -> None:
        EvolutionSettings(**settings)  # bad settings fail here, not at the first experiment
        self.settings = settings

    def __call__(
        self, parametrization: ng.p.Parameter, budget: int | None = None, num_workers: int = 1
    ) -> base.Optimizer:
        return _RegularizedEvolution(parametrization, budget, num_workers, **self.settings)
