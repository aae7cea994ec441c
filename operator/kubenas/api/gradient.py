"""``spec.gradientSearch``: cells searched by gradient descent (GDAS or DARTS), the derived cells retrained.

The stages run the built-in trainer's ``gradient-search`` mode (docs/trial.md#gradient-based-cell-search):
each search trial trains a weight-sharing network of NAS-Bench-201 cells and reports the cell
it derives as one ``cell_op_<edge>`` metric per edge (the operation's index below). The
searched parameters are the search trials' own settings (``arch_lr``, ``width``, ``seed``...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import Field

from kubenas.api.base import MAX_EXTRA_PARAMETERS, MODE, Model, OperatorRule, ParameterValue, Rule

CELL_OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The NAS-Bench-201 operations, in the order a search trial's ``cell_op_<edge>`` values index."""
CELL_NODES = 4
"""Nodes of a cell; node ``j`` sums one operation of every earlier node, so 6 edges."""
SEARCH_ONLY = ("search_method", "arch_lr", "arch_warmup", "arch_fraction")
"""The trainer's parameters that only a search reads: not carried to the retraining trials."""
MAX_TOP_K = 8
# Trial parameters the stages set; no searched or extra parameter may use them.
CELL = "cell"
SEARCH_MODE = "gradient-search"
RESERVED_PARAMETERS = (MODE, CELL)

ACCURACY_OBJECTIVE = Rule(
    "!has(self.gradientSearch) || (has(self.objective.metric) && self.objective.metric == 'accuracy'"
    " && self.objective.goal == 'maximize'"
    " && (!has(self.objective.constraints) || size(self.objective.constraints) == 0))",
    "with gradientSearch the objective is accuracy (maximize) without constraints: the search trials "
    "report only the search network's accuracy",
    "objective",
)
ONE_STAGED_MODE = Rule(
    "!has(self.gradientSearch) || !has(self.oneShot)", "set oneShot or gradientSearch, not both", "gradientSearch"
)
SEARCH_SETTINGS = OperatorRule(
    f"{', '.join(SEARCH_ONLY)} apply only to the search trials (gradientSearch.search or a searched parameter)",
    "gradientSearch.retrain",
)
EXTRA_NOT_SEARCHED = OperatorRule(
    "a searched parameter is set by the search; gradientSearch.search and retrain may not set it", "gradientSearch"
)
RESERVED = OperatorRule(
    f"{', '.join(RESERVED_PARAMETERS)} are set by the gradient-search stages; a searched parameter is set by the "
    "search",
    "gradientSearch",
)


class GradientSearch(Model):
    """Gradient-based cell search: search trials derive cells by gradient descent, the best cells are retrained."""

    search: dict[str, ParameterValue] = Field(
        default_factory=dict,
        max_length=MAX_EXTRA_PARAMETERS,
        description="Extra parameters of every search trial (stage 1), e.g. epochs, width, search_method "
        "(gdas, the default, or darts). budget.maxTrials counts search trials; the searched parameters "
        "are their settings.",
    )
    top_k: int = Field(
        default=2,
        ge=1,
        le=MAX_TOP_K,
        description="The distinct derived cells of the most accurate search trials retrained from scratch as "
        "ordinary trials (stage 2); their results decide the best trial and the export.",
    )
    retrain: dict[str, ParameterValue] = Field(
        default_factory=dict,
        max_length=MAX_EXTRA_PARAMETERS,
        description="Extra parameters of the retraining trials (stage 2), e.g. epochs; they override the "
        "search's settings, which the retraining trials otherwise keep (all but search_method, arch_lr, "
        "arch_warmup and arch_fraction).",
    )


def cell_edges() -> list[tuple[int, int]]:
    """(target node, source node) of every edge, in architecture-string order."""
    return [(j, i) for j in range(1, CELL_NODES) for i in range(j)]


def cell_of(metrics: Mapping[str, float]) -> str | None:
    """The architecture string of the cell a search trial derived, from its ``cell_op_<edge>`` metrics.

    None when any edge is missing or names no operation.
    """
    groups: dict[int, list[str]] = {}
    for edge, (node, source) in enumerate(cell_edges()):
        value = metrics.get(f"cell_op_{edge}")
        if value is None or not math.isfinite(value) or value != int(value) or not 0 <= value < len(CELL_OPERATIONS):
            return None
        groups.setdefault(node, []).append(f"{CELL_OPERATIONS[int(value)]}~{source}")
    return "+".join("|" + "|".join(ops) + "|" for _, ops in sorted(groups.items()))
