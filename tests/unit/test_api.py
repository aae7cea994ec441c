"""The API models: parsing, defaults and helpers users rely on."""

import pytest
from kubenas import api
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
    assert exp.spec.algorithm.name == "NGOpt"
    assert exp.spec.budget.parallel_trials == 1
    assert exp.spec.trial_template.backoff_limit == 0
    assert exp.spec.objective.objective_metrics()[0].goal is api.Goal.MAXIMIZE


def test_wire_form_is_camel_case_and_round_trips() -> None:
    exp = api.Experiment.model_validate(MINIMAL)
    wire = exp.to_wire()
    assert "trialTemplate" in wire["spec"] and "maxTrials" in wire["spec"]["budget"]
    assert api.Experiment.model_validate(wire) == exp


def test_categorical_values_keep_their_yaml_types() -> None:
    doc = {**MINIMAL, "spec": {**MINIMAL["spec"], "parameters": [
        {"name": "c", "type": "categorical", "values": [1, 2.5, "x", True]}]}}
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
