"""The kubenas API (group ``kubenas.io``, version ``v1alpha1``): Experiment and Trial.

These pydantic models are the single source of truth. The CRDs in ``crds/`` and the
chart are generated from them (``make crds``); ``kubenas validate`` and the operator
parse manifests with them. Field names are camelCase on the wire, snake_case in Python.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kubenas.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_PARAMETERS = 64
MAX_CATEGORICAL_VALUES = 256
MAX_METRICS = 16
MAX_NAME_LENGTH = 63
MAX_PARETO_FRONT = 50
MAX_CURVE_POINTS = 500
MAX_CONDITIONS = 8

# DNS-1123 label (Kubernetes object names) and metric/parameter identifiers.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"

ParameterValue = Annotated[
    bool | int | float | str, Field(description="A parameter value (types kept as written).")
]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=IDENTIFIER_PATTERN)]


class Model(BaseModel):
    """Base: camelCase aliases, unknown fields refused, assignment validated."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible camelCase form, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- enums


class Goal(StrEnum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class Strategy(StrEnum):
    PARETO = "pareto"
    WEIGHTED = "weighted"


class ParameterType(StrEnum):
    INT = "int"
    FLOAT = "float"
    CATEGORICAL = "categorical"


class Scale(StrEnum):
    LINEAR = "linear"
    LOG = "log"


class StoppingRule(StrEnum):
    NONE = "none"
    MEDIAN = "median"
    ASHA = "asha"


class MetricsSource(StrEnum):
    PROMETHEUS = "prometheus"
    DIRECT = "direct"


class ExperimentPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def is_finished(self) -> bool:
        return self in (ExperimentPhase.SUCCEEDED, ExperimentPhase.FAILED, ExperimentPhase.STOPPED)


class TrialPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    EARLY_STOPPED = "EarlyStopped"
    STOPPED = "Stopped"

    @property
    def is_finished(self) -> bool:
        return self not in (TrialPhase.PENDING, TrialPhase.RUNNING)


class TrialReason(StrEnum):
    """Why a trial ended the way it did (Trial ``status.reason``)."""

    COMPLETED = "Completed"
    EXIT_CODE = "ExitCode"
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL = "ImagePullBackOff"
    METRICS_MISSING = "MetricsMissing"
    INVALID_RESULT = "InvalidResult"
    CONSTRAINT_VIOLATED = "ConstraintViolated"
    EARLY_STOPPED = "EarlyStopped"
    EXPERIMENT_FINISHED = "ExperimentFinished"
    JOB_DELETED = "JobDeleted"
    INTERRUPTED = "Interrupted"


class CompletionReason(StrEnum):
    """Why an experiment reached a terminal phase (condition reason)."""

    BUDGET_SPENT = "BudgetSpent"
    TARGET_REACHED = "TargetReached"
    SPACE_EXHAUSTED = "SpaceExhausted"
    MAX_DURATION = "MaxDurationReached"
    TOO_MANY_FAILURES = "TooManyFailures"
    INVALID_SPEC = "InvalidSpec"
    NO_SUCCESSFUL_TRIAL = "NoSuccessfulTrial"


# --------------------------------------------------------------------------- spec


class ObjectiveMetric(Model):
    """One metric of a multi-metric objective."""

    name: Identifier = Field(description="Metric name, as reported by the trial.")
    goal: Goal = Field(description="Whether larger (maximize) or smaller (minimize) is better.")
    weight: float | None = Field(
        default=None,
        description="Weight in a weighted objective (strategy: weighted only); the objective is "
        "sum(weight * value) with minimized metrics entering with their sign flipped.",
    )


class Constraint(Model):
    """A bound on a reported metric; a trial outside it is infeasible."""

    metric: Identifier = Field(description="Metric name, as reported by the trial.")
    min: float | None = Field(default=None, description="Smallest feasible value (inclusive).")
    max: float | None = Field(default=None, description="Largest feasible value (inclusive).")


class Objective(Model):
    """What the search optimises: one metric, or several (Pareto or weighted)."""

    metric: Identifier | None = Field(default=None, description="The single objective metric.")
    goal: Goal | None = Field(default=None, description="Goal of the single objective metric.")
    metrics: list[ObjectiveMetric] | None = Field(
        default=None, max_length=MAX_METRICS, description="Several objective metrics (with strategy)."
    )
    strategy: Strategy | None = Field(
        default=None, description="How several metrics combine: pareto front or weighted sum."
    )
    constraints: list[Constraint] = Field(
        default_factory=list, max_length=MAX_METRICS, description="Feasibility bounds on metrics."
    )
    target_value: float | None = Field(
        default=None,
        description="Stop the experiment as soon as a feasible trial reaches this objective value "
        "(single or weighted objective only).",
    )
    additional_metrics: list[Identifier] = Field(
        default_factory=list, max_length=MAX_METRICS, description="Further metrics to record."
    )

    def objective_metrics(self) -> list[ObjectiveMetric]:
        """The objective as a list of metrics, whatever form the spec used."""
        if self.metrics:
            return list(self.metrics)
        if self.metric is not None:
            return [ObjectiveMetric(name=self.metric, goal=self.goal or Goal.MAXIMIZE)]
        return []

    @property
    def is_multi(self) -> bool:
        return bool(self.metrics) and len(self.metrics or []) > 1

    @property
    def is_pareto(self) -> bool:
        return self.is_multi and self.strategy == Strategy.PARETO

    def all_metric_names(self) -> list[str]:
        names = [m.name for m in self.objective_metrics()]
        names += [c.metric for c in self.constraints]
        names += list(self.additional_metrics)
        return list(dict.fromkeys(names))


class Parameter(Model):
    """One search dimension: an architecture choice or a hyperparameter."""

    name: Identifier = Field(description="Parameter name; reaches the trial under this key.")
    type: ParameterType = Field(description="int, float or categorical.")
    min: float | None = Field(default=None, description="Lower bound (int, float).")
    max: float | None = Field(default=None, description="Upper bound (int, float), inclusive.")
    scale: Scale = Field(default=Scale.LINEAR, description="linear or log (log needs min > 0).")
    values: list[ParameterValue] | None = Field(
        default=None, max_length=MAX_CATEGORICAL_VALUES, description="Choices (categorical)."
    )
    when: dict[str, list[ParameterValue]] | None = Field(
        default=None,
        description="Active only when each named parameter takes one of the listed values; "
        "an inactive parameter is left out of the trial's parameters.",
    )


class Algorithm(Model):
    """The search algorithm."""

    name: str = Field(
        default="NGOpt",
        min_length=1,
        max_length=128,
        description="Any Nevergrad optimizer name (e.g. NGOpt, TwoPointsDE, RandomSearch, CMA).",
    )
    seed: int | None = Field(default=None, ge=0, description="Seed: the same seed proposes the same trials.")
    budget_hint: int | None = Field(
        default=None, ge=1, description="Budget told to the optimizer (default: budget.maxTrials)."
    )


DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``1h30m`` or ``90s``."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 30m, 2h, 1h30m")
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|h|m|s)", text))


class Budget(Model):
    """How much the experiment may spend."""

    max_trials: int = Field(default=20, ge=1, le=100_000, description="Trials to run in total.")
    parallel_trials: int = Field(default=1, ge=1, le=1_000, description="Trials running at once.")
    max_failed_trials: int | None = Field(
        default=3, ge=0, description="The experiment fails when more trials than this have failed."
    )
    max_duration: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        max_length=32,
        description="Wall-clock limit, e.g. 2h or 1h30m; running trials are stopped when reached.",
    )

    @property
    def max_duration_seconds(self) -> float | None:
        return None if self.max_duration is None else parse_duration(self.max_duration)


class EarlyStopping(Model):
    """Stop unpromising trials from their intermediate metrics."""

    rule: StoppingRule = Field(default=StoppingRule.NONE, description="none, median or asha.")
    metric: Identifier | None = Field(
        default=None, description="Intermediate metric to judge (default: the objective metric)."
    )
    min_epochs: int = Field(default=1, ge=1, description="Never stop a trial before this step.")
    reduction_factor: int = Field(default=3, ge=2, description="ASHA: keep 1/reductionFactor per rung.")
    min_trials: int = Field(
        default=3, ge=1, description="Median rule: trials that must have reached a step before judging."
    )


class TrialTemplate(Model):
    """How a trial runs: a PodTemplateSpec plus Job-level settings."""

    metadata: dict[str, Any] | None = Field(default=None, description="Pod template metadata.")
    spec: dict[str, Any] = Field(description="A Kubernetes PodSpec; its first container is the trial.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Trial deadline: the Job is ended after this many seconds."
    )
    backoff_limit: int = Field(default=0, ge=0, le=10, description="Job retries before the trial fails.")
    retain: bool = Field(default=False, description="Keep finished Jobs and Pods (for debugging).")


class Metrics(Model):
    """Where intermediate metrics are read from."""

    port: int = Field(default=8000, ge=1, le=65535, description="Port of the trial's /metrics endpoint.")
    path: str = Field(default="/metrics", pattern=r"^/", max_length=256, description="Metrics path.")
    source: MetricsSource = Field(
        default=MetricsSource.PROMETHEUS,
        description="prometheus: query the Prometheus server; direct: scrape the trial pod.",
    )


class Export(Model):
    """Where the best result goes when the experiment ends."""

    config_map: bool = Field(default=True, description="Write ConfigMap <experiment>-best.")
    artifact_volume: str | None = Field(
        default=None, max_length=MAX_NAME_LENGTH, description="Volume of the trial template holding artifacts."
    )


class ExperimentSpec(Model):
    """Desired state of an Experiment."""

    objective: Objective
    parameters: list[Parameter] = Field(min_length=1, max_length=MAX_PARAMETERS)
    algorithm: Algorithm = Field(default_factory=Algorithm)
    budget: Budget = Field(default_factory=Budget)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    trial_template: TrialTemplate
    metrics: Metrics = Field(default_factory=Metrics)
    export: Export = Field(default_factory=Export)
    suspend: bool = Field(default=False, description="No new trials while true; running ones finish.")

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


# --------------------------------------------------------------------------- status


class Condition(Model):
    type: str = Field(max_length=64)
    status: str = Field(pattern=r"^(True|False|Unknown)$")
    reason: str = Field(default="", max_length=64)
    message: str = Field(default="", max_length=1024)
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class TrialCounts(Model):
    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    early_stopped: int = 0
    stopped: int = 0


class TrialSummary(Model):
    """A trial as it appears in Experiment status (best trial, Pareto front)."""

    name: str
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    value: float | None = Field(default=None, description="Objective value (single or weighted).")


class ExportStatus(Model):
    config_map: str | None = None
    artifact: str | None = None


class ExperimentStatus(Model):
    phase: ExperimentPhase = ExperimentPhase.PENDING
    reason: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=1024)
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    observed_generation: int | None = None
    trials: TrialCounts = Field(default_factory=TrialCounts)
    progress: str | None = Field(default=None, description="Finished/maxTrials, e.g. 7/20.")
    best_trial: TrialSummary | None = None
    best_value: float | None = None
    pareto_front: list[TrialSummary] = Field(default_factory=list, max_length=MAX_PARETO_FRONT)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    export: ExportStatus | None = None


class ObjectMeta(BaseModel):
    """The subset of metadata kubenas reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(max_length=253)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Experiment(Model):
    """An Experiment: a search over a space of trials."""

    api_version: str = Field(default=API_VERSION, pattern=rf"^{re.escape(API_VERSION)}$")
    kind: str = Field(default="Experiment", pattern=r"^Experiment$")
    metadata: ObjectMeta
    spec: ExperimentSpec
    status: ExperimentStatus | None = None


class CurvePoint(Model):
    step: int
    value: float


class TrialSpec(Model):
    """Desired state of a Trial: one configuration to evaluate."""

    experiment: str = Field(max_length=MAX_NAME_LENGTH, description="Owning Experiment.")
    index: int = Field(ge=0, description="Trial number n in the name <experiment>-<n>.")
    parameters: dict[str, ParameterValue] = Field(description="The configuration (active parameters only).")


class TrialStatus(Model):
    phase: TrialPhase = TrialPhase.PENDING
    reason: TrialReason | None = None
    message: str | None = Field(default=None, max_length=1024)
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics.")
    curve: list[CurvePoint] = Field(
        default_factory=list,
        max_length=MAX_CURVE_POINTS,
        description="Intermediate values of the early-stopping metric by step.",
    )
    step: int | None = Field(default=None, description="Last step reported.")
    exit_code: int | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)


class Trial(Model):
    """A Trial: one configuration, run as one Job."""

    api_version: str = Field(default=API_VERSION, pattern=rf"^{re.escape(API_VERSION)}$")
    kind: str = Field(default="Trial", pattern=r"^Trial$")
    metadata: ObjectMeta
    spec: TrialSpec
    status: TrialStatus = Field(default_factory=TrialStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def phase(self) -> TrialPhase:
        return self.status.phase


def trial_name(experiment: str, index: int) -> str:
    """The deterministic name of trial ``index`` of ``experiment``."""
    return f"{experiment}-{index}"
