"""``SurrogateLocalSearch``, kubenas's default algorithm.

A Nevergrad optimizer (ask/tell over any parametrization made of choices and bounded scalars, as
``kubenas.space`` builds them). Each ask draws a Thompson sample from a Bayesian additive model
of the rank-normalised losses (one-hot per categorical, linear + quadratic per numeric
dimension) and proposes the unseen configuration the sample likes best among: the neighbours of
the best configurations so far (one dimension changed), the sample's own optimum, and a few
random points. The neighbourhoods capture the interactions an additive model cannot; the model
orders them. Every step is a few small numpy operations, so ask+tell stays far below a
millisecond-scale budget, and the state is only the told (configuration, loss) pairs: telling
configurations it never asked (a rebuild replaying history) is the same as telling its own.

Constraints: when a told candidate carries a ``ConstrainedResult`` (the Suggester attaches one
to every succeeded trial of a constrained objective), the quality model learns the
unpenalised losses, infeasible results included, and a second Bayesian model per constraint
learns its signed margin. Each ask then scores a configuration by its Thompson-sampled
quality minus a penalty: a step where the margin model predicts a violation, and a slope
within a safety room as wide as that model's leave-one-out error. It climbs from the best
*feasible* configurations: the search keeps what it learnt about quality beyond the boundary
and proposes configurations it expects to be feasible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nevergrad as ng
import numpy as np
from nevergrad.optimization import base
from nevergrad.optimization.utils import Pruning

from kubenas.algorithms import dimensions
from kubenas.algorithms.attachments import constrained_of


@dataclass(frozen=True)
class _MarginModel:
    """One constraint's fitted margin regression (dual form), and its leave-one-out error."""

    constraint: int
    rows: np.ndarray  # the modelled points (features are rebuilt per ask: memory stays small)
    margins: np.ndarray
    kernel_inv: np.ndarray
    error: float


@dataclass(frozen=True)
class Settings:
    """``SurrogateLocalSearch``'s tuning knobs (tuned on NAS-Bench-201 CIFAR-10, seeds 100–115)."""

    initial: int | None = None  # random points before the model leads (default: from the dimension count)
    elites: int = 3  # best configurations the climb starts from
    random_starts: int = 3  # random configurations it also starts from
    random_pool: int = 30  # random configurations scored on every ask
    climb_steps: int = 8
    steps: tuple[float, ...] = (0.05, 0.15, 0.3)  # scalar step sizes in a neighbourhood
    interaction: float = 0.02  # prior scale of pairwise interactions (0: additive model)
    noise: float = 0.2  # observation noise of the quality model
    max_features: int = 800  # interactions only while the feature count stays below this
    max_points: int = 160  # points the quality model keeps (the margin models: half)
    exploration: float = 0.3  # Thompson sample scale (1: the full posterior)
    batch_spread: float = 2.0  # how much wider the sample gets per pending proposal
    violation_penalty: float = 3.0  # quality units lost where a constraint may be violated
    margin_exploration: float = 0.0  # margin models: the posterior mean
    margin_safety: float = 1.0  # safety room, in leave-one-out errors of a margin model
    margin_noise: float = 0.01  # observation noise of the margin models (costs are near-deterministic)


class _SurrogateLocalSearch(base.Optimizer):
    def __init__(
        self, parametrization: ng.p.Parameter, budget: int | None = None, num_workers: int = 1, **settings: Any
    ) -> None:
        super().__init__(parametrization, budget=budget, num_workers=num_workers)
        dims = dimensions.dimensions(self.parametrization)
        if dims is None:
            raise ValueError("SurrogateLocalSearch needs choices and bounded scalars only")
        self._dims = dims
        self._s = Settings(**settings)
        initial = self._s.initial
        self._initial = initial if initial is not None else max(3, min(8, (len(dims) + 1) // 2 + 2))
        self._genomes: list[np.ndarray] = []
        self._losses: list[np.ndarray] = []  # what the quality model learns (unpenalised when known)
        self._infeasible: list[bool] = []  # per point: a constraint is known to be violated
        self._margin_points: list[int] = []  # the points told with any known constraint margin
        self._margin_values: list[np.ndarray] = []  # and their margins (inf: unknown)
        self._margin_models: list[_MarginModel] | None = None
        self._told: set[tuple[float, ...]] = set()
        self._pending: set[tuple[float, ...]] = set()
        self._posterior: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._widths = [d.size if d.size else 2 for d in dims]
        self._offsets = np.concatenate([[0], np.cumsum(self._widths)]).astype(int)
        pairs = [(i, j) for i in range(len(dims)) for j in range(i + 1, len(dims))]
        n_pair = sum(self._widths[i] * self._widths[j] for i, j in pairs)
        # Pairwise interactions while they stay affordable (ask+tell must stay in milliseconds).
        interaction = self._s.interaction
        self._pairs = pairs if interaction > 0 and sum(self._widths) + n_pair <= self._s.max_features else []
        self._prior = np.concatenate(
            [np.ones(sum(self._widths)), np.full(n_pair if self._pairs else 0, interaction), [100.0]]
        )
        # The base class archives every told point; keep only a few (memory is bounded per Suggester).
        self.pruning = Pruning(min_len=10, max_len=40)

    # ------------------------------------------------------------------ genome <-> candidate

    def _genome(self, candidate: ng.p.Parameter) -> np.ndarray:
        return dimensions.read(self._dims, candidate)

    def _candidate(self, genome: np.ndarray) -> ng.p.Parameter:
        return dimensions.write(self.parametrization, self._dims, genome)

    @staticmethod
    def _key(genome: np.ndarray) -> tuple[float, ...]:
        return dimensions.key(genome)

    # ------------------------------------------------------------------ model

    def _blocks(self, genomes: np.ndarray) -> list[np.ndarray]:
        """Per-dimension feature blocks: one-hot for a choice, centred linear + quadratic for a scalar."""
        n = genomes.shape[0]
        blocks = []
        for i, d in enumerate(self._dims):
            g = genomes[:, i]
            if d.size:
                b = np.zeros((n, d.size))
                b[np.arange(n), g.astype(int)] = 1.0
            else:
                b = np.stack([g - 0.5, (g - 0.5) ** 2 * 4.0 - 1.0 / 3.0], axis=1)
            blocks.append(b)
        return blocks

    def _features(self, genomes: np.ndarray) -> np.ndarray:
        blocks = self._blocks(genomes)
        parts = list(blocks)
        if self._pairs:
            n = genomes.shape[0]
            parts += [(blocks[i][:, :, None] * blocks[j][:, None, :]).reshape(n, -1) for i, j in self._pairs]
        parts.append(np.ones((genomes.shape[0], 1)))
        return np.concatenate(parts, axis=1)

    def _fit(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-objective goodness of every point, the modelled points and their inverse kernel matrix.

        Cached until the next tell. Weight-space Bayesian regression in its dual form: the cost
        follows the number of points, which is capped (the best ones plus a spread of the rest, by
        rank), not the feature count; the kernel does not depend on the targets.
        """
        if self._posterior is None:
            losses = np.array(self._losses)  # (points, objectives)
            n = losses.shape[0]
            ranks = losses.argsort(axis=0, kind="stable").argsort(axis=0, kind="stable")
            goodness = 1.0 - (ranks + 0.5) / n  # per objective, in (0, 1), larger is better
            chosen = np.argsort(ranks.sum(axis=1), kind="stable")
            if n > self._s.max_points:
                half = self._s.max_points // 2
                rest = chosen[half:]
                chosen = np.concatenate([chosen[:half], rest[np.linspace(0, len(rest) - 1, half).astype(int)]])
            x = self._features(np.array(self._genomes)[chosen])
            kernel = (x * self._prior) @ x.T + self._s.noise * np.eye(len(chosen))
            # Features are rebuilt per ask rather than kept: memory per optimizer stays small.
            self._posterior = (goodness, chosen, np.linalg.inv(kernel))
        return self._posterior

    def _scalarised(self, goodness: np.ndarray) -> np.ndarray:
        """One objective per ask: itself, or a random Chebyshev scalarisation of several (ParEGO)."""
        if goodness.shape[1] == 1:
            return goodness[:, 0]
        weights = self._rng.dirichlet(np.ones(goodness.shape[1]))
        shortfall = weights * (1.0 - goodness)
        return -shortfall.max(axis=1) - 0.05 * shortfall.sum(axis=1)

    def _thompson_weights(self, target: np.ndarray) -> np.ndarray:
        """One posterior sample of the quality model's weights."""
        _, chosen, kernel_inv = self._fit()
        x = self._features(np.array(self._genomes)[chosen])
        ranks = target.argsort(kind="stable").argsort(kind="stable")
        # Normal scores of the ranks (larger is better): robust to diverged runs and the loss's scale.
        y = _normal_quantile((ranks[chosen] + 0.5) / len(ranks))
        return self._posterior_sample(x, kernel_inv, y)

    def _posterior_sample(
        self,
        x: np.ndarray,
        kernel_inv: np.ndarray,
        y: np.ndarray,
        exploration: float | None = None,
        noise: float | None = None,
    ) -> np.ndarray:
        """A sample of the weights given targets ``y`` (pathwise conditioning of a prior sample)."""
        rng = self._rng
        prior_sample = np.sqrt(self._prior) * rng.normal(size=self._prior.shape[0])
        noise = self._s.noise if noise is None else noise
        residual = y - x @ prior_sample - math.sqrt(noise) * rng.normal(size=len(y))
        sample = prior_sample + self._prior * (x.T @ (kernel_inv @ residual))
        mean = self._prior * (x.T @ (kernel_inv @ y))
        # Proposals of one batch share the data: spread them more the more are still pending.
        explore = self._s.exploration if exploration is None else exploration
        scale = explore * math.sqrt(1.0 + self._s.batch_spread * len(self._pending))
        return mean + scale * (sample - mean)

    def _fit_margins(self) -> list[_MarginModel]:
        """The feasibility model: one Bayesian regression per constraint with enough known margins.

        A constraint's model is fitted once three points carry its margin (a trial stopped for one
        constraint's reported value knows only that one). Cached until the next tell.
        """
        if self._margin_models is None:
            self._margin_models = []
            if self._margin_points:
                points, values = np.array(self._margin_points), np.array(self._margin_values)
                for c in range(values.shape[1]):
                    known = np.isfinite(values[:, c])
                    if known.sum() >= 3:
                        self._margin_models.append(self._fit_margin(c, points[known], values[known, c]))
        return self._margin_models

    def _fit_margin(self, constraint: int, rows: np.ndarray, margins: np.ndarray) -> _MarginModel:
        cap = self._s.max_points // 2
        if len(rows) > cap:
            # The half nearest the boundary (where the model must be right) and a spread of the rest.
            nearest = np.argsort(np.abs(margins), kind="stable")
            rest = np.sort(nearest[cap // 2 :])
            spread = rest[np.linspace(0, len(rest) - 1, cap - cap // 2).astype(int)]
            keep = np.sort(np.concatenate([nearest[: cap // 2], spread]))
            rows, margins = rows[keep], margins[keep]
        # Unit: the median distance from the boundary; not centred (zero is the boundary) and not
        # squashed: costs such as parameter counts are additive, and stay exactly learnable.
        scale = float(np.median(np.abs(margins))) or float(np.abs(margins).mean()) or 1.0
        y = margins / scale
        x = self._features(np.array(self._genomes)[rows])
        kernel_inv = np.linalg.inv((x * self._prior) @ x.T + self._s.margin_noise * np.eye(len(rows)))
        # Leave-one-out residuals of a Gaussian-process regression: (K^-1 y)_i / (K^-1)_ii.
        loo = (kernel_inv @ y) / np.diag(kernel_inv)
        return _MarginModel(constraint, rows, y, kernel_inv, float(np.sqrt(np.mean(loo**2))))

    def _scorer(self, target: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """This ask's acquisition: sampled quality, minus a penalty where a margin may be violated."""
        weights = self._thompson_weights(target)
        models = self._fit_margins()
        if not models:
            return lambda genomes: self._features(genomes) @ weights
        genomes = np.array(self._genomes)
        explore, noise = self._s.margin_exploration, self._s.margin_noise
        margin_weights = np.stack(
            [
                self._posterior_sample(self._features(genomes[m.rows]), m.kernel_inv, m.margins, explore, noise)
                for m in models
            ],
            axis=1,
        )
        # Room in proportion to each model's own error: none once the margins are predictable.
        penalty, offset = self._s.violation_penalty, self._s.margin_safety * np.array([m.error for m in models])

        def score(genomes: np.ndarray) -> np.ndarray:
            features = self._features(genomes)
            predicted = features @ margin_weights
            # A step where the model expects a violation; a slope inside the room it is unsure of,
            # so a configuration predicted right on the bound (often the best feasible one) stays
            # reachable when its quality is worth it.
            violated = (predicted > 0).any(axis=1)
            return features @ weights - penalty * (violated + np.maximum(predicted + offset, 0.0).sum(axis=1))

        return score

    # ------------------------------------------------------------------ ask / tell

    def _random(self, n: int) -> np.ndarray:
        return dimensions.random(self._dims, self._rng, n)

    def _neighbours(self, parents: np.ndarray) -> np.ndarray:
        """For each parent, every configuration one dimension away (scalars: steps of several sizes).

        Shape (parents, neighbours, dimensions); a choice's block includes the parent's own value.
        """
        m = parents.shape[0]
        parts = []
        for i, d in enumerate(self._dims):
            if d.size:
                values = np.broadcast_to(np.arange(d.size, dtype=float), (m, d.size))
            else:
                noise = self._rng.normal(size=(m, len(self._s.steps))) * np.asarray(self._s.steps)
                values = np.clip(parents[:, i : i + 1] + noise, 0.0, 1.0)
            block = np.repeat(parents[:, None, :], values.shape[1], axis=1)
            block[:, :, i] = values
            parts.append(block)
        return np.concatenate(parts, axis=1)

    def _climb(
        self, starts: np.ndarray, score_of: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Hill-climb the sampled model from every start at once; returns each neighbourhood seen, scored."""
        seen, scored = [starts], [score_of(starts)]
        current, score = starts, scored[0]
        for _ in range(self._s.climb_steps):
            block = self._neighbours(current)
            m, n, dims = block.shape
            flat = block.reshape(m * n, dims)
            scores = score_of(flat)
            seen.append(flat)
            scored.append(scores)
            scores = scores.reshape(m, n)
            best = scores.argmax(axis=1)
            better = scores[np.arange(m), best] > score
            if not better.any():
                break
            current = block[np.arange(m), best][better]
            score = scores[np.arange(m), best][better]
        return seen, scored

    def _internal_ask_candidate(self) -> ng.p.Parameter:
        genome = None
        if len(self._losses) >= self._initial:
            target = self._scalarised(self._fit()[0])
            score_of = self._scorer(target)
            # Climb from the best feasible configurations (infeasible ones sort last).
            order = np.lexsort((-target, np.array(self._infeasible)))[: self._s.elites]
            starts = np.concatenate([np.array(self._genomes)[order], self._random(self._s.random_starts)])
            seen, scored = self._climb(starts, score_of)
            pool = self._random(self._s.random_pool)
            candidates = self._normalise(np.concatenate([pool, *seen]))
            scores = np.concatenate([score_of(pool), *scored])
            for idx in np.argsort(-scores, kind="stable"):
                key = self._key(candidates[idx])
                if key not in self._told and key not in self._pending:
                    genome = candidates[idx]
                    break
        if genome is None:
            randoms = self._normalise(self._random(64))
            for candidate in randoms:
                key = self._key(candidate)
                if key not in self._told and key not in self._pending:
                    genome = candidate
                    break
            else:
                genome = randoms[0]
        cand = self._candidate(genome)
        self._pending.add(self._key(self._genome(cand)))
        return cand

    def _normalise(self, genomes: np.ndarray) -> np.ndarray:
        return dimensions.normalise(self._dims, genomes)

    def _internal_tell_candidate(self, candidate: ng.p.Parameter, loss: float) -> None:
        genome = self._genome(candidate)
        key = self._key(genome)
        self._pending.discard(key)
        if key in self._told:
            return
        self._told.add(key)
        self._genomes.append(genome)
        # Pareto objectives: Nevergrad hands us a hypervolume-based scalar; the vector is on the candidate.
        vector = getattr(candidate, "_losses", None)
        values = np.atleast_1d(np.asarray(vector if vector is not None else loss, dtype=float))
        constrained = constrained_of(candidate)
        margins = None
        if constrained is not None and len(constrained.losses) == len(values):
            values = np.asarray(constrained.losses, dtype=float)
            margins = np.asarray(constrained.margins, dtype=float)
        if self._losses and len(self._losses[0]) != len(values):
            values = np.full(len(self._losses[0]), float(loss))
        self._losses.append(np.where(np.isfinite(values), values, 5.0e20))
        if margins is not None and np.isfinite(margins).any():
            self._margin_points.append(len(self._genomes) - 1)
            self._margin_values.append(margins)
        self._infeasible.append(margins is not None and bool(np.any(margins > 0)))
        self._posterior = None
        self._margin_models = None

    def _internal_tell_not_asked(self, candidate: ng.p.Parameter, loss: float) -> None:
        self._internal_tell_candidate(candidate, loss)

    def _internal_provide_recommendation(self) -> None:
        return None


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation; scipy is not a dependency)."""
    a = (
        -39.69683028665376,
        220.9460984245205,
        -275.9285104469687,
        138.357751867269,
        -30.66479806614716,
        2.506628277459239,
    )
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
    c = (
        -0.007784894002430293,
        -0.3223964580411365,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    )
    dd = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    p = np.clip(p, 1e-12, 1 - 1e-12)
    out = np.empty_like(p)
    low, high = p < 0.02425, p > 1 - 0.02425
    mid = ~(low | high)
    q = p[mid] - 0.5
    r = q * q
    out[mid] = (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )
    for mask, sign in ((low, 1.0), (high, -1.0)):
        q = np.sqrt(-2 * np.log(p[mask] if sign > 0 else 1 - p[mask]))
        out[mask] = (
            sign
            * (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
            / ((((dd[0] * q + dd[1]) * q + dd[2]) * q + dd[3]) * q + 1)
        )
    return out


class SurrogateLocalSearch:
    """Factory for kubenas's model-guided local search; NGOpt on parametrizations it cannot handle."""

    def __init__(self, **config: object) -> None:
        self.config = config

    def __call__(
        self, parametrization: ng.p.Parameter, budget: int | None = None, num_workers: int = 1
    ) -> base.Optimizer:
        if dimensions.dimensions(parametrization) is None:
            return ng.optimizers.NGOpt(parametrization, budget=budget, num_workers=num_workers)
        return _SurrogateLocalSearch(parametrization, budget, num_workers, **self.config)
