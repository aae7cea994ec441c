"""``spec.oneShot``: one-shot NAS, a weight-sharing supernet trained once and searched, the best retrained.

The stages run the built-in trainer's supernet modes (docs/trial.md#one-shot-nas-the-supernet-modes):
the searched parameters must be the supernet's elastic dimensions, and the planner sets the
trial parameters that select a stage.
"""

from __future__ import annotations

from pydantic import Field

from kubenas.api.base import MAX_EXTRA_PARAMETERS, MODE, Model, OperatorRule, ParameterType, ParameterValue

# The trainer's elastic dimensions (kubenas_trial.supernet): a one-shot search space is made of these.
ELASTIC_DIMENSIONS = ("stages", "blocks", "width", "kernel_size", "expansion")
# Values per elastic dimension the trainer's supernet_space accepts.
MAX_DIMENSION_VALUES = 16
# Subnets one supernet-eval trial evaluates at most (its result must fit a termination message).
MAX_BATCH = 16
MAX_TOP_K = 20
# Trial parameters the planner sets to select a stage; no searched or extra parameter may use them.
SUPERNET = "supernet"
SUBNETS = "subnets"
SUPERNET_SPACE = "supernet_space"
RESERVED_PARAMETERS = (MODE, SUPERNET, SUBNETS, SUPERNET_SPACE)

ELASTIC_ONLY = OperatorRule(
    f"with oneShot every parameter must be an elastic dimension of the supernet ({', '.join(ELASTIC_DIMENSIONS)})",
    "parameters",
)
WHOLE_VALUES = OperatorRule(
    f"with oneShot a parameter is an int range or categorical whole numbers, at most {MAX_DIMENSION_VALUES} values, "
    "without when",
    "parameters",
)
RESERVED = OperatorRule(
    f"{', '.join(RESERVED_PARAMETERS)} are set by the one-shot stages; searched parameters are set by the search",
    "oneShot",
)


class OneShot(Model):
    """One-shot NAS: one supernet-training trial, a search over its subnets, the best retrained standalone."""

    supernet: dict[str, ParameterValue] = Field(
        default_factory=dict,
        max_length=MAX_EXTRA_PARAMETERS,
        description="Extra parameters of the supernet-training trial (stage 1), e.g. epochs and lr; the searched "
        "parameters' values become its supernet_space.",
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        le=MAX_BATCH,
        description="Subnets each search trial (stage 2) evaluates from the supernet checkpoint: one pod start-up "
        "for many evaluations. budget.maxTrials counts subnets evaluated, budget.parallelTrials trials at once.",
    )
    top_k: int = Field(
        default=3,
        ge=1,
        le=MAX_TOP_K,
        description="The best evaluated subnets (the Pareto front first, with a Pareto objective) retrained "
        "standalone as ordinary trials (stage 3); their results decide the best trial and the export.",
    )
    retrain: dict[str, ParameterValue] = Field(
        default_factory=dict,
        max_length=MAX_EXTRA_PARAMETERS,
        description="Extra parameters of the retraining trials (stage 3), e.g. epochs.",
    )


def dimension_values(
    param_type: ParameterType, low: float | None, high: float | None, values: list[ParameterValue] | None
) -> list[int] | None:
    """The whole-number values of a one-shot parameter, or None when it has none the supernet can take."""
    if param_type == ParameterType.INT and low is not None and high is not None:
        if high - low + 1 > MAX_DIMENSION_VALUES:
            return None
        return list(range(int(low), int(high) + 1))
    if param_type == ParameterType.CATEGORICAL and values:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return None
        return [int(v) for v in values if isinstance(v, int)] if len(values) <= MAX_DIMENSION_VALUES else None
    return None
