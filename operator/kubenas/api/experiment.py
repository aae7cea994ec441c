"""The Experiment and Trial resources: spec rules across sections, status, metadata."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kubenas.api.base import (
    API_VERSION,
    MAX_CONDITIONS,
    MAX_CURVE_POINTS,
    MAX_EXPERIMENT_NAME_LENGTH,
    MAX_METRICS,
    MAX_NAME_LENGTH,
    MAX_PARAMETERS,
    MAX_PARETO_FRONT,
    NAME_PATTERN,
    ExperimentPhase,
    Goal,
    Model,
    OperatorRule,
    ParameterValue,
    Rule,
    RuleViolation,
    TrialPhase,
    TrialReason,
    cel_rules,
)
from kubenas.api.gradient import (
    ACCURACY_OBJECTIVE,
    EXTRA_NOT_SEARCHED,
    ONE_STAGED_MODE,
    SEARCH_ONLY,
    SEARCH_SETTINGS,
    GradientSearch,
)
from kubenas.api.gradient import RESERVED as GRADIENT_RESERVED
from kubenas.api.gradient import RESERVED_PARAMETERS as GRADIENT_RESERVED_PARAMETERS
from kubenas.api.oneshot import (
    ELASTIC_DIMENSIONS,
    ELASTIC_ONLY,
    RESERVED,
    RESERVED_PARAMETERS,
    WHOLE_VALUES,
    OneShot,
    dimension_values,
)
from kubenas.api.spec import (
    QUEUE_LABEL,
    QUEUE_NAME_PATTERN,
    Algorithm,
    Budget,
    CostMeasurement,
    EarlyStopping,
    Export,
    Metrics,
    Objective,
    Parameter,
    TrialTemplate,
)

UNIQUE_PARAMETER_NAMES = Rule(
    "self.parameters.all(p, self.parameters.exists_one(q, q.name == p.name))",
    "parameter names must be unique",
    "parameters",
)
# Not a CEL rule: `when` maps names to lists of schemaless values, which the CRD gives no CEL type.
WHEN_NAMES_A_PARAMETER = OperatorRule("when must name another parameter of this experiment", "parameters")
STOPPING_METRIC_REPORTED = Rule(
    "!has(self.earlyStopping) || !has(self.earlyStopping.metric)"
    " || (has(self.objective.metric) && self.objective.metric == self.earlyStopping.metric)"
    " || (has(self.objective.metrics) && self.objective.metrics.exists(m, m.name == self.earlyStopping.metric))"
    " || (has(self.objective.additionalMetrics) && self.earlyStopping.metric in self.objective.additionalMetrics)",
    "earlyStopping.metric must be an objective metric or one of objective.additionalMetrics",
    "earlyStopping.metric",
)
STOPPING_GOAL_KNOWN = Rule(
    "!has(self.earlyStopping) || !has(self.earlyStopping.metric) || has(self.earlyStopping.goal)"
    " || (has(self.objective.metric) && self.objective.metric == self.earlyStopping.metric)"
    " || (has(self.objective.metrics) && self.objective.metrics.exists(m, m.name == self.earlyStopping.metric))",
    "earlyStopping.goal is required when earlyStopping.metric is not an objective metric",
    "earlyStopping.goal",
    "FieldValueRequired",
)
PARAMETERS_IMMUTABLE = Rule(
    "self.parameters == oldSelf.parameters",
    "parameters are immutable after creation (create a new Experiment to change the search space)",
    "parameters",
    "FieldValueForbidden",
)
OBJECTIVE_IMMUTABLE = Rule(
    "self.objective == oldSelf.objective",
    "objective is immutable after creation (finished trials were judged by it)",
    "objective",
    "FieldValueForbidden",
)
# Transition rules need the stored object, so only the API server checks them.
TRANSITION_RULES = (PARAMETERS_IMMUTABLE, OBJECTIVE_IMMUTABLE)
# Not a CEL rule: the template's metadata is schemaless.
ONE_QUEUE = OperatorRule(
    f"queueName and the trial template's {QUEUE_LABEL} label name different queues: set one", "queueName"
)


class ExperimentSpec(Model):
    """Desired state of an Experiment."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            UNIQUE_PARAMETER_NAMES,
            STOPPING_METRIC_REPORTED,
            STOPPING_GOAL_KNOWN,
            ACCURACY_OBJECTIVE,
            ONE_STAGED_MODE,
            *TRANSITION_RULES,
        )
    )

    objective: Objective = Field(description="What the search optimises (immutable after creation).")
    parameters: list[Parameter] = Field(
        min_length=1, max_length=MAX_PARAMETERS, description="The search space (immutable after creation)."
    )
    algorithm: Algorithm = Field(default_factory=Algorithm, description="The search algorithm.")
    budget: Budget = Field(default_factory=Budget, description="How much the experiment may spend.")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping, description="Stopping unpromising trials.")
    trial_template: TrialTemplate = Field(description="How each trial runs.")
    metrics: Metrics = Field(default_factory=Metrics, description="Where intermediate metrics are read from.")
    export: Export = Field(default_factory=Export, description="Where the best result goes.")
    cost_measurement: CostMeasurement = Field(
        default_factory=CostMeasurement,
        description="Measuring a trained trial's latency again, apart from its training: noisy values before they "
        "may enter the front, or every value on a chosen node type.",
    )
    suspend: bool = Field(default=False, description="No new trials while true; running ones finish.")
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=QUEUE_NAME_PATTERN,
        description=f"Kueue LocalQueue (in the experiment's namespace) for every trial Job: the Job gets the label "
        f"{QUEUE_LABEL} and is created suspended, for Kueue to admit; a trial waiting for admission is Queued and "
        "counts against parallelTrials. Default: the trial template's label of that name, if any.",
    )
    one_shot: OneShot | None = Field(
        default=None,
        description="One-shot NAS (the built-in trainer's supernet modes): one trial trains a weight-sharing "
        "supernet, the search evaluates subnets that inherit its weights, the best topK are retrained standalone. "
        "On a cluster it needs export.artifactVolume (the supernet checkpoint travels there).",
    )
    gradient_search: GradientSearch | None = Field(
        default=None,
        description="Gradient-based cell search (the built-in trainer's gradient-search mode, GDAS or DARTS): "
        "budget.maxTrials search trials, each deriving a NAS-Bench-201 cell, then the topK distinct cells of "
        "the most accurate searches retrained from scratch. The searched parameters are the search trials' "
        "settings.",
    )

    @model_validator(mode="after")
    def _check_cross_references(self) -> ExperimentSpec:
        names = [p.name for p in self.parameters]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise UNIQUE_PARAMETER_NAMES.violation(f"parameters[{i}].name")
        for i, param in enumerate(self.parameters):
            for key, values in (param.when or {}).items():
                other = self.parameter(key)
                if other is None:
                    raise WHEN_NAMES_A_PARAMETER.violation(f"parameters[{i}].when.{key}")
                for j, value in enumerate(values):
                    if not other.can_take(value):
                        raise RuleViolation(
                            f"parameters[{i}].when.{key}[{j}]", f"when lists {value!r}, a value {key} cannot take"
                        )
        metric = self.early_stopping.metric
        reported = [m.name for m in self.objective.objective_metrics()] + self.objective.additional_metrics
        if metric is not None and metric not in reported:
            raise STOPPING_METRIC_REPORTED.violation()
        objective_names = [m.name for m in self.objective.objective_metrics()]
        if metric is not None and metric not in objective_names and self.early_stopping.goal is None:
            raise STOPPING_GOAL_KNOWN.violation()
        if self.gradient_search is not None:
            self._check_gradient_search(self.gradient_search)
        if self.one_shot is not None:
            self._check_one_shot(self.one_shot)
        label = self.trial_template.queue_label()
        if self.queue_name is not None and label is not None and label != self.queue_name:
            raise ONE_QUEUE.violation()
        return self

    def _check_one_shot(self, one_shot: OneShot) -> None:
        for i, param in enumerate(self.parameters):
            if param.name not in ELASTIC_DIMENSIONS:
                raise ELASTIC_ONLY.violation(f"parameters[{i}].name")
            if param.when or dimension_values(param.type, param.min, param.max, param.values) is None:
                raise WHOLE_VALUES.violation(f"parameters[{i}]")
        for section, extra in (("supernet", one_shot.supernet), ("retrain", one_shot.retrain)):
            for key in extra:
                if key in RESERVED_PARAMETERS or key in ELASTIC_DIMENSIONS:
                    raise RESERVED.violation(f"oneShot.{section}.{key}")

    def _check_gradient_search(self, gradient: GradientSearch) -> None:
        if self.one_shot is not None:
            raise ONE_STAGED_MODE.violation()
        objective = self.objective
        if objective.metric != "accuracy" or objective.goal != Goal.MAXIMIZE or objective.constraints:
            raise ACCURACY_OBJECTIVE.violation()
        names = [p.name for p in self.parameters]
        for i, name in enumerate(names):
            if name in GRADIENT_RESERVED_PARAMETERS:
                raise GRADIENT_RESERVED.violation(f"parameters[{i}].name")
        for section, extra in (("search", gradient.search), ("retrain", gradient.retrain)):
            for key in extra:
                if key in GRADIENT_RESERVED_PARAMETERS:
                    raise GRADIENT_RESERVED.violation(f"gradientSearch.{section}.{key}")
                if key in names:
                    raise EXTRA_NOT_SEARCHED.violation(f"gradientSearch.{section}.{key}")
                if section == "retrain" and key in SEARCH_ONLY:
                    raise SEARCH_SETTINGS.violation(f"gradientSearch.retrain.{key}")

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def queue(self) -> str | None:
        """The LocalQueue trial Jobs go to (queueName, else the template's queue label), or None."""
        return self.queue_name or self.trial_template.queue_label()


# --------------------------------------------------------------------------- status


class Condition(Model):
    """A standard Kubernetes condition."""

    type: str = Field(max_length=64, description="Condition type, e.g. Valid, Running, Complete.")
    status: str = Field(pattern=r"^(True|False|Unknown)$", description="True, False or Unknown.")
    reason: str = Field(default="", max_length=64, description="Machine-readable reason (CamelCase).")
    message: str = Field(default="", max_length=1024, description="Human-readable detail.")
    last_transition_time: datetime | None = Field(default=None, description="When status last changed.")
    observed_generation: int | None = Field(default=None, description="The spec generation this describes.")


class TrialCounts(Model):
    """How many trials are in each phase."""

    total: int = Field(default=0, description="Trials created so far.")
    pending: int = Field(default=0, description="Trials waiting to run.")
    queued: int = Field(default=0, description="Trials waiting for their queue (Kueue) to admit them.")
    running: int = Field(default=0, description="Trials running.")
    succeeded: int = Field(default=0, description="Trials that reported their objective.")
    failed: int = Field(default=0, description="Trials that failed.")
    early_stopped: int = Field(default=0, description="Trials stopped by the early-stopping rule.")
    stopped: int = Field(default=0, description="Trials stopped because the experiment ended.")


class TrialSummary(Model):
    """A trial as it appears in Experiment status (best trial, Pareto front)."""

    name: str = Field(description="Trial name.")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict, description="Its configuration.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Its final metrics.")
    value: float | None = Field(default=None, description="Objective value (single or weighted).")


class ExportStatus(Model):
    """What the export wrote."""

    config_map: str | None = Field(default=None, description="Name of the ConfigMap holding the best result.")
    artifact: str | None = Field(default=None, description="Path of the best trial's artifacts.")


class ExperimentStatus(Model):
    """Observed state of an Experiment; small whatever the trial count."""

    phase: ExperimentPhase = Field(
        default=ExperimentPhase.PENDING, description="Pending, Running, Succeeded, Failed or Stopped."
    )
    reason: str | None = Field(default=None, max_length=64, description="Why the phase is what it is.")
    message: str | None = Field(default=None, max_length=1024, description="Human-readable detail.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, description="Standard conditions (Valid, Complete, ...)."
    )
    observed_generation: int | None = Field(default=None, description="The spec generation last acted on.")
    trials: TrialCounts = Field(default_factory=TrialCounts, description="Trials by phase.")
    progress: str | None = Field(default=None, description="Finished/maxTrials, e.g. 7/20.")
    best_trial: TrialSummary | None = Field(default=None, description="The best feasible trial so far.")
    best_value: float | None = Field(default=None, description="Its objective value.")
    pareto_front: list[TrialSummary] = Field(
        default_factory=list, max_length=MAX_PARETO_FRONT, description="Pareto-optimal feasible trials (pareto)."
    )
    start_time: datetime | None = Field(default=None, description="When the first trial was created.")
    completion_time: datetime | None = Field(default=None, description="When the experiment finished.")
    export: ExportStatus | None = Field(default=None, description="What the export wrote.")
    stage: str | None = Field(
        default=None,
        max_length=32,
        description="A staged experiment's stage: SupernetTraining, SubnetSearch or Retraining (oneShot); "
        "CellSearch or Retraining (gradientSearch).",
    )


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


EXPERIMENT_NAME_LENGTH = Rule(
    f"!has(self.metadata.name) || size(self.metadata.name) <= {MAX_EXPERIMENT_NAME_LENGTH}",
    f"experiment name must be at most {MAX_EXPERIMENT_NAME_LENGTH} characters "
    "(trial names <experiment>-<n> must stay within 63)",
    "metadata.name",
    "FieldValueInvalid",
)
EXPERIMENT_NAME_FORMAT = Rule(
    f"!has(self.metadata.name) || self.metadata.name.matches('{NAME_PATTERN}')",
    "experiment name must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending "
    "with a letter or digit",
    "metadata.name",
)


class Experiment(Model):
    """An Experiment: a search over a space of trials."""

    model_config = ConfigDict(json_schema_extra=cel_rules(EXPERIMENT_NAME_LENGTH, EXPERIMENT_NAME_FORMAT))

    api_version: str = Field(default=API_VERSION, pattern=rf"^{re.escape(API_VERSION)}$")
    kind: str = Field(default="Experiment", pattern=r"^Experiment$")
    metadata: ObjectMeta
    spec: ExperimentSpec
    status: ExperimentStatus | None = None

    @model_validator(mode="after")
    def _check_name(self) -> Experiment:
        if len(self.metadata.name) > MAX_EXPERIMENT_NAME_LENGTH:
            raise EXPERIMENT_NAME_LENGTH.violation()
        if not re.fullmatch(NAME_PATTERN, self.metadata.name):
            raise EXPERIMENT_NAME_FORMAT.violation()
        return self


class CurvePoint(Model):
    """One intermediate value of the early-stopping metric."""

    step: int = Field(description="Training step (epoch) reported.")
    value: float = Field(description="Metric value at that step.")


class TrialSpec(Model):
    """Desired state of a Trial: one configuration to evaluate."""

    experiment: str = Field(max_length=MAX_NAME_LENGTH, description="Owning Experiment.")
    index: int = Field(ge=0, description="Trial number n in the name <experiment>-<n>.")
    parameters: dict[str, ParameterValue] = Field(
        max_length=MAX_PARAMETERS, description="The configuration (active parameters only)."
    )


class TrialStatus(Model):
    """Observed state of a Trial: phase, final metrics, a bounded learning curve."""

    phase: TrialPhase = Field(
        default=TrialPhase.PENDING,
        description="Pending, Queued (waiting for its queue to admit it), Running, Succeeded, Failed, EarlyStopped "
        "or Stopped.",
    )
    reason: TrialReason | None = Field(default=None, description="Why the trial ended the way it did.")
    message: str | None = Field(default=None, max_length=1024, description="Human-readable detail.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics.")
    curve: list[CurvePoint] = Field(
        default_factory=list,
        max_length=MAX_CURVE_POINTS,
        description="Intermediate values of the early-stopping metric by step.",
    )
    step: int | None = Field(default=None, description="Last step reported.")
    final_step: int | None = Field(
        default=None,
        description="The step the trial said its last report will carry (kubenas_trial_final_step); once the "
        "trial has reported it, it is never stopped early.",
    )
    reported: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_METRICS,
        description="Latest values, reported while running, of the metrics whose constraints stop early.",
    )
    rung: int | None = Field(
        default=None,
        ge=1,
        description="ASHA: the highest rung (step) at which the trial was judged and kept; not judged there again.",
    )
    noisy_metrics: list[str] = Field(
        default_factory=list,
        max_length=MAX_METRICS,
        description="Final metrics the trial itself flagged as unreliable (latency_ms when its result has "
        "latency_noisy=1): such a trial is never the best, on the Pareto front or exported when one of them is an "
        "objective metric.",
    )
    disruptions: int | None = Field(
        default=None,
        ge=0,
        description="Pods of the trial that ended because of a disruption (eviction, preemption, node shutdown or "
        "loss) and were replaced: not failures; the trial resumes from its checkpoint.",
    )
    last_disruption_time: datetime | None = Field(default=None, description="When the last counted disruption was.")
    requeues: int | None = Field(
        default=None,
        ge=0,
        description="Times the trial's Job was suspended again after it had started (Kueue preempted it) and the "
        "trial went back to Queued: not failures.",
    )
    cost_measurements: int | None = Field(
        default=None,
        ge=0,
        description="Latency measurements made after the trial succeeded (spec.costMeasurement); metrics then hold "
        "the last one, and latency_ms_trial the trial's own value.",
    )
    exit_code: int | None = Field(default=None, description="Exit code of the trial container.")
    start_time: datetime | None = Field(default=None, description="When the trial started running.")
    completion_time: datetime | None = Field(default=None, description="When the trial finished.")
    observed_generation: int | None = Field(default=None, description="The spec generation last acted on.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, description="Standard conditions."
    )


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
