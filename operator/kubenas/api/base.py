"""Shared pieces of the API models: limits, the camelCase base model, enums and rules."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kubenas.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_PARAMETERS = 64
MAX_CATEGORICAL_VALUES = 256
MAX_WHEN_CONDITIONS = 8
MAX_METRICS = 16
MAX_NAME_LENGTH = 63
# Trial names are "<experiment>-<n>" and must stay DNS-1123 labels (≤ 63): room for "-99999".
MAX_EXPERIMENT_NAME_LENGTH = 56
MAX_PARETO_FRONT = 50
MAX_CURVE_POINTS = 500
MAX_CONDITIONS = 12
MAX_EXTRA_PARAMETERS = 32
"""Fixed trial parameters a staged experiment's section may give one stage (oneShot.supernet, ...)."""

# DNS-1123 label (Kubernetes object names) and metric/parameter identifiers.
# The built-in trainer's parameter that says what a trial does; a staged experiment's trials differ by it.
MODE = "mode"
TRAIN_MODE = "train"
"""The mode of an ordinary trial: train the network its parameters describe."""

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"

ParameterValue = Annotated[bool | int | float | str, Field(description="A parameter value (types kept as written).")]
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


# --------------------------------------------------------------------------- validation rules


class RuleViolation(ValueError):
    """A cross-field rule that a manifest breaks.

    Attributes:
        field: where, relative to the model that checked it (``max``, ``parameters[2].name``);
            empty for the model itself.
        message: what is wrong, the same words the CRD's CEL rule uses.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: its CEL form for the CRD and its message, shared with pydantic.

    Attributes:
        expression: CEL evaluated by the API server with ``self`` bound to the model's object.
        message: constant message (the API server refuses costly message expressions).
        field: the field the rule is about, relative to the model (CEL ``fieldPath``).
        reason: the API server's reason (FieldValueInvalid, FieldValueRequired, ...).
    """

    expression: str
    message: str
    field: str = ""
    reason: str = "FieldValueInvalid"

    def violation(self, field: str | None = None) -> RuleViolation:
        """The error pydantic raises for this rule, at ``field`` (default: the rule's field)."""
        return RuleViolation(self.field if field is None else field, self.message)

    def to_cel(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry."""
        entry = {"rule": self.expression, "message": self.message, "reason": self.reason}
        if self.field:
            entry["fieldPath"] = "." + self.field
        return entry


@dataclass(frozen=True)
class OperatorRule:
    """A cross-field rule the CRD cannot carry: CEL cannot see the fields it is about.

    The API server types ``self`` from the CRD schema, and a schemaless field (a parameter
    value, a ``when`` list) has no CEL type, so a rule naming it would get the whole CRD
    refused. The model's validator raises it instead: ``kubenas validate`` reports it and the
    operator sets ``Valid=False``; ``kubectl apply`` accepts the manifest.

    Attributes:
        message: what is wrong.
        field: the field the rule is about, relative to the model.
    """

    message: str
    field: str = ""

    def violation(self, field: str | None = None) -> RuleViolation:
        """The error pydantic raises for this rule, at ``field`` (default: the rule's field)."""
        return RuleViolation(self.field if field is None else field, self.message)


def cel_rules(*rules: Rule) -> dict[str, Any]:
    """``json_schema_extra`` carrying the CEL rules into the generated CRD."""
    return {"x-kubernetes-validations": [rule.to_cel() for rule in rules]}


def same_value(a: object, b: object) -> bool:
    """Equality that keeps YAML types apart (``1``, ``1.0`` and ``true`` are three values)."""
    return type(a) is type(b) and a == b


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
    QUEUED = "Queued"  # its Job waits for admission (suspended by a queue such as Kueue)
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    EARLY_STOPPED = "EarlyStopped"
    STOPPED = "Stopped"

    @property
    def is_finished(self) -> bool:
        return self not in (TrialPhase.PENDING, TrialPhase.QUEUED, TrialPhase.RUNNING)


class TrialReason(StrEnum):
    """Why a trial ended the way it did (Trial ``status.reason``)."""

    COMPLETED = "Completed"
    EXIT_CODE = "ExitCode"
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL = "ImagePullBackOff"
    INVALID_TEMPLATE = "InvalidTemplate"
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
