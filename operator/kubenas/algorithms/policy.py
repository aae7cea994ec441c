"""``PolicyGradient``: a reinforcement-learning controller (REINFORCE, Williams 1992, as in Zoph & Le
2017 and ENAS), factorised over the dimensions.

The policy samples every dimension independently:

- a choice, and an integer with at most ``max_levels`` values: a softmax over its values;
- an integer with more values: a softmax over ``bins`` equal bins of its range (on a log scale
  for log-scaled ones), then a value drawn uniformly within the bin;
- a real number: a Gaussian over its range mapped to [0, 1] (log scale for log-scaled ones),
  mean and log standard deviation learnt, samples clipped to the bounds. Gaussian rather than
  bins because it has no resolution limit (a learning rate can be homed in on to any
  precision) and its learnt width is the controller's own exploration schedule: it narrows
  where results agree and widens when samples far from the mean do well.

Each result is a reward: its rank among the results so far (trial order), centred to
[-0.5, 0.5] (best +0.5), so that the scale of the loss, a diverged run or a penalty (failures
and constraint violations arrive as the Suggester's penalised losses) cannot swamp an update.
The advantage is the reward minus a moving-average baseline (decay ``baseline_decay``), and
each result takes one gradient step on its own log-probability: ``learning_rate`` on the
softmax logits, a natural-gradient step (the Gaussian's Fisher metric) on the mean and log
standard deviation with ``gaussian_rate``.

Results are learnt in trial order: the policy is a function of the results, not of the order a
rebuild replays them in, and a result told without being asked takes the same step as one the
controller sampled (its log-probability under the policy of the moment). Parallel asks sample the
same policy; no proposal repeats a configuration told or pending: after ``redraws`` draws
that do, the controller draws from a policy twice as flat (logits halved, standard deviations
doubled), then 4 and 8 times, then uniformly.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import nevergrad as ng
import numpy as np
from nevergrad.optimization import base

from kubenas.algorithms.ordered import Order, OrderedGenomeOptimizer

_SNAPSHOT_EVERY = 32  # policy states kept every this many results: re-learning after a late result is short
_MAX_LOGIT = 10.0
# A policy sure of itself keeps proposing what it has tried: it then draws from flatter versions of
# itself, which stay near its favourites (a dimension or two off) before it draws uniformly.
_FLATNESS = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class PolicySettings:
    """``PolicyGradient``'s knobs (the learning rate chosen on NAS-Bench-201 CIFAR-10 and CIFAR-100,
    seeds 100–115, from 0.25, 0.5, 1 and 2; the baseline decay from 0.8, 0.9 and 0.95)."""

    learning_rate: float = 2.0  # softmax logits, per result and unit advantage
    gaussian_rate: float = 0.5  # natural-gradient step of the Gaussians' mean and log-std
    baseline_decay: float = 0.9  # moving-average baseline: weight kept per result
    initial_std: float = 0.3  # Gaussians' standard deviation at the start, as a share of the range
    min_std: float = 0.02
    max_std: float = 0.5
    max_levels: int = 16  # integers with more values are binned
    bins: int = 8
    redraws: int = 16

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and self.gaussian_rate > 0):
            raise ValueError("learning rates must be positive")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError("baseline_decay must be in [0, 1)")
        if not 0 < self.min_std <= self.initial_std <= self.max_std:
            raise ValueError("need 0 < min_std <= initial_std <= max_std")
        if self.max_levels < 2 or self.bins < 2 or self.redraws < 1:
            raise ValueError("max_levels and bins must be at least 2, redraws at least 1")


@dataclass
class _State:
    """Everything the policy learnt from a prefix of the results."""

    logits: list[np.ndarray]  # per softmax dimension
    mean: np.ndarray  # per Gaussian dimension, in [0, 1]
    log_std: np.ndarray
    baseline: float = 0.0

    def copy(self) -> _State:
        return _State([x.copy() for x in self.logits], self.mean.copy(), self.log_std.copy(), self.baseline)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


class _PolicyGradient(OrderedGenomeOptimizer):
    algorithm = "PolicyGradient"

    def __init__(
        self, parametrization: ng.p.Parameter, budget: int | None = None, num_workers: int = 1, **settings: Any
    ) -> None:
        super().__init__(parametrization, budget, num_workers)
        s = self._s = PolicySettings(**settings)
        # Per dimension: ("choice", i) | ("levels", i) | ("bins", i) | ("gauss", j), i a softmax, j a Gaussian.
        self._kinds: list[tuple[str, int]] = []
        sizes: list[int] = []
        gaussians = 0
        for d in self._dims:
            if d.size:
                self._kinds.append(("choice", len(sizes)))
                sizes.append(d.size)
            elif d.integer and len(d.integers()) <= s.max_levels:
                self._kinds.append(("levels", len(sizes)))
                sizes.append(len(d.integers()))
            elif d.integer:
                self._kinds.append(("bins", len(sizes)))
                sizes.append(s.bins)
            else:
                self._kinds.append(("gauss", gaussians))
                gaussians += 1
        self._initial = _State(
            [np.zeros(n) for n in sizes], np.full(gaussians, 0.5), np.full(gaussians, np.log(s.initial_std))
        )
        self._state = self._initial.copy()
        # Results in trial order, and how many of them the state has learnt.
        self._orders: list[Order] = []
        self._actions: list[np.ndarray] = []
        self._losses: list[float] = []
        self._learnt = 0
        self._stale = 0  # results from this position on are not (correctly) in the state
        self._ranked: list[float] = []  # sorted losses of the learnt results
        self._snapshots: dict[int, _State] = {0: self._initial.copy()}

    # ------------------------------------------------------------------ the policy, as users inspect it

    def probabilities(self) -> list[np.ndarray | tuple[float, float]]:
        """Per dimension: a softmax's probabilities, or a Gaussian's (mean, standard deviation) in [0, 1]."""
        state = self._caught_up()
        out: list[np.ndarray | tuple[float, float]] = []
        for kind, k in self._kinds:
            if kind == "gauss":
                out.append((float(state.mean[k]), float(np.exp(state.log_std[k]))))
            else:
                out.append(_softmax(state.logits[k]))
        return out

    @property
    def baseline(self) -> float:
        return self._caught_up().baseline

    # ------------------------------------------------------------------ learning

    def _action(self, genome: np.ndarray) -> np.ndarray:
        """What the policy would have sampled to propose ``genome``: an index per softmax, a position per Gaussian."""
        out = np.empty(len(self._dims))
        for i, (d, (kind, _)) in enumerate(zip(self._dims, self._kinds, strict=True)):
            g = genome[i]
            if kind == "choice":
                out[i] = int(g)
            elif kind == "levels":
                out[i] = int(np.abs(d.integers() - np.round(d.value(g))).argmin())
            elif kind == "bins":
                out[i] = min(int(g * self._s.bins), self._s.bins - 1)
            else:
                out[i] = g
        return out

    def _observe(self, order: Order, genome: np.ndarray, loss: float) -> None:
        at = bisect.bisect(self._orders, order)
        self._orders.insert(at, order)
        self._actions.insert(at, self._action(genome))
        self._losses.insert(at, loss)
        if at < self._learnt:
            self._stale = min(self._stale, at)

    def _caught_up(self) -> _State:
        """The state after learning every result in trial order (re-learning from a snapshot after a late one)."""
        if self._stale < self._learnt:
            start = max(k for k in self._snapshots if k <= self._stale)
            self._snapshots = {k: v for k, v in self._snapshots.items() if k <= start}
            self._state = self._snapshots[start].copy()
            self._ranked = sorted(self._losses[:start])
            self._learnt = start
        while self._learnt < len(self._losses):
            self._learn(self._learnt)
            self._learnt += 1
            if self._learnt % _SNAPSHOT_EVERY == 0:
                self._snapshots[self._learnt] = self._state.copy()
        self._stale = self._learnt
        return self._state

    def _learn(self, position: int) -> None:
        """One REINFORCE step on the result at ``position``, after those before it."""
        s, state = self._s, self._state
        loss, action = self._losses[position], self._actions[position]
        bisect.insort(self._ranked, loss)
        n = len(self._ranked)
        # Mid-rank among the results so far (ties share it): 0 is the best.
        rank = (bisect.bisect_left(self._ranked, loss) + bisect.bisect_right(self._ranked, loss) - 1) / 2.0
        reward = 0.5 - (rank + 0.5) / n
        advantage = reward - state.baseline
        state.baseline = s.baseline_decay * state.baseline + (1.0 - s.baseline_decay) * reward
        for (kind, k), a in zip(self._kinds, action, strict=True):
            if kind == "gauss":
                std = float(np.exp(state.log_std[k]))
                delta = a - state.mean[k]
                z2 = min((delta / std) ** 2, 9.0)
                # Natural gradient: the score times the inverse Fisher (std^2 for the mean, 1/2 for log-std).
                state.mean[k] = np.clip(state.mean[k] + s.gaussian_rate * advantage * delta, 0.0, 1.0)
                log_std = state.log_std[k] + s.gaussian_rate * advantage * (z2 - 1.0) / 2.0
                state.log_std[k] = np.clip(log_std, np.log(s.min_std), np.log(s.max_std))
            else:
                logits = state.logits[k]
                grad = -_softmax(logits)
                grad[int(a)] += 1.0
                state.logits[k] = np.clip(logits + s.learning_rate * advantage * grad, -_MAX_LOGIT, _MAX_LOGIT)

    # ------------------------------------------------------------------ sampling

    def _sample(self, state: _State, flatness: float) -> np.ndarray:
        """A genome drawn from the policy (``flatness`` > 1: logits divided, standard deviations multiplied)."""
        rng = self._draws
        genome = np.empty(len(self._dims))
        for i, (d, (kind, k)) in enumerate(zip(self._dims, self._kinds, strict=True)):
            if kind == "gauss":
                std = float(np.exp(state.log_std[k])) * flatness
                genome[i] = min(max(state.mean[k] + std * rng.normal(), 0.0), 1.0)
                continue
            probabilities = _softmax(state.logits[k] / flatness)
            a = int(rng.choice(len(probabilities), p=probabilities))
            if kind == "choice":
                genome[i] = a
            elif kind == "levels":
                genome[i] = float(d.unit(d.integers()[a]))
            else:
                genome[i] = (a + rng.uniform()) / self._s.bins
        return self._settle(genome)

    def _internal_ask_candidate(self) -> ng.p.Parameter:
        self._begin_ask()
        state = self._caught_up()
        for flatness in _FLATNESS:
            for _ in range(self._s.redraws):
                genome = self._sample(state, flatness)
                if self._fresh(genome):
                    return self._propose(genome)
        fresh = self._random_fresh()
        return self._propose(fresh if fresh is not None else self._sample(state, 1.0))


class PolicyGradient:
    """Factory for the REINFORCE controller (``PolicySettings`` as keyword arguments)."""

    def __init__(self, **settings: Any) -> None:
        PolicySettings(**settings)  # bad settings fail here, not at the first experiment
        self.settings = settings

    def __call__(
        self, parametrization: ng.p.Parameter, budget: int | None = None, num_workers: int = 1
    ) -> base.Optimizer:
        return _PolicyGradient(parametrization, budget, num_workers, **self.settings)
