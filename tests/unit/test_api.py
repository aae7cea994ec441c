"""The API models: parsing, defaults and helpers users rely on."""

import pytest
from kubenas import algorithms, api
from pydantic import ValidationError

MINIMAL = {
    "apiVersion": "kubenas.io/v1alpha1",
    "kind": "Experiment",
    "metadata": {"name": "demo"},
    "spec": {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": [
            {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "scale": "log"},
            {"name": "act", "type": "categorical", "values": ["relu", "gelu"]},
        ],
        "trialTemplate": {"spec": {"containers": [{"name": "trial", "image": "kubenas/trial"}]}},
    },
}


def test_minimal_experiment_gets_documented_defaults() -> None:
    exp = api.Experiment.model_validate(MINIMAL)
    assert exp.spec.algorithm.name == algorithms.DEFAULT == "SurrogateLocalSearch"
    assert exp.spec.budget.parallel_trials == 1
    assert exp.spec.trial_template.backoff_limit == 0
    assert exp.spec.objective.objective_metrics()[0].goal is api.Goal.MAXIMIZE


def test_wire_form_is_camel_case_and_round_trips() -> None:
    exp = api.Experiment.model_validate(MINIMAL)
    wire = exp.to_wire()
    assert "trialTemplate" in wire["spec"] and "maxTrials" in wire["spec"]["budget"]
    assert api.Experiment.model_validate(wire) == exp


def test_categorical_values_keep_their_yaml_types() -> None:
    doc = {
        **MINIMAL,
        "spec": {
            **MINIMAL["spec"],
            "parameters": [{"name": "c", "type": "categorical", "values": [1, 2.5, "x", True]}],
        },
    }
    values = api.Experiment.model_validate(doc).spec.parameters[0].values
    assert [type(v) for v in values] == [int, float, str, bool]


def test_unknown_field_is_refused_with_its_path() -> None:
    doc = {**MINIMAL, "spec": {**MINIMAL["spec"], "budjet": {}}}
    with pytest.raises(ValidationError) as err:
        api.Experiment.model_validate(doc)
    assert err.value.errors()[0]["loc"] == ("spec", "budjet")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("1h30m", 5400), ("2h", 7200), ("500ms", 0.5)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert api.parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        api.parse_duration("soon")


# --------------------------------------------------------------------------- cross-field rules


def with_spec(**changes: object) -> dict:
    return {**MINIMAL, "spec": {**MINIMAL["spec"], **changes}}


def rule_error(doc: dict) -> tuple[tuple, api.RuleViolation]:
    with pytest.raises(ValidationError) as err:
        api.Experiment.model_validate(doc)
    first = err.value.errors()[0]
    return first["loc"], first["ctx"]["error"]


def test_rule_violation_names_the_field_and_the_rule() -> None:
    params = [MINIMAL["spec"]["parameters"][0], {"name": "depth", "type": "int", "min": 4, "max": 2}]
    loc, error = rule_error(with_spec(parameters=params))
    assert loc == ("spec", "parameters", 1)
    assert (error.field, error.message) == ("max", api.spec.MIN_BELOW_MAX.message)
    assert str(error) == "max: min must be less than max"


def test_duplicate_parameter_is_pointed_at_by_index() -> None:
    params = [*MINIMAL["spec"]["parameters"], {"name": "lr", "type": "float", "min": 0, "max": 1}]
    loc, error = rule_error(with_spec(parameters=params))
    assert loc == ("spec",) and error.field == "parameters[2].name"


def test_single_metric_needs_an_explicit_goal() -> None:
    loc, error = rule_error(with_spec(objective={"metric": "loss"}))
    assert (loc, error.field) == (("spec", "objective"), "goal")


def test_experiment_name_must_leave_room_for_trial_numbers() -> None:
    doc = {**MINIMAL, "metadata": {"name": "x" * 57}}
    _, error = rule_error(doc)
    assert error.field == "metadata.name"
    longest = api.Experiment.model_validate({**MINIMAL, "metadata": {"name": "x" * 56}})
    assert len(api.trial_name(longest.metadata.name, 99_999)) <= 63


def test_assignment_is_checked_against_the_same_rules() -> None:
    budget = api.Budget(max_trials=4, parallel_trials=2)
    with pytest.raises(ValidationError, match="parallelTrials must not be greater than maxTrials"):
        budget.parallel_trials = 5


def test_when_values_must_be_values_the_other_parameter_takes() -> None:
    params = [
        *MINIMAL["spec"]["parameters"],
        {"name": "depth", "type": "int", "min": 1, "max": 3, "when": {"act": ["relu", "tanh"]}},
    ]
    _, error = rule_error(with_spec(parameters=params))
    assert error.field == "parameters[2].when.act[1]" and "'tanh'" in error.message


@pytest.mark.parametrize(
    ("parameter", "value", "expected"),
    [
        ({"name": "c", "type": "categorical", "values": [1, "1", True]}, 1, True),
        ({"name": "c", "type": "categorical", "values": [1, "1"]}, True, False),
        ({"name": "c", "type": "categorical", "values": [1, "1"]}, 1.0, False),
        ({"name": "n", "type": "int", "min": 1, "max": 8}, 8, True),
        ({"name": "n", "type": "int", "min": 1, "max": 8}, 2.5, False),
        ({"name": "n", "type": "int", "min": 1, "max": 8}, True, False),
        ({"name": "x", "type": "float", "min": 0, "max": 1}, 0.5, True),
        ({"name": "x", "type": "float", "min": 0, "max": 1}, 1.5, False),
        ({"name": "x", "type": "float", "min": 0, "max": 1}, "0.5", False),
    ],
)
def test_parameter_can_take_keeps_yaml_types_apart(parameter: dict, value: object, expected: bool) -> None:
    assert api.Parameter.model_validate(parameter).can_take(value) is expected


def test_categorical_values_differing_only_in_type_are_distinct() -> None:
    param = api.Parameter.model_validate({"name": "c", "type": "categorical", "values": [1, 1.0, True, "1"]})
    assert len(param.values or []) == 4
    with pytest.raises(ValidationError, match="categorical values must be distinct"):
        api.Parameter.model_validate({"name": "c", "type": "categorical", "values": [1, 2, 1]})


def test_every_rule_is_declared_once_with_a_constant_message() -> None:
    rules = [v for m in (api.spec, api.experiment) for v in vars(m).values() if isinstance(v, api.Rule)]
    assert len({r.message for r in rules}) == len(rules)
    assert all(r.to_cel()["message"] == r.message for r in rules)
    assert {r.to_cel().get("fieldPath", ".")[0] for r in rules} == {"."}
