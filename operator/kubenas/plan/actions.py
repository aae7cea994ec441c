"""The planner's vocabulary: the actions it returns, the Plan, and the Suggester it needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from kubenas import api

A = TypeVar("A")


class Suggester(Protocol):
    """What the planner needs from ``kubenas.search.Suggester``."""

    def sync(self, trials: Sequence[api.Trial]) -> list[str]: ...

    def ask(self, n: int) -> list[dict[str, api.ParameterValue]]: ...

    @property
    def exhausted(self) -> bool: ...


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class CreateTrial:
    """Create Trial ``name`` (``<experiment>-<index>``) with these parameters, then its workload."""

    name: str
    index: int
    parameters: Mapping[str, api.ParameterValue]
    # One-shot stage 2: the trial whose output directory holds the supernet checkpoint; the
    # backend adds that directory, as the trial sees it, as parameter ``supernet``
    # (``workload.trial_parameters``).
    supernet: str | None = None


@dataclass(frozen=True)
class StopTrial:
    """End a pending or running trial; the backend records ``reason`` as its final reason.

    ``EarlyStopped`` becomes trial phase EarlyStopped; ``ExperimentFinished`` becomes Stopped.
    """

    name: str
    reason: api.TrialReason
    message: str


@dataclass(frozen=True)
class PromoteTrial:
    """ASHA kept this running trial at ``rung``: record it in ``status.rung`` so it is not judged there again."""

    name: str
    rung: int


@dataclass(frozen=True)
class TellResult:
    """Informational: this finished trial's result was newly told to the optimizer."""

    name: str
    phase: api.TrialPhase


@dataclass(frozen=True)
class CompleteExperiment:
    """The experiment reached a terminal phase in this plan (emitted once, on the transition)."""

    phase: api.ExperimentPhase
    reason: api.CompletionReason
    message: str


@dataclass(frozen=True)
class ExportBest:
    """Export this trial as the experiment's result (ConfigMap, best.json, artifacts)."""

    trial: api.TrialSummary


@dataclass(frozen=True)
class MeasureCost:
    """Measure this succeeded trial's latency again from its saved model (``spec.costMeasurement``).

    ``attempt`` is 1 + the measurements already recorded; a backend starts at most one
    measurement per (trial, attempt) and records its result in the Trial's status.
    """

    name: str
    attempt: int


Action = CreateTrial | StopTrial | PromoteTrial | TellResult | CompleteExperiment | ExportBest | MeasureCost


@dataclass(frozen=True)
class Plan:
    """What to do now, and the whole Experiment status to write once it is done.

    Actions come in the order to apply them: tells, stops, promotions, creates, measurements,
    completion, export.
    """

    actions: tuple[Action, ...]
    status: api.ExperimentStatus

    def of_type(self, kind: type[A]) -> list[A]:
        """The actions of one kind, in order."""
        return [a for a in self.actions if isinstance(a, kind)]


@dataclass(frozen=True)
class Outcome:
    """How the experiment ends (internal to the planner)."""

    phase: api.ExperimentPhase
    reason: str  # a CompletionReason, unless an older status said otherwise
    message: str


@dataclass(frozen=True)
class Decision:
    """What the planner decided before the status is built (internal to the planner)."""

    outcome: Outcome | None
    creates: tuple[CreateTrial, ...] = ()
    stops: tuple[StopTrial, ...] = ()
    promotions: tuple[PromoteTrial, ...] = ()
    measurements: tuple[MeasureCost, ...] = ()
