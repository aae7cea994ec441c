"""The committed CRDs as a real API server (v1.36) takes them, offline: structural, every CEL
rule type-checked against the types the API server derives from the schema, and every rule's
estimated cost within its limits (cel_types, crd_structural). Variants that put back rules a
real API server refused prove the check refuses them too."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from cel_types import (
    PER_CALL_LIMIT,
    RUNTIME_CEL_COST_BUDGET,
    STATIC_ESTIMATED_COST_LIMIT,
    CrdCheck,
    ProtoTypes,
    check_crd,
    checked_ast,
    decl_type,
    estimate_cost,
    fields_of,
    new_env,
)
from crd_admission import openapi_schema
from crd_admission import rule_sites as admission_rule_sites
from crd_structural import structural_problems

KINDS = ["Experiment", "Trial"]
Schema = dict[str, Any]


@pytest.fixture(scope="module", params=KINDS)
def committed(request: pytest.FixtureRequest) -> tuple[str, CrdCheck]:
    return request.param, check_crd(openapi_schema(request.param))


def test_every_rule_compiles_against_the_types_the_api_server_derives(committed: tuple[str, CrdCheck]) -> None:
    kind, check = committed
    assert check.errors == [], f"{kind}: the API server would refuse the CRD:\n" + "\n".join(check.errors)


def test_every_rule_of_the_crd_is_checked(committed: tuple[str, CrdCheck]) -> None:
    kind, check = committed
    assert len(check.rules) == len(list(admission_rule_sites(openapi_schema(kind))))


def test_each_rule_fits_one_call_and_all_rules_fit_one_object(committed: tuple[str, CrdCheck]) -> None:
    """Stricter than the API server's create-time limits (10M per rule, 100M per CRD): no object the
    schema admits can exceed the runtime limits either (1M per evaluation, 10M per object)."""
    _, check = committed
    over = [f"{r.label}: {r.call_cost}" for r in check.rules if r.call_cost > PER_CALL_LIMIT]
    assert over == []
    assert check.total_cost <= RUNTIME_CEL_COST_BUDGET


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural_with_valid_defaults(kind: str) -> None:
    assert structural_problems(openapi_schema(kind)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_cel_types_are_exact_for_the_kubenas_crds(kind: str) -> None:
    """The emulation types lists and maps nested directly in one another with dyn elements; none here."""
    assert check_crd(openapi_schema(kind)).imprecise == []


def test_what_cel_sees_of_an_experiment() -> None:
    fields = fields_of(openapi_schema("Experiment"))
    parameter = fields["spec"]["parameters"]["@list"]
    assert set(parameter) == {"name", "type", "min", "max", "scale"}  # values and when are schemaless
    assert fields["spec"]["trialTemplate"]["spec"] == {
        "containers": {"@list": {"name": "string", "image": "string"}},
        "initContainers": {"@list": {"name": "string", "image": "string"}},
    }
    assert fields["spec"]["trialTemplate"]["metadata"] == {}
    assert fields["metadata"] == {"name": "string", "generateName": "string"}
    assert fields["kind"] == fields["apiVersion"] == "string"
    assert fields["status"]["bestTrial"]["metrics"] == {"@map": "double"}
    assert "parameters" not in fields["status"]["bestTrial"]  # a map of schemaless values
    assert fields["status"]["startTime"] == "timestamp"


def test_a_resource_root_always_has_name_and_kind() -> None:
    bare = {"type": "object", "properties": {"spec": {"type": "object"}}}
    assert fields_of(bare) == {
        "spec": {},
        "kind": "string",
        "apiVersion": "string",
        "metadata": {"name": "string", "generateName": "string"},
    }
    assert fields_of(bare, is_root=False) == {"spec": {}}


def test_types_follow_the_api_server_rules() -> None:
    schema = {
        "type": "object",
        "properties": {
            "port": {"x-kubernetes-int-or-string": True},
            "opaque": {"x-kubernetes-preserve-unknown-fields": True},
            "loose": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "untyped_items": {"type": "array", "items": {"x-kubernetes-preserve-unknown-fields": True}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "bad_map": {"type": "object", "additionalProperties": {"x-kubernetes-preserve-unknown-fields": True}},
            "data": {"type": "string", "format": "byte"},
            "timeout": {"type": "string", "format": "duration"},
            "day": {"type": "string", "format": "date"},
            "namespace": {"type": "boolean"},
            "dotted.name": {"type": "integer"},
            "1st": {"type": "number"},
        },
    }
    assert fields_of(schema, is_root=False) == {
        "port": "dyn",
        "loose": {},
        "labels": {"@map": "string"},
        "data": "bytes",
        "timeout": "duration",
        "day": "timestamp",
        "__namespace__": "bool",
        "dotted__dot__name": "int",
    }


def test_size_bounds_are_the_api_servers() -> None:
    strings = {"type": "array", "items": {"type": "string"}}
    unbounded = decl_type(strings)
    assert unbounded is not None and unbounded.max_elements == (3 * 1024 * 1024 - 2) // 3
    assert unbounded.elem is not None and unbounded.elem.max_elements == 3 * 1024 * 1024 - 2
    bounded = decl_type({**strings, "maxItems": 7, "items": {"type": "string", "maxLength": 5}})
    assert bounded is not None and bounded.max_elements == 7
    assert bounded.elem is not None and bounded.elem.max_elements == 20  # up to 4 bytes a character
    enum = decl_type({"type": "string", "enum": ["a", "abcd"]})
    assert enum is not None and enum.max_elements == 4


def _cost(schema: Schema, expression: str) -> int:
    t = decl_type(schema)
    assert t is not None
    return estimate_cost(checked_ast(new_env(ProtoTypes([t]), t).compile(expression)), t).hi


def test_cost_is_cel_gos_estimate() -> None:
    """Worked by hand from cel-go's checker/cost.go with the API server's size estimator."""
    schema = {
        "type": "object",
        "properties": {"xs": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 5}}},
    }
    # range 2 + result 1 + 10 × (condition 2 + step: @result 1 + (x 1 + '' 0 + ⌈min(20, 0) × 0.1⌉ 0))
    assert _cost(schema, "self.xs.all(x, x != '')") == 3 + 10 * (2 + 1 + 1)
    # the inner exists costs 2 + 1 + 10 × (3 + 1 + 1 + 2 + 2) per outer item: quadratic
    assert _cost(schema, "self.xs.all(x, self.xs.exists(y, y == x))") == 3 + 10 * (2 + 1 + 3 + 10 * (3 + 1 + 2 + 2))
    # a string compared with a string: ⌈min of the two sizes × 0.1⌉
    assert _cost(schema, "self.xs[0] == self.xs[1]") == 2 + 1 + 2 + 1 + 2
    # the Kubernetes library's string costs: join ⌈(10 × 20 + 9 × 1) × 0.1⌉, replace ⌈20 × 0.2⌉
    assert _cost(schema, "self.xs.join(',') != ''") == 2 + 21  # != '' costs ⌈min(209, 0) × 0.1⌉ = 0
    # xs[0] 1 + self.xs 2, replace 4, size() 1, > 1
    assert _cost(schema, "self.xs[0].replace('a', 'bb').size() > 0") == (1 + 2) + 4 + 1 + 1
    unbounded = {"type": "object", "properties": {"s": {"type": "string"}}}
    assert _cost(unbounded, "self.s.matches('^a+$')") == 2 + 314573  # ⌈(3 MiB − 1) × 0.1⌉ × ⌈4 × 0.25⌉


# --------------------------------------------------------------------------- proof that the check refuses


def _schema(kind: str = "Experiment") -> Schema:
    return copy.deepcopy(openapi_schema(kind))


def _at(schema: Schema, *path: str) -> Schema:
    node = schema
    for part in path:
        node = node["items"] if part == "*" else node["properties"][part]
    return node


def _with_rule(path: tuple[str, ...], rule: str) -> Callable[[], Schema]:
    def build() -> Schema:
        schema = _schema()
        _at(schema, *path).setdefault("x-kubernetes-validations", []).append({"rule": rule, "message": "m"})
        return schema

    return build


def _untyped_pod_spec() -> Schema:
    schema = _schema()
    del _at(schema, "spec", "trialTemplate", "spec")["properties"]
    return schema


def _unbounded_parameters() -> Schema:
    schema = _schema()
    del _at(schema, "spec", "parameters")["maxItems"]
    return schema


def _costly_message() -> Schema:
    schema = _schema()
    rules = _at(schema, "spec", "parameters", "*")["x-kubernetes-validations"]
    rules[0] = {**rules[0], "messageExpression": "'min ' + string(self.min) + ' is wrong'"}
    return schema


PARAMETER = ("spec", "parameters", "*")
# The rules a Kubernetes v1.36 API server refused (kubectl apply -f crds/), as they were.
REFUSED = [
    pytest.param(
        _with_rule(PARAMETER, "self.type != 'categorical' || (has(self.values) && size(self.values) > 0)"),
        "undefined field 'values'",
        id="values-required",
    ),
    pytest.param(
        _with_rule(PARAMETER, "self.type == 'categorical' || !has(self.values)"),
        "undefined field 'values'",
        id="values-only-categorical",
    ),
    pytest.param(
        _with_rule(PARAMETER, "!has(self.when) || !(self.name in self.when)"),
        "undefined field 'when'",
        id="when-not-self",
    ),
    pytest.param(
        _with_rule(
            ("spec",),
            "self.parameters.all(p, !has(p.when) || p.when.all(k, self.parameters.exists(q, q.name == k)))",
        ),
        "undefined field 'when'",
        id="when-names-a-parameter",
    ),
    pytest.param(_untyped_pod_spec, "undefined field 'containers'", id="template-has-container"),
    pytest.param(_unbounded_parameters, "estimated rule cost exceeds budget", id="rule-over-an-unbounded-list"),
    pytest.param(_costly_message, "estimated messageExpression cost exceeds budget", id="message-expression"),
    pytest.param(
        _with_rule(PARAMETER, "self.min == 1"), "no matching overload for '_==_' applied to '(double, int)'", id="types"
    ),
    pytest.param(_with_rule(PARAMETER, "size(self.name)"), "must evaluate to a bool", id="not-a-bool"),
    pytest.param(_with_rule(("spec",), "oldSelf.budget.maxTrial > 0"), "undefined field 'maxTrial'", id="old-self"),
    pytest.param(_with_rule(("spec",), "[1, 'a'].size() > 0"), "HomogeneousAggregateLiterals", id="mixed-literal"),
]


@pytest.mark.parametrize(("variant", "error"), REFUSED)
def test_the_check_refuses_what_the_api_server_refuses(variant: Callable[[], Schema], error: str) -> None:
    errors = check_crd(variant()).errors
    assert any(error in e for e in errors), errors


def test_a_refusal_names_the_rule_and_the_error() -> None:
    schema = _with_rule(PARAMETER, "self.type == 'categorical' || !has(self.values)")()
    (error,) = check_crd(schema).errors
    assert error.startswith(".spec.parameters[*]: \"self.type == 'categorical' || !has(self.values)\": ")
    assert "compilation failed: ERROR: <input>:1:35: undefined field 'values'" in error


def test_the_crd_budget_is_the_sum_over_rules() -> None:
    schema = _schema()
    rule = "self.parameters.all(p, self.parameters.all(q, p.name.matches(q.name)))"
    _at(schema, "spec")["x-kubernetes-validations"] = [{"rule": rule, "message": "m"}] * 20
    check = check_crd(schema)
    assert all(r.cost <= STATIC_ESTIMATED_COST_LIMIT for r in check.rules)
    assert any("total for entire OpenAPIv3 schema exceeds budget" in e for e in check.errors)


STRUCTURAL = [
    pytest.param(lambda s: _at(s, "spec", "budget", "maxTrials").pop("type"), "must not be empty", id="no-type"),
    pytest.param(
        lambda s: _at(s, "spec", "budget").update(anyOf=[{"type": "object", "required": ["maxTrials"]}]),
        "anyOf[0].type: Forbidden: must be empty to be structural",
        id="type-in-junctor",
    ),
    pytest.param(
        lambda s: _at(s, "spec", "budget", "maxTrials").update(default=0),
        "should be greater than or equal to 1",
        id="default-out-of-range",
    ),
    pytest.param(
        lambda s: _at(s, "spec", "budget").update(default={"maxTrials": 5, "maxTrails": 5}),
        "must not have unknown fields",
        id="default-not-pruned",
    ),
    pytest.param(
        lambda s: _at(s, "spec", "budget").update(default={"maxTrials": 1, "parallelTrials": 2}),
        "parallelTrials must not be greater than maxTrials",
        id="default-breaks-a-rule",
    ),
    pytest.param(
        lambda s: _at(s, "metadata")["properties"].update(labels={"type": "object"}),
        "must not specify anything other than name and generateName",
        id="metadata-beyond-name",
    ),
    pytest.param(
        lambda s: _at(s, "spec", "parameters").update(items=[{"type": "object"}]),
        "items must be a schema object and not an array",
        id="items-list",
    ),
    pytest.param(
        lambda s: _at(s, "spec", "suspend").update({"x-kubernetes-preserve-unknown-fields": False}),
        "must be true or undefined",
        id="preserve-false",
    ),
    pytest.param(
        lambda s: _at(s, "spec", "objective").update(additionalProperties={"type": "string"}),
        "additionalProperties and properties are mutual exclusive",
        id="properties-and-additional",
    ),
    pytest.param(
        lambda s: _at(s, "spec", "budget")["x-kubernetes-validations"][0].update(fieldPath=".maxTrails"),
        "must be a valid path",
        id="field-path",
    ),
    pytest.param(lambda s: _at(s, "spec").update(title="x", examples=[]), "unknown field", id="unknown-keyword"),
]


@pytest.mark.parametrize(("change", "error"), STRUCTURAL)
def test_structural_check_refuses(change: Callable[[Schema], Any], error: str) -> None:
    schema = _schema()
    change(schema)
    problems = structural_problems(schema)
    assert any(error in p for p in problems), problems


def test_every_kind_of_type_reaches_the_checker() -> None:
    schema = {
        "type": "object",
        "properties": {
            "labels": {
                "type": "object",
                "maxProperties": 8,
                "additionalProperties": {"type": "string", "maxLength": 9},
            },
            "port": {"x-kubernetes-int-or-string": True},
            "since": {"type": "string", "format": "date-time"},
            "timeout": {"type": "string", "format": "duration"},
            "data": {"type": "string", "format": "byte", "maxLength": 16},
            "weights": {"type": "array", "maxItems": 4, "items": {"type": "number"}},
            "nested": {"type": "object", "properties": {"flag": {"type": "boolean"}, "n": {"type": "integer"}}},
        },
        "x-kubernetes-validations": [
            {"rule": "self.labels.all(k, self.labels[k] != k) && 'a' in self.labels", "message": "m"},
            {"rule": "type(self.port) == int ? self.port > 0 : self.port.startsWith('x')", "message": "m"},
            {"rule": "self.since < timestamp('2030-01-01T00:00:00Z') && self.timeout < duration('1h')", "message": "m"},
            {"rule": "size(self.data) < 9 && self.weights.exists(w, w > 0) && self.nested.n < 2.5", "message": "m"},
            {"rule": "has(self.nested.flag) && self.nested.flag", "message": "m"},
            {"rule": "self == oldSelf", "message": "m"},
        ],
    }
    check = check_crd(schema)
    assert check.errors == []
    assert [r.call_cost for r in check.rules] == [70, 7, 8, 35, 5, 2]  # worked by hand from cost.go
