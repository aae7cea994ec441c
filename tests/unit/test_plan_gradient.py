"""Gradient-based cell search in the planner: search trials, then the derived cells retrained."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from kubenas import api, plan, results, search
from kubenas.api.gradient import CELL_OPERATIONS, cell_of
from kubenas.plan import gradient

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
P = api.TrialPhase
CONV = CELL_OPERATIONS.index("nor_conv_3x3")
SKIP = CELL_OPERATIONS.index("skip_connect")


def experiment(*, searches: int = 4, top_k: int = 2, parallel: int = 2, **gradient_search: Any) -> api.Experiment:
    return api.Experiment.model_validate(
        {
            "metadata": {"name": "gs", "generation": 1},
            "spec": {
                "objective": {"metric": "accuracy", "goal": "maximize"},
                "parameters": [
                    {"name": "arch_lr", "type": "float", "min": 0.001, "max": 0.03, "scale": "log"},
                    {"name": "seed", "type": "int", "min": 0, "max": 1000},
                ],
                "algorithm": {"name": "RandomSearch", "seed": 3},
                "budget": {"maxTrials": searches, "parallelTrials": parallel, "maxFailedTrials": 2},
                "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "trial"}]}},
                "gradientSearch": {
                    "search": {"epochs": 12, "width": 8, "search_method": "gdas"},
                    "topK": top_k,
                    "retrain": {"epochs": 20},
                    **gradient_search,
                },
            },
        }
    )


def derived_ops(parameters: Mapping[str, Any]) -> list[int]:
    """A made-up search outcome: the cell a search derives depends on its arch_lr only (two cells in all)."""
    return [CONV] * 6 if float(parameters["arch_lr"]) > 0.01 else [CONV, SKIP, CONV, SKIP, CONV, SKIP]


def result(trial: api.Trial) -> dict[str, float]:
    """What the trial image reports for this trial's mode (docs/trial.md)."""
    p = trial.spec.parameters
    if p["mode"] == "gradient-search":
        cells = {f"cell_op_{edge}": float(op) for edge, op in enumerate(derived_ops(p))}
        return {"accuracy": 0.5 + float(p["arch_lr"]), "skip_share": 0.0, **cells}
    return {"accuracy": 0.9 if str(p["cell"]).count("skip") == 0 else 0.8}


def finish(trial: api.Trial, phase: api.TrialPhase = P.SUCCEEDED) -> api.Trial:
    text = json.dumps(result(trial)) if phase == P.SUCCEEDED else "{}"
    outcome = results.classify_finished_trial(
        plan.result_objective(experiment().spec, trial), exit_code=0 if phase == P.SUCCEEDED else 1, result_text=text
    )
    status = trial.status.model_copy(update={"phase": outcome.phase, "metrics": dict(outcome.metrics)})
    return trial.model_copy(update={"status": status})


class Backend:
    """Applies plans; with ``restart`` every reconcile starts from a fresh Suggester (an operator restart)."""

    def __init__(self, exp: api.Experiment, *, restart: bool = False) -> None:
        self.exp = exp
        self.trials: dict[str, api.Trial] = {}
        self.restart = restart
        self.suggester = search.Suggester(exp.spec)
        self.stages: list[str] = []

    def step(self) -> plan.Plan:
        if self.restart:
            self.suggester = search.Suggester(self.exp.spec)
        out = plan.plan(self.exp, list(self.trials.values()), NOW, self.suggester)
        for action in out.of_type(plan.CreateTrial):
            self.trials[action.name] = api.Trial(
                metadata=api.ObjectMeta(name=action.name),
                spec=api.TrialSpec(experiment="gs", index=action.index, parameters=dict(action.parameters)),
            )
        self.exp = self.exp.model_copy(update={"status": out.status})
        self.stages.append(out.status.stage or "")
        return out

    def finish_running(self, fail: frozenset[str] = frozenset()) -> None:
        for name, t in list(self.trials.items()):
            if not t.phase.is_finished:
                self.trials[name] = finish(t, P.FAILED if name in fail else P.SUCCEEDED)

    def of_mode(self, mode: str) -> list[api.Trial]:
        of_mode = (t for t in self.trials.values() if t.spec.parameters["mode"] == mode)
        return sorted(of_mode, key=lambda t: t.spec.index)

    def run(self, limit: int = 30) -> plan.Plan:
        for _ in range(limit):
            out = self.step()
            if out.status.phase.is_finished:
                return out
            self.finish_running()
        raise AssertionError("the experiment did not finish")


def test_stage_one_runs_max_trials_searches_with_the_proposed_settings() -> None:
    backend = Backend(experiment(searches=3, parallel=2))
    first = backend.step()
    creates = first.of_type(plan.CreateTrial)
    assert len(creates) == 2  # parallelTrials
    for c in creates:
        assert c.parameters["mode"] == "gradient-search"
        assert c.parameters["epochs"] == 12 and c.parameters["search_method"] == "gdas"
        assert 0.001 <= float(c.parameters["arch_lr"]) <= 0.03
    assert first.status.stage == "CellSearch"
    assert first.status.progress == "0/5"  # 3 searches + 2 retrained
    assert backend.step().of_type(plan.CreateTrial) == []  # both slots taken
    backend.finish_running()
    [third] = backend.step().of_type(plan.CreateTrial)
    assert third.parameters["mode"] == "gradient-search"
    # Retraining waits for every search: the best cell is not known before.
    assert backend.step().of_type(plan.CreateTrial) == []


@pytest.mark.parametrize("restart", [False, True])
def test_the_distinct_cells_of_the_most_accurate_searches_are_retrained_and_exported(restart: bool) -> None:
    backend = Backend(experiment(searches=4, top_k=2), restart=restart)
    final = backend.run()
    searches, retrained = backend.of_mode("gradient-search"), backend.of_mode("train")
    assert len(searches) == 4
    ranked = sorted(searches, key=lambda t: -t.status.metrics["accuracy"])
    best = ranked[0]
    expected_cells = []
    for t in ranked:
        cell = cell_of(t.status.metrics)
        if cell not in expected_cells:
            expected_cells.append(cell)
    assert [t.spec.parameters["cell"] for t in retrained] == expected_cells[:2]
    first = retrained[0].spec.parameters
    # The search's settings are kept (seed, width), the search-only ones dropped, retrain's win.
    assert first["seed"] == best.spec.parameters["seed"] and first["width"] == 8 and first["epochs"] == 20
    assert not {"arch_lr", "search_method"} & set(first)
    assert final.status.phase == api.ExperimentPhase.SUCCEEDED
    assert final.status.message == "the 2 best derived cells were retrained"
    [export] = final.of_type(plan.ExportBest)
    assert export.trial.parameters["mode"] == "train"
    assert final.status.best_trial is not None
    assert final.status.best_trial.name in {t.name for t in retrained}
    assert backend.stages[0] == "CellSearch" and backend.stages[-1] == "Retraining"
    assert final.status.progress == f"{len(backend.trials)}/6"


def test_a_cell_derived_twice_is_retrained_once() -> None:
    exp = experiment(searches=2, top_k=2)
    space = [0.02, 0.025]  # both above 0.01: the same all-convolution cell
    trials = [
        finish(
            api.Trial(
                metadata=api.ObjectMeta(name=f"gs-{i}"),
                spec=api.TrialSpec(
                    experiment="gs",
                    index=i,
                    parameters={"mode": "gradient-search", "arch_lr": lr, "seed": i, "epochs": 12, "width": 8},
                ),
            )
        )
        for i, lr in enumerate(space)
    ]
    out = plan.plan(exp, trials, NOW, search.Suggester(exp.spec))
    [create] = out.of_type(plan.CreateTrial)
    assert create.parameters["cell"] == cell_of(trials[1].status.metrics)
    assert create.parameters["mode"] == "train"
    assert create.parameters["seed"] == 1  # the more accurate search's


def test_no_search_with_a_derived_cell_fails_the_experiment_with_the_reason() -> None:
    backend = Backend(experiment(searches=2, top_k=1))
    backend.step()
    backend.finish_running(fail=frozenset(backend.trials))
    final = backend.step()
    assert final.status.phase == api.ExperimentPhase.FAILED
    assert final.status.reason == api.CompletionReason.NO_SUCCESSFUL_TRIAL
    assert "no search trial succeeded with a derived cell" in (final.status.message or "")
    assert gradient.retrained(list(backend.trials.values())) == []


def test_a_failed_search_counts_against_max_trials_and_the_rest_still_retrain() -> None:
    backend = Backend(experiment(searches=2, top_k=1, parallel=2))
    backend.step()
    first = min(backend.trials)
    backend.finish_running(fail=frozenset({first}))
    out = backend.step()
    [retrain] = out.of_type(plan.CreateTrial)
    assert retrain.parameters["mode"] == "train"
    assert len(backend.of_mode("gradient-search")) == 2


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({f"cell_op_{e}": float(CONV) for e in range(6)}, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
         "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
        ({f"cell_op_{e}": float(e % 5) for e in range(6)}, "|none~0|+|skip_connect~0|nor_conv_1x1~1|+"
         "|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"),
        ({f"cell_op_{e}": 0.0 for e in range(5)}, None),  # an edge missing
        ({**{f"cell_op_{e}": 0.0 for e in range(6)}, "cell_op_3": 5.0}, None),  # no such operation
        ({**{f"cell_op_{e}": 0.0 for e in range(6)}, "cell_op_3": 1.5}, None),
        ({**{f"cell_op_{e}": 0.0 for e in range(6)}, "cell_op_3": float("nan")}, None),
    ],
)
def test_the_cell_is_read_from_the_search_result(metrics: dict[str, float], expected: str | None) -> None:
    assert cell_of(metrics) == expected


def test_fewer_distinct_cells_than_top_k_finish_with_the_progress_complete() -> None:
    exp = experiment(searches=2, top_k=2)
    arch_lr, seed = exp.spec.parameters
    narrow = arch_lr.model_copy(update={"min": 0.02, "max": 0.03})  # every search derives the all-convolution cell
    exp = exp.model_copy(update={"spec": exp.spec.model_copy(update={"parameters": [narrow, seed]})})
    backend = Backend(exp)
    final = backend.run()
    assert len(backend.of_mode("train")) == 1
    assert final.status.phase == api.ExperimentPhase.SUCCEEDED
    assert final.status.progress == "3/3"
