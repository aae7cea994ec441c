"""What a staged experiment (``spec.oneShot``, ``spec.gradientSearch``) gives the planner.

A staged experiment runs trials of several kinds, told apart by their ``mode`` parameter:
the search algorithm learns from some of them, only the last stage's results count, and
the stage logic decides which trials come next. Each staged mode is a module of this
package that provides the functions of ``Stages``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Protocol

from kubenas import api
from kubenas.api.base import MODE, TRAIN_MODE
from kubenas.plan.actions import CreateTrial, Suggester

__all__ = [
    "MODE", "RETRAIN", "RETRAINING", "Next", "Stages", "TrialNamer", "by_mode", "mode_of", "modes_of", "retrain_key",
]

RETRAIN = TRAIN_MODE
RETRAINING = "Retraining"
"""The last stage: ordinary trials (mode ``train``), whose results decide the best trial and the export."""


class Next:
    """What stage logic decided: trials to create, and whether every stage is done (or cannot go on)."""

    def __init__(self, creates: Sequence[CreateTrial] = (), done: bool = False, problem: str | None = None) -> None:
        self.creates = tuple(creates)
        self.done = done
        self.problem = problem  # why the experiment cannot go on (nothing to retrain)


class Stages(Protocol):
    def searched_trials(self, trials: Sequence[api.Trial]) -> list[api.Trial]:
        """The trials the search algorithm learns from, as it sees them."""
        ...

    def retrained(self, trials: Sequence[api.Trial]) -> list[api.Trial]:
        """The trials whose results count: the only ones that can be the best trial or be exported."""
        ...

    def planned_trials(self, spec: api.ExperimentSpec, trials: Sequence[api.Trial] = ()) -> int:
        """Trials the experiment runs when nothing fails (once the trials show it, exactly)."""
        ...

    def stage(self, trials: Sequence[api.Trial], creates: Sequence[CreateTrial] = ()) -> str:
        """The furthest stage the trials (and those about to be created) have reached."""
        ...

    def next_trials(
        self, spec: api.ExperimentSpec, experiment: str, trials: Sequence[api.Trial], suggester: Suggester, slots: int
    ) -> Next:
        """The trials to create now (at most ``slots``); ``suggester`` is synced with ``searched_trials``."""
        ...

    def finished_message(self, spec: api.ExperimentSpec) -> str:
        """The completion message once every stage is done."""
        ...


def mode_of(trial: api.Trial) -> str | None:
    return _mode(trial.spec.parameters)


def modes_of(trials: Sequence[api.Trial], creates: Sequence[CreateTrial] = ()) -> set[str | None]:
    """The modes of the trials and of those about to be created: the stages reached."""
    return {mode_of(t) for t in trials} | {_mode(c.parameters) for c in creates}


def _mode(parameters: Mapping[str, api.ParameterValue]) -> str | None:
    value = parameters.get(MODE)
    return value if isinstance(value, str) else None


def by_mode(trials: Sequence[api.Trial]) -> dict[str | None, list[api.Trial]]:
    out: dict[str | None, list[api.Trial]] = {}
    for t in trials:
        out.setdefault(mode_of(t), []).append(t)
    return out


def retrain_key(parameters: Mapping[str, api.ParameterValue], names: Sequence[str]) -> str:
    """What makes two retraining trials the same: their values of ``names``."""
    return json.dumps([parameters.get(n) for n in names])


class TrialNamer:
    """Names and indexes of the trials a plan creates, after the ones that exist."""

    def __init__(self, experiment: str, trials: Sequence[api.Trial]) -> None:
        self.experiment = experiment
        self.index = max((t.spec.index for t in trials), default=-1) + 1

    def create(self, parameters: Mapping[str, api.ParameterValue], supernet: str | None = None) -> CreateTrial:
        index, self.index = self.index, self.index + 1
        return CreateTrial(api.trial_name(self.experiment, index), index, dict(parameters), supernet=supernet)
