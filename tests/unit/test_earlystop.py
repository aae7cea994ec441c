"""Early-stopping rules over hand-made learning curves (kubenas.earlystop)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from kubenas import api, earlystop

MAX, MIN = api.Goal.MAXIMIZE, api.Goal.MINIMIZE
P = api.TrialPhase


def trial(
    name: str,
    values: Sequence[float],
    phase: api.TrialPhase = P.SUCCEEDED,
    first_step: int = 1,
    rung: int | None = None,
) -> api.Trial:
    """A trial whose curve has ``values`` at consecutive steps starting at ``first_step``."""
    curve = [api.CurvePoint(step=first_step + i, value=v) for i, v in enumerate(values)]
    return api.Trial(
        metadata=api.ObjectMeta(name=name),
        spec=api.TrialSpec(experiment="e", index=0, parameters={}),
        status=api.TrialStatus(phase=phase, curve=curve, rung=rung),
    )


def median(min_epochs: int = 1, min_trials: int = 3) -> api.EarlyStopping:
    return api.EarlyStopping(rule=api.StoppingRule.MEDIAN, min_epochs=min_epochs, min_trials=min_trials)


def asha(min_epochs: int = 1, reduction_factor: int = 3) -> api.EarlyStopping:
    return api.EarlyStopping(rule=api.StoppingRule.ASHA, min_epochs=min_epochs, reduction_factor=reduction_factor)


# Three finished trials whose running averages at step 3 are 0.5, 0.6 and 0.7 (median 0.6).
FINISHED = [trial("a", [0.4, 0.5, 0.6, 0.9]), trial("b", [0.5, 0.6, 0.7, 0.9]), trial("c", [0.6, 0.7, 0.8, 0.9])]
# The same, for a loss: running averages at step 3 are 0.5, 0.6, 0.7 (median 0.6).
FINISHED_LOSS = [trial("a", [0.6, 0.5, 0.4]), trial("b", [0.7, 0.6, 0.5]), trial("c", [0.8, 0.7, 0.6])]


@pytest.mark.parametrize(
    ("rule", "values", "others", "goal", "stop"),
    [
        pytest.param(median(), [0.3, 0.4, 0.55], FINISHED, MAX, True, id="worse-than-median-stops"),
        pytest.param(median(), [0.3, 0.4, 0.65], FINISHED, MAX, False, id="better-than-median-goes-on"),
        pytest.param(median(), [0.3, 0.4, 0.6], FINISHED, MAX, False, id="equal-to-median-goes-on"),
        pytest.param(median(), [0.3, 0.7, 0.2], FINISHED, MAX, False, id="best-so-far-not-latest"),
        pytest.param(median(), [0.9, 0.8, 0.65], FINISHED_LOSS, MIN, True, id="minimize-worse-stops"),
        pytest.param(median(), [0.9, 0.8, 0.55], FINISHED_LOSS, MIN, False, id="minimize-better-goes-on"),
        pytest.param(median(min_epochs=4), [0.1, 0.1, 0.1], FINISHED, MAX, False, id="before-min-epochs"),
        pytest.param(median(min_epochs=3), [0.1, 0.1, 0.1], FINISHED, MAX, True, id="at-min-epochs"),
        pytest.param(median(min_trials=4), [0.1, 0.1, 0.1], FINISHED, MAX, False, id="too-few-reference-trials"),
        pytest.param(
            median(),
            [0.1, 0.1, 0.1, 0.1, 0.1],
            FINISHED,
            MAX,
            False,
            id="references-must-reach-the-step",
        ),
        pytest.param(
            median(),
            [0.1, 0.1, 0.1],
            [trial(n, [0.9, 0.9, 0.9], phase) for n, phase in
             [("r", P.RUNNING), ("f", P.FAILED), ("s", P.EARLY_STOPPED)]],
            MAX,
            False,
            id="only-succeeded-trials-are-reference",
        ),
        pytest.param(median(), [], FINISHED, MAX, False, id="no-curve-yet"),
        pytest.param(median(), [0.1, 0.1, 0.1], [*FINISHED[:2], trial("t", [0.1, 0.1, 0.1])], MAX, False,
                     id="trial-itself-is-not-a-reference"),
    ],
)
def test_median_rule(
    rule: api.EarlyStopping, values: list[float], others: list[api.Trial], goal: api.Goal, stop: bool
) -> None:
    t = trial("t", values, P.RUNNING)
    assert earlystop.should_stop(rule, t, [*others, t], goal) is stop


def test_median_uses_running_averages_not_final_values() -> None:
    # Final values at step 2 are all 0.9, but the running averages are 0.5, so 0.6 survives.
    spiky = [trial(n, [0.1, 0.9]) for n in "abc"]
    assert not earlystop.should_stop(median(), trial("t", [0.6, 0.6], P.RUNNING), spiky, MAX)


def test_median_message_names_the_values() -> None:
    message = earlystop.judge(median(), trial("t", [0.3, 0.4, 0.55], P.RUNNING), FINISHED, MAX)
    assert message == "best 0.55 by step 3 is worse than the median 0.6 of 3 finished trials' running averages"


@pytest.mark.parametrize(
    ("percentile", "stop"),
    [pytest.param(25.0, False, id="p25-spares-the-middle"), pytest.param(75.0, True, id="p75-stops-the-middle")],
)
def test_percentile_rule_composes_the_median(percentile: float, stop: bool) -> None:
    curves = [t.status.curve for t in FINISHED]  # averages 0.5, 0.6, 0.7 at step 3
    result = earlystop.percentile_rule(trial("t", [0.58] * 3).status.curve, curves, MAX, percentile, 1, 1)
    assert (result is not None) is stop


@pytest.mark.parametrize(("percentile", "min_trials"), [(-1.0, 1), (101.0, 1), (50.0, 0)])
def test_percentile_rule_refuses_bad_arguments(percentile: float, min_trials: int) -> None:
    with pytest.raises(ValueError, match=str(percentile) if min_trials else "min_trials"):
        earlystop.percentile_rule([], [], MAX, percentile, 1, min_trials)


@pytest.mark.parametrize(
    ("step", "min_step", "eta", "rung"),
    [(1, 1, 3, 1), (2, 1, 3, 1), (3, 1, 3, 3), (8, 1, 3, 3), (9, 1, 3, 9), (5, 2, 2, 4), (2, 2, 2, 2)],
)
def test_highest_rung(step: int, min_step: int, eta: int, rung: int) -> None:
    assert earlystop.highest_rung(step, min_step, eta) == rung


# Rung 1 of three trials (values at step 1: 0.9, 0.5, 0.4); the top 3 // 3 = 1 goes on.
RUNG1 = [trial("a", [0.9, 0.9]), trial("b", [0.5], P.EARLY_STOPPED), trial("c", [0.4], P.EARLY_STOPPED)]


@pytest.mark.parametrize(
    ("rule", "values", "others", "goal", "stop"),
    [
        pytest.param(asha(), [0.5], [], MAX, False, id="first-at-a-rung-goes-on"),
        pytest.param(asha(), [0.5], RUNG1[:1], MAX, True, id="two-at-rung-keep-only-the-best"),
        pytest.param(asha(), [0.5], RUNG1[:2], MAX, True, id="not-top-third-stops"),
        pytest.param(asha(), [0.95], RUNG1, MAX, False, id="top-of-rung-goes-on"),
        pytest.param(asha(), [0.6, 0.99], RUNG1, MAX, True, id="judged-at-rung-value-not-latest"),
        pytest.param(asha(min_epochs=2), [0.1], RUNG1, MAX, False, id="before-min-epochs"),
        pytest.param(asha(), [0.9, 0.9, 0.1], RUNG1, MAX, False, id="alone-at-rung-3"),
        pytest.param(
            asha(),
            [0.87],
            [*RUNG1, trial("d", [0.85]), trial("e", [0.3])],
            MAX,
            False,
            id="six-at-rung-keep-two",
        ),
        pytest.param(asha(), [0.84], [*RUNG1, trial("d", [0.85]), trial("e", [0.3])], MAX, True,
                     id="six-at-rung-third-stops"),
        pytest.param(asha(), [0.5], [trial("a", [0.1]), trial("b", [0.5]), trial("c", [0.6])], MIN, True,
                     id="minimize-not-top-stops"),
        pytest.param(asha(), [0.05], [trial("a", [0.1]), trial("b", [0.5]), trial("c", [0.6])], MIN, False,
                     id="minimize-best-goes-on"),
        pytest.param(asha(reduction_factor=2), [0.5], RUNG1[:1], MAX, True, id="eta-2-halves"),
    ],
)
def test_asha_rule(
    rule: api.EarlyStopping, values: list[float], others: list[api.Trial], goal: api.Goal, stop: bool
) -> None:
    assert earlystop.should_stop(rule, trial("t", values, P.RUNNING), others, goal) is stop


def test_asha_message_names_the_rung() -> None:
    message = earlystop.judge(asha(), trial("t", [0.5], P.RUNNING), RUNG1, MAX)
    assert message == "value 0.5 at rung 1 is not in the top 1 of 4 trials that reached it (cutoff 0.9)"


def test_judge_all_judges_running_trials_only() -> None:
    trials = [*FINISHED, trial("slow", [0.3, 0.4, 0.55], P.RUNNING), trial("fast", [0.3, 0.4, 0.65], P.RUNNING),
              trial("failed", [0.1, 0.1, 0.1], P.FAILED)]
    assert list(earlystop.judge_all(median(), trials, MAX).stops) == ["slow"]


def test_asha_records_a_promotion_and_does_not_reopen_it() -> None:
    leader = trial("t", [0.95, 0.95], P.RUNNING)
    verdicts = earlystop.judge_all(asha(), [leader, *RUNG1], MAX)
    assert verdicts.stops == {} and verdicts.promotions == {"t": 1}

    # Better trials reach rung 1 later: kept at rung 1, t is not judged there again.
    promoted = leader.model_copy(update={"status": leader.status.model_copy(update={"rung": 1})})
    field = [*RUNG1, *(trial(n, [0.99, 0.99]) for n in "xyz")]
    assert earlystop.judge_all(asha(), [promoted, *field], MAX) == earlystop.Verdicts()
    # Without the record it would be stopped: the decision is the promotion's, not the rule's.
    assert earlystop.should_stop(asha(), leader, field, MAX)


def test_asha_judges_again_at_the_next_rung() -> None:
    t = trial("t", [0.95, 0.95, 0.2], P.RUNNING, rung=1)  # passed rung 1, now at rung 3
    rung3 = [trial(n, [0.9, 0.9, 0.9]) for n in "abc"]
    assert earlystop.judge(asha(), t, rung3, MAX) is not None
    assert earlystop.judge_all(asha(), [t.model_copy(update={"status": t.status.model_copy(update={"rung": 3})}),
                                        *rung3], MAX).stops == {}


def test_median_rule_promotes_nobody() -> None:
    trials = [*FINISHED, trial("fast", [0.3, 0.4, 0.65], P.RUNNING)]
    assert earlystop.judge_all(median(), trials, MAX).promotions == {}


# --------------------------------------------------------------------------- contract: every rule

RULES = [pytest.param(median(min_trials=1), id="median"), pytest.param(asha(), id="asha")]
FIELD = [trial(n, [0.2 * (i + 1), 0.2 * (i + 1) + 0.05, 0.2 * (i + 1) + 0.1]) for i, n in enumerate("abcd")]


def negated(t: api.Trial) -> api.Trial:
    curve = [p.model_copy(update={"value": -p.value}) for p in t.status.curve]
    return t.model_copy(update={"status": t.status.model_copy(update={"curve": curve})})


@pytest.mark.parametrize("rule", RULES)
def test_rule_never_stops_a_trial_with_no_one_to_compare(rule: api.EarlyStopping) -> None:
    assert not earlystop.should_stop(rule, trial("t", [0.0] * 30, P.RUNNING), [], MAX)


@pytest.mark.parametrize("rule", RULES)
def test_rule_never_stops_the_leader(rule: api.EarlyStopping) -> None:
    assert not earlystop.should_stop(rule, trial("t", [0.99] * 3, P.RUNNING), FIELD, MAX)


@pytest.mark.parametrize("rule", RULES)
def test_rule_stops_the_laggard(rule: api.EarlyStopping) -> None:
    assert earlystop.should_stop(rule, trial("t", [0.01] * 3, P.RUNNING), FIELD, MAX)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("level", [0.01, 0.5, 0.99])
def test_rule_is_symmetric_in_the_goal(rule: api.EarlyStopping, level: float) -> None:
    t = trial("t", [level] * 3, P.RUNNING)
    as_max = earlystop.judge(rule, t, FIELD, MAX)
    as_min = earlystop.judge(rule, negated(t), [negated(o) for o in FIELD], MIN)
    assert (as_max is None) == (as_min is None)


@pytest.mark.parametrize("rule", [pytest.param(median(min_epochs=5, min_trials=1), id="median"),
                                  pytest.param(asha(min_epochs=5), id="asha")])
def test_rule_waits_for_min_epochs(rule: api.EarlyStopping) -> None:
    long_field = [trial(n, [0.9] * 9) for n in "abcd"]
    assert not earlystop.should_stop(rule, trial("t", [0.01] * 4, P.RUNNING), long_field, MAX)
    assert earlystop.should_stop(rule, trial("t", [0.01] * 5, P.RUNNING), long_field, MAX)


def test_no_rule_never_stops() -> None:
    rule = api.EarlyStopping(rule=api.StoppingRule.NONE)
    assert not earlystop.should_stop(rule, trial("t", [0.0] * 9, P.RUNNING), FINISHED, MAX)


def test_decisions_are_repeatable() -> None:
    t = trial("t", [0.3, 0.4, 0.55], P.RUNNING)
    decisions = {earlystop.judge(median(), t, FINISHED, MAX) for _ in range(3)}
    assert len(decisions) == 1


def _spec(objective: dict, early_stopping: dict | None = None) -> api.ExperimentSpec:
    body = {
        "objective": objective,
        "parameters": [{"name": "x", "type": "int", "min": 0, "max": 9}],
        "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
    }
    if early_stopping is not None:
        body["earlyStopping"] = early_stopping
    return api.ExperimentSpec.model_validate(body)


SINGLE = {"metric": "accuracy", "goal": "maximize"}
PARETO = {"metrics": [{"name": "accuracy", "goal": "maximize"}, {"name": "latency", "goal": "minimize"}],
          "strategy": "pareto"}
WEIGHTED = {"metrics": [{"name": "accuracy", "goal": "maximize", "weight": 1.0},
                        {"name": "latency", "goal": "minimize", "weight": 0.1}], "strategy": "weighted"}


@pytest.mark.parametrize(
    ("objective", "early_stopping", "expected"),
    [
        pytest.param(SINGLE, None, api.StoppingRule.MEDIAN, id="single-defaults-to-the-measured-median"),
        pytest.param(SINGLE, {"minEpochs": 2}, api.StoppingRule.MEDIAN, id="settings-without-a-rule"),
        pytest.param(SINGLE, {"rule": "none"}, api.StoppingRule.NONE, id="opt-out"),
        pytest.param(SINGLE, {"rule": "asha"}, api.StoppingRule.ASHA, id="explicit-rule-wins"),
        pytest.param(PARETO, None, api.StoppingRule.NONE, id="pareto-never-by-default"),
        pytest.param(WEIGHTED, None, api.StoppingRule.NONE, id="weighted-never-by-default"),
        pytest.param(PARETO, {"rule": "median"}, api.StoppingRule.MEDIAN, id="pareto-when-asked"),
    ],
)
def test_effective_rule(objective: dict, early_stopping: dict | None, expected: api.StoppingRule) -> None:
    spec = _spec(objective, early_stopping)
    settings = earlystop.effective(spec)
    assert settings.rule == expected
    assert settings.min_trials == 3 and settings.reduction_factor == 2
    given = (early_stopping or {}).get("minEpochs")
    assert settings.min_epochs == (given or (2 if expected == api.StoppingRule.ASHA else 1))


def test_asha_defaults_are_the_replay_choice() -> None:
    """minEpochs 2 and reductionFactor 2 unless set: rungs at steps 2, 4, 8."""
    rule = earlystop.effective(_spec(SINGLE, {"rule": "asha"}))
    at_step_1 = [trial(n, [0.9]) for n in "abc"]
    assert not earlystop.should_stop(rule, trial("t", [0.1], P.RUNNING), at_step_1, MAX)
    at_step_2 = [trial(n, [0.9, 0.9]) for n in "abc"]
    assert earlystop.should_stop(rule, trial("t", [0.1, 0.1], P.RUNNING), at_step_2, MAX)
