"""The Experiment spec: objective, search space, algorithm, budget, trial template.

Each cross-field rule is a :class:`Rule` declared beside its model: the CRD carries it as a
CEL ``x-kubernetes-validations`` entry and the model's validator raises the same message.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kubenas.api.base import (
    MAX_CATEGORICAL_VALUES,
    MAX_METRICS,
    MAX_NAME_LENGTH,
    MAX_WHEN_CONDITIONS,
    Goal,
    Identifier,
    MetricsSource,
    Model,
    OperatorRule,
    ParameterType,
    ParameterValue,
    Rule,
    Scale,
    StoppingRule,
    Strategy,
    cel_rules,
    same_value,
)

# --------------------------------------------------------------------------- objective


class ObjectiveMetric(Model):
    """One metric of a multi-metric objective."""

    name: Identifier = Field(description="Metric name, as reported by the trial.")
    goal: Goal = Field(description="Whether larger (maximize) or smaller (minimize) is better.")
    weight: float | None = Field(
        default=None,
        description="Weight in a weighted objective (strategy: weighted only, required there); the objective "
        "is sum(weight * value) with minimized metrics entering with their sign flipped.",
    )


CONSTRAINT_BOUND = Rule("has(self.min) || has(self.max)", "a constraint needs min or max", reason="FieldValueRequired")
CONSTRAINT_ORDER = Rule(
    "!has(self.min) || !has(self.max) || self.min <= self.max", "constraint min must not be greater than max", "max"
)


class Constraint(Model):
    """A bound on a reported metric; a trial outside it is infeasible."""

    model_config = ConfigDict(json_schema_extra=cel_rules(CONSTRAINT_BOUND, CONSTRAINT_ORDER))

    metric: Identifier = Field(description="Metric name, as reported by the trial.")
    min: float | None = Field(default=None, description="Smallest feasible value (inclusive).")
    max: float | None = Field(default=None, description="Largest feasible value (inclusive).")
    stop_early: bool = Field(
        default=False,
        description="Stop a running trial as soon as it reports a value outside the bounds: for metrics that do "
        "not change during training, such as params or flops. The trial ends EarlyStopped and counts as infeasible.",
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> Constraint:
        if self.min is None and self.max is None:
            raise CONSTRAINT_BOUND.violation()
        if self.min is not None and self.max is not None and self.min > self.max:
            raise CONSTRAINT_ORDER.violation()
        return self


ONE_OBJECTIVE_FORM = Rule(
    "has(self.metric) != has(self.metrics)", "set exactly one of objective.metric and objective.metrics"
)
GOAL_REQUIRED = Rule(
    "!has(self.metric) || has(self.goal)", "goal is required with metric", "goal", "FieldValueRequired"
)
GOAL_ONLY_WITH_METRIC = Rule(
    "has(self.metric) || !has(self.goal)", "goal belongs to each entry of metrics, not to the objective", "goal"
)
METRICS_DISTINCT = Rule(
    "!has(self.metrics) || self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))",
    "objective metrics must be distinct",
    "metrics",
)
STRATEGY_REQUIRED = Rule(
    "!has(self.metrics) || size(self.metrics) < 2 || has(self.strategy)",
    "strategy (pareto or weighted) is required with two or more metrics",
    "strategy",
    "FieldValueRequired",
)
STRATEGY_ONLY_WITH_METRICS = Rule(
    "!has(self.strategy) || has(self.metrics)", "strategy applies only to objective.metrics", "strategy"
)
WEIGHT_ONLY_WEIGHTED = Rule(
    "!has(self.metrics) || (has(self.strategy) && self.strategy == 'weighted') || self.metrics.all(m, !has(m.weight))",
    "weight is only allowed with strategy weighted",
    "metrics",
)
WEIGHT_REQUIRED = Rule(
    "!has(self.metrics) || !has(self.strategy) || self.strategy != 'weighted' || self.metrics.all(m, has(m.weight))",
    "strategy weighted needs a weight on every metric",
    "metrics",
    "FieldValueRequired",
)
TARGET_NOT_PARETO = Rule(
    "!has(self.targetValue) || !has(self.strategy) || self.strategy != 'pareto'",
    "targetValue cannot be used with strategy pareto (a Pareto front has no single value)",
    "targetValue",
)
STOP_EARLY_NOT_OBJECTIVE = Rule(
    "!has(self.constraints) || self.constraints.all(c, !has(c.stopEarly) || !c.stopEarly || "
    "(has(self.metric) ? c.metric != self.metric : !has(self.metrics) || !self.metrics.exists(m, m.name == c.metric)))",
    "stopEarly cannot be set on a constraint on an objective metric: it changes as the trial trains, so trials "
    "would be stopped on their first report; use it for values known before training, such as params or flops",
    "constraints",
)


class Objective(Model):
    """What the search optimises: one metric, or several (Pareto or weighted)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            ONE_OBJECTIVE_FORM,
            GOAL_REQUIRED,
            GOAL_ONLY_WITH_METRIC,
            METRICS_DISTINCT,
            STRATEGY_REQUIRED,
            STRATEGY_ONLY_WITH_METRICS,
            WEIGHT_ONLY_WEIGHTED,
            WEIGHT_REQUIRED,
            TARGET_NOT_PARETO,
            STOP_EARLY_NOT_OBJECTIVE,
        )
    )

    metric: Identifier | None = Field(default=None, description="The single objective metric.")
    goal: Goal | None = Field(default=None, description="Goal of the single objective metric (required with it).")
    metrics: list[ObjectiveMetric] | None = Field(
        default=None, min_length=1, max_length=MAX_METRICS, description="Several objective metrics (with strategy)."
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

    @model_validator(mode="after")
    def _check_form(self) -> Objective:
        if (self.metric is None) == (self.metrics is None):
            raise ONE_OBJECTIVE_FORM.violation()
        if self.metric is not None and self.goal is None:
            raise GOAL_REQUIRED.violation()
        if self.metric is None and self.goal is not None:
            raise GOAL_ONLY_WITH_METRIC.violation()
        metrics = self.metrics or []
        names = [m.name for m in metrics]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise METRICS_DISTINCT.violation(f"metrics[{i}].name")
        if len(metrics) >= 2 and self.strategy is None:
            raise STRATEGY_REQUIRED.violation()
        if self.strategy is not None and self.metrics is None:
            raise STRATEGY_ONLY_WITH_METRICS.violation()
        for i, m in enumerate(metrics):
            if self.strategy != Strategy.WEIGHTED and m.weight is not None:
                raise WEIGHT_ONLY_WEIGHTED.violation(f"metrics[{i}].weight")
            if self.strategy == Strategy.WEIGHTED and m.weight is None:
                raise WEIGHT_REQUIRED.violation(f"metrics[{i}].weight")
        if self.target_value is not None and self.strategy == Strategy.PARETO:
            raise TARGET_NOT_PARETO.violation()
        objective_names = {m.name for m in self.objective_metrics()}
        for i, c in enumerate(self.constraints):
            if c.stop_early and c.metric in objective_names:
                raise STOP_EARLY_NOT_OBJECTIVE.violation(f"constraints[{i}].stopEarly")
        return self

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


# --------------------------------------------------------------------------- search space

WhenValues = Annotated[list[ParameterValue], Field(min_length=1, max_length=MAX_CATEGORICAL_VALUES)]

MIN_REQUIRED = Rule(
    "self.type == 'categorical' || has(self.min)", "int and float parameters need min", "min", "FieldValueRequired"
)
MAX_REQUIRED = Rule(
    "self.type == 'categorical' || has(self.max)", "int and float parameters need max", "max", "FieldValueRequired"
)
MIN_BELOW_MAX = Rule("!has(self.min) || !has(self.max) || self.min < self.max", "min must be less than max", "max")
WHOLE_BOUNDS = Rule(
    "self.type != 'int' || ((!has(self.min) || self.min == double(int(self.min)))"
    " && (!has(self.max) || self.max == double(int(self.max))))",
    "int parameters need whole-number min and max",
)
LOG_NEEDS_POSITIVE_MIN = Rule(
    "!has(self.scale) || self.scale != 'log' || !has(self.min) || self.min > 0.0", "log scale needs min > 0", "min"
)
# `values` and `when` hold schemaless values (bool, int, float or string as written): the CRD
# gives them no CEL type, so a rule naming them would get the whole CRD refused. These rules
# are the model's (kubenas validate, the operator's Valid=False), not the API server's.
VALUES_REQUIRED = OperatorRule("categorical parameters need values", "values")
NO_BOUNDS_ON_CATEGORICAL = Rule(
    "self.type != 'categorical' || (!has(self.min) && !has(self.max))",
    "categorical parameters take values, not min or max",
)
VALUES_ONLY_CATEGORICAL = OperatorRule("only categorical parameters take values", "values")
VALUES_DISTINCT = OperatorRule("categorical values must be distinct", "values")
WHEN_NOT_SELF = OperatorRule("when must name another parameter, not the parameter itself", "when")
# Bounds beyond this overflow the search (a float range wider than the largest double) or lose
# integers (doubles hold every whole number up to 2**53 ≈ 9e15 exactly).
MAX_PARAMETER_BOUND = 10**15


class Parameter(Model):
    """One search dimension: an architecture choice or a hyperparameter."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            MIN_REQUIRED,
            MAX_REQUIRED,
            MIN_BELOW_MAX,
            WHOLE_BOUNDS,
            LOG_NEEDS_POSITIVE_MIN,
            NO_BOUNDS_ON_CATEGORICAL,
        )
    )

    name: Identifier = Field(description="Parameter name; reaches the trial under this key.")
    type: ParameterType = Field(description="int, float or categorical.")
    min: float | None = Field(
        default=None,
        ge=-MAX_PARAMETER_BOUND,
        le=MAX_PARAMETER_BOUND,
        description="Lower bound (int, float), inclusive; required for them. At most 1e15 in absolute value.",
    )
    max: float | None = Field(
        default=None,
        ge=-MAX_PARAMETER_BOUND,
        le=MAX_PARAMETER_BOUND,
        description="Upper bound (int, float), inclusive; required for them. At most 1e15 in absolute value.",
    )
    scale: Scale = Field(default=Scale.LINEAR, description="linear or log (log needs min > 0).")
    values: list[ParameterValue] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CATEGORICAL_VALUES,
        description="Choices (categorical only), distinct; each keeps its YAML type.",
    )
    when: dict[str, WhenValues] | None = Field(
        default=None,
        max_length=MAX_WHEN_CONDITIONS,
        description="Active only when each named (other) parameter takes one of the listed values; "
        "an inactive parameter is left out of the trial's parameters.",
    )

    @model_validator(mode="after")
    def _check_kind(self) -> Parameter:
        numeric = self.type != ParameterType.CATEGORICAL
        if numeric:
            if self.min is None:
                raise MIN_REQUIRED.violation()
            if self.max is None:
                raise MAX_REQUIRED.violation()
            if self.values is not None:
                raise VALUES_ONLY_CATEGORICAL.violation()
        else:
            if not self.values:
                raise VALUES_REQUIRED.violation()
            if self.min is not None or self.max is not None:
                raise NO_BOUNDS_ON_CATEGORICAL.violation("min" if self.min is not None else "max")
            for i, value in enumerate(self.values):
                if any(same_value(value, earlier) for earlier in self.values[:i]):
                    raise VALUES_DISTINCT.violation(f"values[{i}]")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise MIN_BELOW_MAX.violation()
        if self.type == ParameterType.INT:
            for field, bound in (("min", self.min), ("max", self.max)):
                if bound is not None and bound != int(bound):
                    raise WHOLE_BOUNDS.violation(field)
        if self.scale == Scale.LOG and self.min is not None and self.min <= 0:
            raise LOG_NEEDS_POSITIVE_MIN.violation()
        if self.when and self.name in self.when:
            raise WHEN_NOT_SELF.violation(f"when.{self.name}")
        return self

    def can_take(self, value: object) -> bool:
        """Whether this parameter can take ``value`` (what a ``when`` condition may list)."""
        if self.type == ParameterType.CATEGORICAL:
            return any(same_value(value, v) for v in self.values or [])
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == ParameterType.INT and value != int(value):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


# --------------------------------------------------------------------------- algorithm, budget, stopping


class Algorithm(Model):
    """The search algorithm."""

    name: str = Field(
        default="SurrogateLocalSearch",
        min_length=1,
        max_length=128,
        description="SurrogateLocalSearch (kubenas's default, chosen on search benchmarks), RegularizedEvolution, "
        "PolicyGradient, or any Nevergrad optimizer name (e.g. NGOpt, TwoPointsDE, RandomSearch, CMA).",
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


PARALLEL_WITHIN_MAX = Rule(
    "!has(self.parallelTrials) || !has(self.maxTrials) || self.parallelTrials <= self.maxTrials",
    "parallelTrials must not be greater than maxTrials",
    "parallelTrials",
)


class Budget(Model):
    """How much the experiment may spend."""

    model_config = ConfigDict(json_schema_extra=cel_rules(PARALLEL_WITHIN_MAX))

    max_trials: int = Field(default=20, ge=1, le=100_000, description="Trials to run in total.")
    parallel_trials: int = Field(default=1, ge=1, le=1_000, description="Trials running at once (≤ maxTrials).")
    max_failed_trials: int | None = Field(
        default=3, ge=0, description="The experiment fails when more trials than this have failed."
    )
    max_duration: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        max_length=32,
        description="Wall-clock limit, e.g. 2h or 1h30m; running trials are stopped when reached.",
    )

    @model_validator(mode="after")
    def _check_parallel(self) -> Budget:
        if self.parallel_trials > self.max_trials:
            raise PARALLEL_WITHIN_MAX.violation()
        return self

    @property
    def max_duration_seconds(self) -> float | None:
        return None if self.max_duration is None else parse_duration(self.max_duration)


class EarlyStopping(Model):
    """Stop unpromising trials from their intermediate metrics."""

    rule: StoppingRule | None = Field(
        default=None,
        description="none, median or asha; unset: median for a single-metric objective, none for a weighted or "
        "Pareto objective.",
    )
    metric: Identifier | None = Field(
        default=None,
        description="Intermediate metric to judge (default: the first objective metric); must be an objective "
        "metric or one of additionalMetrics.",
    )
    goal: Goal | None = Field(
        default=None,
        description="Direction of the judged metric (default: its goal in the objective); required for a metric "
        "from additionalMetrics, e.g. minimize for val_loss.",
    )
    min_epochs: int | None = Field(
        default=None, ge=1, description="Never stop a trial before this step (default: 1 for median, 2 for asha)."
    )
    reduction_factor: int = Field(default=2, ge=2, description="ASHA: keep 1/reductionFactor per rung.")
    min_trials: int = Field(
        default=3, ge=1, description="Median rule: trials that must have reached a step before judging."
    )


# --------------------------------------------------------------------------- trial template, metrics, export

TEMPLATE_HAS_CONTAINER = Rule(
    "has(self.spec.containers) && size(self.spec.containers) > 0",
    "trialTemplate.spec needs at least one container",
    "spec",
    "FieldValueRequired",
)
MAX_REPLICAS = 64
ONE_TRY_WITH_REPLICAS = Rule(
    "!has(self.replicas) || self.replicas == 1 || !has(self.backoffLimit) || self.backoffLimit == 0",
    "backoffLimit must be 0 when replicas is more than 1: a failure of any pod fails the trial",
    "backoffLimit",
)
CONTAINER_HAS_IMAGE = Rule(
    "has(self.image) && size(self.image) > 0",
    "a container needs an image",
    "image",
    "FieldValueRequired",
)
MAX_CONTAINERS = 64
MAX_IMAGE_LENGTH = 4096
# Kueue reads a Job's LocalQueue from this label.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# A LocalQueue name that is also a label value (DNS-1123 subdomain, at most 63 characters).
QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class ContainerShape(BaseModel):
    """The part of a container the CRD types; every other field is kept as written."""

    model_config = ConfigDict(extra="allow", json_schema_extra=cel_rules(CONTAINER_HAS_IMAGE))

    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH, description="Container name (a DNS-1123 label).")
    image: str | None = Field(
        default=None, max_length=MAX_IMAGE_LENGTH, description="Container image; required (a Pod needs one)."
    )

    @model_validator(mode="after")
    def _check_image(self) -> ContainerShape:
        if not self.image:
            raise CONTAINER_HAS_IMAGE.violation()
        return self


class PodSpecShape(BaseModel):
    """The part of a PodSpec the CRD types (so its rules can read it); the rest is kept as written."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    containers: list[ContainerShape] | None = Field(
        default=None,
        max_length=MAX_CONTAINERS,
        description="The pod's containers, at least one; the first is the trial.",
    )
    init_containers: list[ContainerShape] | None = Field(
        default=None, max_length=MAX_CONTAINERS, description="Containers run before the others."
    )


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(
                {**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}, defs
            )
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _typed_part(model: type[BaseModel]) -> dict[str, Any]:
    """``json_schema_extra`` giving a schemaless object the properties of ``model`` (types and rules)."""
    schema = model.model_json_schema(by_alias=True)
    return {"properties": _inline_refs(schema["properties"], schema.get("$defs", {}))}


class TrialTemplate(Model):
    """How a trial runs: a PodTemplateSpec plus Job-level settings."""

    model_config = ConfigDict(json_schema_extra=cel_rules(TEMPLATE_HAS_CONTAINER, ONE_TRY_WITH_REPLICAS))

    metadata: dict[str, Any] | None = Field(default=None, description="Pod template metadata (labels, annotations).")
    spec: dict[str, Any] = Field(
        description="A Kubernetes PodSpec; its first container is the trial. Kept as written; the operator "
        "replaces restartPolicy with Never (retries are backoffLimit's).",
        json_schema_extra=_typed_part(PodSpecShape),
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Trial deadline: the Job is ended after this many seconds."
    )
    backoff_limit: int = Field(default=0, ge=0, le=10, description="Job retries before the trial fails.")
    replicas: int = Field(
        default=1,
        ge=1,
        le=MAX_REPLICAS,
        description="Pods per trial. With more than 1 the trial is an Indexed Job whose pods find each other "
        "through a headless Service and get MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK, NPROC_PER_NODE and "
        "WORLD_SIZE (docs/gpu-clusters.md); pod 0's result is the trial's.",
    )
    retain: bool = Field(default=False, description="Keep finished Jobs and Pods (for debugging).")

    @field_validator("spec")
    @classmethod
    def _check_typed_part(cls, spec: dict[str, Any]) -> dict[str, Any]:
        PodSpecShape.model_validate(spec)  # the CRD's checks of the typed part; the spec stays as written
        return spec

    @model_validator(mode="after")
    def _check_containers(self) -> TrialTemplate:
        containers = self.spec.get("containers")
        if not isinstance(containers, list) or not containers:
            raise TEMPLATE_HAS_CONTAINER.violation("spec.containers")
        if self.replicas > 1 and self.backoff_limit != 0:
            raise ONE_TRY_WITH_REPLICAS.violation()
        return self

    def queue_label(self) -> str | None:
        """The template's ``kueue.x-k8s.io/queue-name`` label, if it has one."""
        labels = (self.metadata or {}).get("labels")
        value = labels.get(QUEUE_LABEL) if isinstance(labels, dict) else None
        return None if value is None else str(value)


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


class Remeasure(StrEnum):
    NEVER = "Never"
    NOISY = "Noisy"
    FRONT = "Front"
    ALWAYS = "Always"


MAX_COST_ATTEMPTS = 5
MAX_NODE_SELECTOR = 64


class CostMeasurement(Model):
    """Measuring a trained trial's latency again, apart from its training (docs/trial.md#latency)."""

    remeasure: Remeasure = Field(
        default=Remeasure.NOISY,
        description="Noisy: a succeeded trial whose latency_ms stayed noisy is measured again from its saved model, "
        "one at a time once no trial of the experiment is running, before it may be the best, on the Pareto front "
        "or exported. Front: as Noisy, and every trial on the Pareto front or within 1.5x of its edge in latency_ms "
        "is measured again once, which catches a value slowed by steady interference that its spread did not show. "
        "Always: every succeeded trial's latency comes from such a measurement (started as soon as "
        "the trial succeeds), e.g. on the deployment target's node type. Never: a noisy trial stays out. Needs "
        "the trial's model: locally always there; on a cluster, export.artifactVolume.",
    )
    attempts: int = Field(
        default=3, ge=1, le=MAX_COST_ATTEMPTS, description="Measurements of one trial at most while it stays noisy."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_NODE_SELECTOR,
        description="Cluster: nodeSelector of the measurement pod (the deployment target's node type), added to "
        "the trial template's.",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, max_length=MAX_NODE_SELECTOR, description="Cluster: tolerations of the measurement pod."
    )
    resources: dict[str, Any] | None = Field(
        default=None,
        description="Cluster: resources of the measurement container (default: the trial container's). Requests "
        "equal to limits give the measurement its CPUs to itself.",
    )
