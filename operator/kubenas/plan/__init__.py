"""The planner: one pure function from (experiment, observed trials, now) to actions and status.

``plan`` decides; ``actions`` holds what it returns; ``status`` builds the Experiment status.
Both backends import this package only (``from kubenas import plan``; ``plan.plan(...)``).
"""

from kubenas.plan.actions import (
    Action,
    CompleteExperiment,
    CreateTrial,
    ExportBest,
    MeasureCost,
    Plan,
    PromoteTrial,
    StopTrial,
    Suggester,
    TellResult,
)
from kubenas.plan.oneshot import result_objective
from kubenas.plan.planner import curve_goal, invalid_plan, needs_suggester, plan, planned_trials, results_of
from kubenas.plan.status import CONDITION_TYPES, conditions, count_trials, export_stale, summarize

__all__ = [
    "CONDITION_TYPES",
    "Action",
    "CompleteExperiment",
    "CreateTrial",
    "ExportBest",
    "MeasureCost",
    "Plan",
    "PromoteTrial",
    "StopTrial",
    "Suggester",
    "TellResult",
    "conditions",
    "count_trials",
    "curve_goal",
    "export_stale",
    "invalid_plan",
    "needs_suggester",
    "plan",
    "planned_trials",
    "result_objective",
    "results_of",
    "summarize",
]
