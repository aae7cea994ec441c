"""The common ground of kubenas's order-aware optimizers (``RegularizedEvolution``, ``PolicyGradient``).

Both search genomes (``dimensions``) and learn from results *in trial order*: a result's place
comes from the trial index the Suggester attaches to the told candidate (the order of tells
when there is none). A rebuild replays results best first; putting them back in trial order
makes the rebuilt state the one the uninterrupted search had, and a result told without being
asked is learnt exactly as one it proposed.

Proposals never repeat a configuration told or still pending (asked, not yet told).

Random draws come from a stream keyed by the seed, the latest trial index and the number of
results learnt, and the asks since the last one. A rebuilt optimizer starts again from its seed;
with one stream it would replay, after every rebuild, the random choices it made after the
previous one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import nevergrad as ng
import numpy as np
from nevergrad.optimization import base
from nevergrad.optimization.utils import Pruning

from kubenas.algorithms import dimensions
from kubenas.algorithms.attachments import trial_index_of

Order = tuple[int, int]
"""A result's place: (trial index, arrival); results without an index sort after every index seen."""

_WORST = 5.0e20  # non-finite losses (a user's objective function may return them) rank last


class OrderedGenomeOptimizer(base.Optimizer):
    """A Nevergrad optimizer over genomes whose results arrive with their trial order.

    Subclasses implement ``_observe`` (learn one result) and ``_internal_ask_candidate``
    (using ``_fresh`` and ``_propose``).
    """

    algorithm: ClassVar[str] = "this algorithm"

    def __init__(self, parametrization: ng.p.Parameter, budget: int | None = None, num_workers: int = 1) -> None:
        super().__init__(parametrization, budget=budget, num_workers=num_workers)
        dims = dimensions.dimensions(self.parametrization)
        if dims is None:
            raise ValueError(f"{self.algorithm} needs a parametrization of choices and bounded scalars only")
        self._dims = dims
        self._told: set[tuple[float, ...]] = set()
        self._pending: OrderedDict[tuple[float, ...], None] = OrderedDict()
        self._max_pending = 4 * num_workers + 64  # proposals never told (dropped by the caller) age out
        self._last_index = -1
        self._arrivals = 0
        self._seed = int(self._rng.randint(2**31))  # from the parametrization's seeded random state
        self._asks_since_tell = 0
        self._draws = np.random.RandomState(self._seed)
        # The base class archives every told point; keep only a few (memory is bounded per Suggester).
        self.pruning = Pruning(min_len=10, max_len=40)

    def _begin_ask(self) -> None:
        """Key this ask's random draws (``self._draws``) by the results learnt so far."""
        learnt = [self._last_index + 1, len(self._told), self._asks_since_tell]
        self._draws = np.random.RandomState([self._seed, *learnt])
        self._asks_since_tell += 1

    def _fresh(self, genome: np.ndarray) -> bool:
        """Whether ``genome`` (as read back from a candidate) is neither told nor pending."""
        key = dimensions.key(genome)
        return key not in self._told and key not in self._pending

    def _settle(self, genome: np.ndarray) -> np.ndarray:
        """``genome`` as a candidate built from it reads back (integer casting)."""
        return dimensions.normalise(self._dims, genome[None, :])[0]

    def _propose(self, genome: np.ndarray) -> ng.p.Parameter:
        candidate = dimensions.write(self.parametrization, self._dims, genome)
        self._pending[dimensions.key(dimensions.read(self._dims, candidate))] = None
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
        return candidate

    def _random_fresh(self, tries: int = 64) -> np.ndarray | None:
        for genome in self._settle_all(dimensions.random(self._dims, self._draws, tries)):
            if self._fresh(genome):
                return genome
        return None

    def _settle_all(self, genomes: np.ndarray) -> np.ndarray:
        return dimensions.normalise(self._dims, genomes)

    def _internal_tell_candidate(self, candidate: ng.p.Parameter, loss: float) -> None:
        genome = dimensions.read(self._dims, candidate)
        key = dimensions.key(genome)
        self._pending.pop(key, None)
        if key in self._told:
            return  # a repeat says nothing new
        self._told.add(key)
        self._asks_since_tell = 0
        index = trial_index_of(candidate)
        if index is not None:
            self._last_index = max(self._last_index, index)
        self._arrivals += 1
        order = (index if index is not None else self._last_index, self._arrivals)
        value = float(loss)
        self._observe(order, genome, value if np.isfinite(value) else _WORST)

    def _internal_tell_not_asked(self, candidate: ng.p.Parameter, loss: float) -> None:
        self._internal_tell_candidate(candidate, loss)

    def _internal_provide_recommendation(self) -> None:
        return None

    def _observe(self, order: Order, genome: np.ndarray, loss: float) -> None:
        raise NotImplementedError
