"""The Suggester: a Nevergrad optimizer behind an idempotent, replayable ask/tell for one Experiment.

Trials are the record. ``sync(trials)`` tells every finished trial exactly once (keyed by
trial name) and notes which configurations are in flight; ``ask(n)`` proposes configurations
never run, running or already proposed. After a restart, ``Suggester(spec)`` plus ``sync(all
trials)`` rebuilds it: results the optimizer did not ask for are told as
``parametrization.spawn_child(new_value=...)`` candidates. Every told candidate carries its
trial's index (``algorithms.attach_trial_index``): a replay tells the best results first, and
optimizers whose state depends on order (ages, learning steps) put them back in trial order.

What each trial is told (losses are minimised):

- Succeeded and feasible: its loss (one per metric for a Pareto objective, so
  ``optimizer.pareto_front()`` works; one scalar for single and weighted objectives).
- Succeeded but infeasible (a constraint violated): worse than every result seen so far,
  graded by how far it misses its bounds, so the optimizer moves toward feasibility.
  Nevergrad's own ``constraint_violation`` is not used: it adds nothing to negative losses
  (maximised metrics) during the first half of the budget. Optimizers that model
  feasibility (``SurrogateLocalSearch``) also get every succeeded trial's unpenalised losses
  and constraint margins (``algorithms.attach_constrained``): an infeasible result still says
  how good that region is, and how far each constraint is from its bound.
- Failed (or Succeeded without its objective metrics): worse still, a fixed step beyond
  the infeasible band: nothing was learnt about quality, only that the region breaks.
- Early stopped: its partial result (final metrics, else the best curve point of the
  objective metric), but never better than the median result: it was stopped for being
  behind, and partial training flatters nobody. Stopped for a reported value that breaks a
  ``stopEarly`` constraint: infeasible, as a succeeded trial outside its bounds.
- Stopped (the experiment ended, the trial was interrupted or deleted): nothing; it says
  nothing about the configuration. It still counts as used and is never proposed again.

Memory and time are bounded (measured in ``benchmarks/suggest_overhead.py``): every
optimizer in the tree keeps a pruned archive of the best few candidates, the Suggester's own
history is (key, loss) pairs, and a replay tells the optimizer at most ``replay_batch``
results per ``sync`` (the best first, then the most recent), the rest in later syncs.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import nevergrad as ng
import numpy as np
from nevergrad.common import errors as ng_errors
from nevergrad.optimization.base import Optimizer
from nevergrad.optimization.utils import Pruning
from threadpoolctl import ThreadpoolController

from kubenas import algorithms, api, objective
from kubenas.space import Config, SearchSpace

ARCHIVE_SIZE = 2
"""Candidates each optimizer's archive keeps (per criterion) after pruning."""
REPLAY_BATCH = 24
"""Most results told to the optimizer in one ``sync``; a rebuild drains the rest over later syncs."""
ASK_RETRIES = 4
"""Optimizer asks tried per proposal before perturbing its last proposal."""
MUTATIONS = 8
"""Mutations of the optimizer's last (repeated) proposal tried before sampling the space directly."""
ENUMERATE_LIMIT = 20_000
"""Finite spaces up to this size are enumerated when the optimizer only proposes used configurations."""

_FAILURE_STEPS = 3.0  # failures land this many spreads beyond the worst result
_MAX_VIOLATION = 1.0  # relative violation beyond which infeasible trials are all equally bad

Loss = tuple[float, ...]
_UNFINISHED = frozenset(p for p in api.TrialPhase if not p.is_finished)


_blas: ThreadpoolController | None = None


@contextmanager
def _quiet() -> Iterator[None]:
    """Single-threaded BLAS, and no Nevergrad advisory warnings (they would flood an operator's log).

    Optimizers do linear algebra on small matrices; multithreaded BLAS turns each call into
    thread hand-offs that, on a busy 2-CPU machine, measured 30x slower than one thread.
    """
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    with warnings.catch_warnings(), _blas.limit(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ng_errors.NevergradWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _optimizers(root: Optimizer) -> Iterator[Optimizer]:
    """Every optimizer in a composition (NGOpt's choice, portfolios, chains), root first."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        opt = stack.pop()
        if id(opt) in seen:
            continue
        seen.add(id(opt))
        yield opt
        for value in vars(opt).values():
            if isinstance(value, Optimizer):
                stack.append(value)
            elif isinstance(value, list | tuple):
                stack.extend(v for v in value if isinstance(v, Optimizer))


def bound_memory(optimizer: Optimizer, archive_size: int = ARCHIVE_SIZE) -> None:
    """Make every optimizer in ``optimizer``'s tree prune its archive to the best ``archive_size``.

    Nevergrad's default keeps at least 100 archived candidates, tens of KiB each. Called again
    after tells because compositions such as NGOpt build their inner optimizer lazily.
    """
    for opt in _optimizers(optimizer):
        pruning = opt.pruning
        if not (isinstance(pruning, Pruning) and pruning.max_len <= 2 * archive_size):
            opt.pruning = Pruning(min_len=archive_size, max_len=2 * archive_size)
        if len(opt.archive) >= 2 * archive_size:
            opt.archive = opt.pruning(opt.archive)


@dataclass
class _Result:
    """A finished trial waiting to be told to the optimizer."""

    index: int
    key: str
    config: Config
    loss: Loss | None  # None: nothing to tell (Stopped)
    constrained: algorithms.ConstrainedResult | None = None  # a constrained objective's measured result


class Suggester:
    """Proposes trial configurations for one Experiment and learns from finished trials.

    Args:
        spec: the Experiment's spec; ``algorithm.seed`` seeds everything.
        replay_batch: most results told to the optimizer per ``sync`` (a rebuild drains the rest later).
        archive_size: candidates each optimizer's archive keeps.
        factory: builds the optimizer (default ``algorithms.build_optimizer``).

    Raises:
        ValueError: the space is malformed or the algorithm is unknown.

    Example:
        >>> spec = api.ExperimentSpec.model_validate({
        ...     "objective": {"metric": "acc", "goal": "maximize"},
        ...     "parameters": [{"name": "depth", "type": "int", "min": 1, "max": 4}],
        ...     "algorithm": {"name": "RandomSearch", "seed": 1},
        ...     "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "x"}]}}})
        >>> s = Suggester(spec)
        >>> configs = s.ask(2)
        >>> len(configs), configs[0] != configs[1]
        (2, True)
    """

    def __init__(
        self,
        spec: api.ExperimentSpec,
        *,
        replay_batch: int = REPLAY_BATCH,
        archive_size: int = ARCHIVE_SIZE,
        factory: Callable[[str, ng.p.Parameter, int | None, int], Optimizer] | None = None,
    ) -> None:
        self.spec = spec
        self.space = SearchSpace(spec.parameters)
        self._objective = spec.objective
        self._pareto = spec.objective.is_pareto
        seed = spec.algorithm.seed
        self._rng = np.random.default_rng(seed)
        self._replay_batch = max(1, replay_batch)
        self._archive_size = archive_size
        self._parametrization = self.space.parametrization(seed)
        budget = spec.algorithm.budget_hint or spec.budget.max_trials
        build = factory or algorithms.build_optimizer
        try:
            with _quiet():
                self.optimizer: Optimizer = build(
                    spec.algorithm.name, self._parametrization, budget, spec.budget.parallel_trials
                )
        except KeyError as exc:
            raise ValueError(f"unknown algorithm {spec.algorithm.name!r}") from exc
        bound_memory(self.optimizer, archive_size)
        self._lock = threading.RLock()  # the operator plans on a thread pool
        self._tell_not_asked = True
        self._max_asked = max(64, 4 * spec.budget.parallel_trials)
        # Everything below is the Suggester's own compact state.
        self._told: set[str] = set()  # trial names accounted for
        self._finished: dict[str, Loss | None] = {}  # key -> loss told (None: nothing told)
        self._indices: dict[str, int] = {}  # key -> index of the trial whose loss that is
        self._in_flight: set[str] = set()  # keys of pending/running trials
        self._running_keys: dict[str, str] = {}  # trial name -> key, while it runs
        self._asked: OrderedDict[str, ng.p.Parameter | None] = OrderedDict()  # proposed, not yet finished
        self._backlog: list[_Result] = []  # finished, not yet told to the optimizer
        self._losses: list[Loss] = []  # results (feasible or not) seen, for penalties
        # Finished trials whose loss is a penalty measured against results, while there is none:
        # told once the first result gives the penalty a scale (zero is no scale at all).
        self._deferred: list[tuple[api.Trial, str]] = []
        self._unscaled = False  # set by _ceiling when it had no result to measure against
        self._good: list[Loss] = []  # feasible results seen
        self._num_optimizer_tells = 0

    # ------------------------------------------------------------------ state

    @property
    def told(self) -> frozenset[str]:
        """Names of the finished trials accounted for."""
        return frozenset(self._told)

    @property
    def num_optimizer_tells(self) -> int:
        """Results told to the optimizer so far (Stopped trials and deferred replays excluded)."""
        return self._num_optimizer_tells

    @property
    def pending_replay(self) -> int:
        """Finished results recorded but not yet told to the optimizer (drained by later syncs)."""
        return len(self._backlog)

    @property
    def used(self) -> int:
        """Distinct configurations finished, running or proposed."""
        return len(self._taken())

    @property
    def exhausted(self) -> bool:
        """Whether every configuration of a finite space is finished, running or proposed."""
        size = self.space.cardinality
        return size is not None and len(self._taken()) >= size

    def _taken(self) -> set[str]:
        return self._finished.keys() | self._in_flight | self._asked.keys()

    def is_used(self, config: Config) -> bool:
        """Whether ``config`` is finished, running or already proposed."""
        return self.space.key(config) in self._taken()

    # ------------------------------------------------------------------ sync (tell)

    def sync(self, trials: Sequence[api.Trial]) -> list[str]:
        """Account for ``trials``: tell newly finished ones, note running ones. Idempotent.

        Returns:
            Names of the trials newly accounted for, in trial order.
        """
        with self._lock, _quiet():
            return self._sync(trials)

    def _sync(self, trials: Sequence[api.Trial]) -> list[str]:
        in_flight: set[str] = set()
        finished: list[api.Trial] = []
        told = self._told
        measured = self.spec.cost_measurement
        for trial in trials:
            # Under costMeasurement Always the search learns the measured latency, not the trial's own.
            if trial.status.phase in _UNFINISHED or objective.awaits_first_measurement(measured, trial):
                key = self._key_of(trial)
                if key is not None:
                    in_flight.add(key)
            elif trial.name not in told:
                finished.append(trial)
        finished.sort(key=lambda t: (t.spec.index, t.name))
        newly: list[str] = []
        for trial in finished:
            if trial.name in told:
                continue  # the same name twice in one call
            told.add(trial.name)
            newly.append(trial.name)
            key = self._key_of(trial)
            self._running_keys.pop(trial.name, None)
            if key is None:
                continue
            self._unscaled = False
            result = self._result(trial, key)
            if self._unscaled:
                self._finished[key] = None  # taken, never proposed again; told later
                self._deferred.append((trial, key))
                continue
            self._account(result)
        if self._deferred and self._losses:
            deferred, self._deferred = self._deferred, []
            for trial, key in deferred:
                self._account(self._result(trial, key))
        self._in_flight = in_flight
        if len(self._running_keys) > 2 * len(in_flight) + 64:  # running trials that vanished
            self._running_keys = {t.name: k for t in trials if (k := self._running_keys.get(t.name)) is not None}
        self._drain()
        return newly

    def _account(self, result: _Result) -> None:
        self._finished[result.key] = result.loss
        self._indices[result.key] = result.index
        if result.loss is None:
            self._drop_asked(result.key)
        else:
            self._backlog.append(result)

    def _key_of(self, trial: api.Trial) -> str | None:
        """The configuration key of a trial (cached while it runs: parameters never change)."""
        key = self._running_keys.get(trial.name)
        if key is None:
            try:
                key = self.space.key(trial.spec.parameters)
            except ValueError:
                return None  # parameters this space cannot read: nothing to learn, nothing to avoid
            if not trial.phase.is_finished:
                self._running_keys[trial.name] = key
        return key

    def _result(self, trial: api.Trial, key: str) -> _Result:
        config = self.space.normalise(trial.spec.parameters)
        # Stopped for a reported value that breaks a stopEarly constraint: infeasible, whatever it would have scored.
        broke = trial.phase == api.TrialPhase.EARLY_STOPPED and bool(
            objective.reported_violation(self._objective, trial.status.reported)
        )
        loss = self._loss(trial, broke)
        return _Result(trial.spec.index, key, config, loss, self._constrained(trial, loss, broke))

    def _constrained(self, trial: api.Trial, loss: Loss | None, broke: bool) -> algorithms.ConstrainedResult | None:
        """For optimizers that model feasibility: the unpenalised losses and each constraint's margin.

        A trial stopped for a reported value that breaks a ``stopEarly`` constraint has no quality
        to learn (its losses are the penalty told) but its margins are known.
        """
        if not self._objective.constraints:
            return None
        status = trial.status
        if broke and loss is not None:
            margins = objective.constraint_margins(self._objective, status.reported)
            return algorithms.ConstrainedResult(loss, tuple(margins))
        if trial.phase != api.TrialPhase.SUCCEEDED:
            return None
        raw = objective.loss_vector(self._objective, status.metrics)
        if raw is None:
            return None
        margins = objective.constraint_margins(self._objective, status.metrics)
        return algorithms.ConstrainedResult(tuple(raw), tuple(margins))

    def _loss(self, trial: api.Trial, broke: bool) -> Loss | None:
        phase, metrics = trial.phase, trial.status.metrics
        if phase == api.TrialPhase.STOPPED:
            return None
        raw = objective.loss_vector(self._objective, metrics)
        if phase == api.TrialPhase.SUCCEEDED and raw is not None:
            own = tuple(raw)
            self._losses.append(own)
            if objective.is_feasible(self._objective, metrics):
                self._good.append(own)
                return own
            return self._infeasible(own, objective.violations(self._objective, metrics))
        if broke:
            broken = objective.violations(self._objective, trial.status.reported)
            return self._infeasible(self._ceiling()[0], [v if math.isfinite(v) else 0.0 for v in broken])
        if phase == api.TrialPhase.EARLY_STOPPED:
            partial = tuple(raw) if raw is not None else self._curve_loss(trial)
            median = self._median()
            if partial is None:
                return median if median is not None else self._ceiling()[0]
            return partial if median is None else tuple(map(max, partial, median))
        return self._failure()

    def _curve_loss(self, trial: api.Trial) -> Loss | None:
        """A single objective's loss from the best point of its learning curve, when the curve is of it."""
        metrics = self._objective.objective_metrics()
        if len(metrics) != 1 or not trial.status.curve:
            return None
        if objective.curve_metric(self.spec) != metrics[0].name:
            return None
        values = [p.value for p in trial.status.curve if math.isfinite(p.value)]
        if not values:
            return None
        if metrics[0].goal == api.Goal.MAXIMIZE:
            return (-max(values),)
        return (min(values),)

    def _width(self) -> int:
        return len(self._objective.objective_metrics()) if self._pareto else 1

    def _ceiling(self) -> tuple[Loss, Loss]:
        """The worst result seen (per loss) and a spread: the scale penalties are measured in."""
        if not self._losses:
            self._unscaled = True
            zeros = (0.0,) * self._width()
            return zeros, (1.0,) * self._width()
        arr = np.asarray(self._losses, dtype=float)
        worst, best = arr.max(axis=0), arr.min(axis=0)
        spread = np.maximum(worst - best, np.maximum(np.abs(worst) * 0.1, 1e-6))
        return tuple(worst.tolist()), tuple(spread.tolist())

    def _median(self) -> Loss | None:
        if not self._good:
            return None
        return tuple(np.median(np.asarray(self._good, dtype=float), axis=0).tolist())

    def _infeasible(self, own: Loss, violations: list[float]) -> Loss:
        worst, spread = self._ceiling()
        relative = 0.0
        for c, v in zip(self._objective.constraints, violations, strict=True):
            scale = max(abs(b) for b in (c.min, c.max) if b is not None) or 1.0
            relative += v / scale if math.isfinite(v) else _MAX_VIOLATION
        grade = 1.0 + min(relative, _MAX_VIOLATION)
        return tuple(max(o, w) + s * grade for o, w, s in zip(own, worst, spread, strict=True))

    def _failure(self) -> Loss:
        worst, spread = self._ceiling()
        steps = 1.0 + _MAX_VIOLATION + _FAILURE_STEPS
        return tuple(w + s * steps for w, s in zip(worst, spread, strict=True))

    def _drain(self) -> None:
        """Tell the optimizer up to ``replay_batch`` backlog results: best and most recent first."""
        if not self._backlog:
            return
        if len(self._backlog) > self._replay_batch:
            self._prioritise()
            chosen, self._backlog = self._backlog[: self._replay_batch], self._backlog[self._replay_batch :]
            chosen.sort(key=lambda r: r.index)
        else:
            chosen, self._backlog = self._backlog, []
        for result in chosen:
            self._tell(result)
        bound_memory(self.optimizer, self._archive_size)

    def _prioritise(self) -> None:
        """Order the backlog: the best three quarters of a batch by loss, then the most recent."""
        losses = np.asarray([r.loss for r in self._backlog], dtype=float)
        # Rank each loss column, sum the ranks: one order for scalar and Pareto results alike.
        ranks = losses.argsort(axis=0, kind="stable").argsort(axis=0, kind="stable").sum(axis=1)
        best = [self._backlog[i] for i in np.argsort(ranks, kind="stable")]
        n_best = self._replay_batch - self._replay_batch // 4
        head = best[:n_best]
        chosen = {id(r) for r in head}
        recent = [r for r in sorted(self._backlog, key=lambda r: -r.index) if id(r) not in chosen]
        head += recent[: self._replay_batch - n_best]
        chosen = {id(r) for r in head}
        self._backlog = head + [r for r in best if id(r) not in chosen]

    def _tell(self, result: _Result) -> None:
        assert result.loss is not None
        candidate = self._asked.pop(result.key, None)
        if candidate is None:
            if not self._tell_not_asked:
                return
            try:
                candidate = self._parametrization.spawn_child(new_value=self.space.encode(result.config))
            except ValueError:
                return  # out of the space's bounds: the key still keeps it from being proposed
        loss: float | np.ndarray = result.loss[0] if len(result.loss) == 1 else np.asarray(result.loss)
        if result.constrained is not None:
            algorithms.attach_constrained(candidate, result.constrained)
        algorithms.attach_trial_index(candidate, result.index)
        try:
            self.optimizer.tell(candidate, loss)
        except ng_errors.TellNotAskedNotSupportedError:
            self._tell_not_asked = False
            return
        self._num_optimizer_tells += 1

    def _drop_asked(self, key: str) -> None:
        self._asked.pop(key, None)

    # ------------------------------------------------------------------ ask

    def ask(self, n: int) -> list[Config]:
        """Up to ``n`` distinct configurations, none finished, running or proposed before.

        Fewer only when a finite space runs out (``exhausted``).
        """
        with self._lock, _quiet():
            return self._ask(n)

    def _ask(self, n: int) -> list[Config]:
        out: list[Config] = []
        taken = self._taken()
        for _ in range(max(0, n)):
            proposal = self._ask_one(taken)
            if proposal is None:
                break
            key, config, candidate = proposal
            taken.add(key)
            self._asked[key] = candidate
            out.append(config)
        while len(self._asked) > self._max_asked:
            self._asked.popitem(last=False)  # proposals that never became trials
        return out

    def _ask_one(self, taken: set[str]) -> tuple[str, Config, ng.p.Parameter | None] | None:
        size = self.space.cardinality
        if size is not None and len(taken) >= size:
            return None
        candidate = None
        for _ in range(ASK_RETRIES):
            try:
                candidate = self.optimizer.ask()
            except Exception:  # an optimizer past its budget or confused: sample the space instead
                break
            config = self.space.decode(candidate.value)
            key = self.space.key(config)
            if key not in taken:
                return key, config, candidate
            known = self._finished.get(key)
            if known is not None:
                # Telling a repeat its known result moves population-based optimizers along; with its
                # trial's index, as its own tell (perhaps still in the replay backlog) would carry.
                algorithms.attach_trial_index(candidate, self._indices[key])
                self.optimizer.tell(candidate, known[0] if len(known) == 1 else np.asarray(known))
        if candidate is not None:
            # Optimizers that keep re-proposing their best (1+1 on mixed spaces): stay near it.
            for _ in range(MUTATIONS):
                child = candidate.spawn_child()
                child.mutate()
                config = self.space.decode(child.value)
                key = self.space.key(config)
                if key not in taken:
                    return key, config, child
        return self._sample(taken)

    def _sample(self, taken: set[str]) -> tuple[str, Config, None] | None:
        size = self.space.cardinality
        if size is not None and size <= ENUMERATE_LIMIT:
            free = [c for c in self.space.configurations() if self.space.key(c) not in taken]
            if not free:
                return None
            config = free[int(self._rng.integers(len(free)))]
            return self.space.key(config), config, None
        for _ in range(1000):
            config = self.space.sample(self._rng)
            key = self.space.key(config)
            if key not in taken:
                return key, config, None
        return None

    # ------------------------------------------------------------------ results

    def pareto_front(self) -> list[Config]:
        """The optimizer's Pareto front (Pareto objectives; empty otherwise)."""
        if not self._pareto or self.optimizer.num_objectives < 2:
            return []
        with self._lock, _quiet():
            return [self.space.decode(c.value) for c in self.optimizer.pareto_front()]


def spec_fingerprint(spec: api.ExperimentSpec) -> str:
    """A hash of what a Suggester is built from: a spec change makes a cached Suggester stale."""
    relevant = {
        "objective": spec.objective.to_wire(),
        "parameters": [p.to_wire() for p in spec.parameters],
        "algorithm": spec.algorithm.to_wire(),
        "maxTrials": spec.budget.max_trials,
        "parallelTrials": spec.budget.parallel_trials,
        "earlyStoppingMetric": spec.early_stopping.metric,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Nevergrad copies its parameter trees on every ask and tell; the freed copies leave holes
    in the C heap between long-lived objects, which measured a third of the fleet's RSS growth.
    """
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if isinstance(_libc, ctypes.CDLL):
        _libc.malloc_trim(0)


_libc: ctypes.CDLL | bool | None = None


class SuggesterCache:
    """Least-recently-used Suggesters by experiment (uid), rebuilt from the Trials when missing.

    A Suggester is kept only while its spec's fingerprint is unchanged; an evicted or stale one
    is rebuilt as ``Suggester(spec)`` and caught up by the caller's next ``sync(all trials)``.
    Safe to share between threads (each Suggester serialises its own calls).

    Args:
        max_entries: Suggesters kept in memory. Keep it at least the number of experiments
            running at once: a miss costs a rebuild (a replay of up to ``REPLAY_BATCH`` results).
        factory: builds a Suggester from a spec (default ``Suggester``).
        trim_every: ``get`` calls between two ``release_free_memory`` (0: never).

    Example:
        >>> cache = SuggesterCache(max_entries=32)
        >>> # suggester = cache.get(experiment.metadata.uid, experiment.spec); suggester.sync(trials)
    """

    def __init__(
        self,
        max_entries: int = 32,
        factory: Callable[[api.ExperimentSpec], Suggester] = Suggester,
        trim_every: int = 64,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._factory = factory
        self._trim_every = trim_every
        self._gets = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, Suggester]] = OrderedDict()

    def get(self, key: str, spec: api.ExperimentSpec) -> Suggester:
        """The Suggester for experiment ``key`` with ``spec``: cached, or new (then sync it with every trial)."""
        fingerprint = spec_fingerprint(spec)
        with self._lock:
            self._gets += 1
            if self._trim_every and self._gets % self._trim_every == 0:
                release_free_memory()
            entry = self._entries.get(key)
            if entry is not None and entry[0] == fingerprint:
                self._entries.move_to_end(key)
                return entry[1]
            suggester = self._factory(spec)
            self._entries[key] = (fingerprint, suggester)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return suggester

    def discard(self, key: str) -> None:
        """Forget experiment ``key`` (deleted or finished)."""
        with self._lock:
            self._entries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
