"""Every CEL rule of the CRDs, proven with cel-python: parses, holds on valid manifests,
refuses what it is for, and uses constant messages. That the API server accepts each rule (it
type-checks it against the schema and estimates its cost) is test_crd_apiserver's business."""

from __future__ import annotations

import re
from typing import Any

import celpy
import pytest
from cel_types import MESSAGE_DROPPED_REASONS
from cel_types import SUPPORTED_REASONS as API_SERVER_REASONS
from crd_admission import RuleSite, admit, cel_failures, openapi_schema, rule_sites
from invalid_manifests import CASES, VALID, Case, patched
from kubenas import api, validation
from kubenas.api import experiment, spec

SITES = [site for kind in ("Experiment", "Trial") for site in rule_sites(openapi_schema(kind))]
MACRO = re.compile(r"([A-Za-z_][\w.]*(?:\[\w+\])?)\.(all|exists_one|exists|map|filter)\(\s*(\w+)\s*,")


def site_id(site: RuleSite) -> str:
    return ".".join(map(str, site.path)) + ": " + site.rule["message"][:40]


def is_transition(site: RuleSite) -> bool:
    return "oldSelf" in site.rule["rule"]


def test_there_are_rules_to_prove() -> None:
    assert len(SITES) >= 25


@pytest.mark.parametrize("site", SITES, ids=site_id)
def test_rule_compiles_with_a_constant_message(site: RuleSite) -> None:
    env = celpy.Environment()
    env.compile(site.rule["rule"])
    assert "messageExpression" not in site.rule
    assert site.rule["message"].strip() and not re.search(r"\bself\b|\+", site.rule["message"])
    assert site.rule.get("reason", "FieldValueInvalid") in API_SERVER_REASONS
    # Measured on a v1.36 API server: `spec.parameters: Duplicate value`, without the rule's message.
    assert site.rule.get("reason") not in MESSAGE_DROPPED_REASONS, "the user would not see the message"


def test_every_api_rule_reaches_the_crd() -> None:
    declared = {v.expression for m in (spec, experiment) for v in vars(m).values() if isinstance(v, api.Rule)}
    generated = {site.rule["rule"] for site in SITES}
    assert declared == generated


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_rule_holds_on_valid_manifests(name: str) -> None:
    assert cel_failures(VALID[name], openapi_schema("Experiment"), old=VALID[name]) == []


def test_every_rule_is_evaluated_by_some_valid_manifest() -> None:
    """A rule whose node never occurs in a valid manifest is not proven to pass on one."""
    experiment_sites = list(rule_sites(openapi_schema("Experiment")))
    unreached = [site_id(s) for s in experiment_sites if not any(_present(doc, s.path) for doc in VALID.values())]
    assert unreached == []


def _present(doc: Any, path: tuple[str | int, ...]) -> bool:
    values = [doc]
    for part in path:
        values = [v for value in values for v in _children(value, part)]
    return bool(values)


def _children(value: Any, part: str | int) -> list[Any]:
    if part == "*":
        return list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, list) else []
    return [value[part]] if isinstance(value, dict) and part in value else []


API_CASES = [c for c in CASES if c.apiserver]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_refused_by_schema_and_cel(case: Case) -> None:
    failures = admit(case.manifest())
    path, words = case.api_path or case.path, case.api_words or case.words
    assert any(f.path == path and all(w.lower() in f.message.lower() for w in words) for f in failures), failures


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
def test_cel_and_kubenas_validate_give_the_same_message(case: Case) -> None:
    cel = {f.message for f in admit(case.manifest()) if f.source == "cel"}
    ours = {p.message for p in validation.validate_document(case.manifest())}
    assert not cel or cel & ours, (cel, ours)


@pytest.mark.parametrize("case", [c for c in CASES if not c.apiserver], ids=lambda c: c.id)
def test_operator_only_problems_pass_the_api_server(case: Case) -> None:
    """These are what the CRD cannot express; if it ever can, move the case to the API-server set."""
    assert admit(case.manifest()) == []


def test_every_rule_is_broken_by_some_invalid_case() -> None:
    messages = {f.message for case in API_CASES for f in admit(case.manifest()) if f.source == "cel"}
    unproven = [site_id(s) for s in SITES if not is_transition(s) and s.rule["message"] not in messages]
    assert unproven == []


def test_transition_rules_refuse_changes_and_allow_the_rest() -> None:
    old = VALID["pareto"]
    changed = {
        "spec.parameters": api.experiment.PARAMETERS_IMMUTABLE.message,
        "spec.objective": api.experiment.OBJECTIVE_IMMUTABLE.message,
    }
    assert admit(patched(old, {"spec.parameters[2].max": 0.3}), old=old)[0].message == changed["spec.parameters"]
    assert (
        admit(
            patched(
                old,
                {
                    "spec.objective.strategy": "weighted",
                    "spec.objective.metrics[0].weight": 1,
                    "spec.objective.metrics[1].weight": 1,
                },
            ),
            old=old,
        )[0].message
        == changed["spec.objective"]
    )
    assert admit(patched(old, {"spec.budget": {"maxTrials": 99}}), old=old) == []


# --------------------------------------------------------------------------- bounds


def _resolve(chain: str, env: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    parts = re.findall(r"\w+|\[\w+\]", chain)
    node = env.get(parts[0])
    for part in parts[1:]:
        if node is None:
            return None
        if part.startswith("["):
            node = node.get("additionalProperties") or node.get("items")
        else:
            node = node.get("properties", {}).get(part)
    return node


def _element(node: dict[str, Any]) -> dict[str, Any]:
    if node.get("type") == "array":
        return node.get("items", {})
    return {"type": "string"}  # comprehensions over a map range over its keys


CHAIN = re.compile(r"\b([A-Za-z_]\w*(?:\.\w+|\[\w+\])+)")


def _touched_nodes(site: RuleSite) -> list[tuple[str, dict[str, Any]]]:
    """Schema nodes a rule reads: every prefix of every field chain in its expression."""
    expression = site.rule["rule"]
    env: dict[str, dict[str, Any]] = {"self": site.schema, "oldSelf": site.schema}
    for match in MACRO.finditer(expression):
        env[match.group(3)] = _element(_resolve(match.group(1), env) or {})
    found = []
    for chain in CHAIN.findall(expression):
        parts = re.findall(r"\w+|\[\w+\]", chain)
        if parts[0] not in env or parts[-1] in {"all", "exists", "exists_one", "map", "filter", "matches", "size"}:
            parts = parts[:-1] if parts[0] in env else []
        for end in range(1, len(parts) + 1):
            node = _resolve("".join(p if p.startswith("[") else "." + p for p in parts[:end])[1:], env)
            if node is not None and not node.get("x-kubernetes-preserve-unknown-fields"):
                found.append((chain, node))
    return found


@pytest.mark.parametrize("site", SITES, ids=site_id)
def test_everything_a_rule_touches_is_bounded(site: RuleSite) -> None:
    unbounded = []
    for path, node in _touched_nodes(site):
        kind = node.get("type")
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
        if kind == "string" and "maxLength" not in node:
            unbounded.append(path)
    assert unbounded == []


def _opaque(node: dict[str, Any] | None) -> bool:
    return bool(node and node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node)


@pytest.mark.parametrize("site", SITES, ids=site_id)
def test_schemaless_values_are_only_tested_for_presence_and_size(site: RuleSite) -> None:
    """The API server cannot bound comparisons of schemaless values (a PodSpec, a parameter value):
    a rule may ask has() or size() of them, never iterate or compare them."""
    expression = site.rule["rule"]
    env: dict[str, dict[str, Any]] = {"self": site.schema, "oldSelf": site.schema}
    for match in MACRO.finditer(expression):
        rng = _resolve(match.group(1), env) or {}
        assert not _opaque(_element(rng)), f"iterates schemaless values: {match.group(0)}"
        env[match.group(3)] = _element(rng)
    for match in CHAIN.finditer(expression):
        parts = re.findall(r"\w+|\[\w+\]", match.group(1))
        prefixes = [
            "".join(p if p.startswith("[") else "." + p for p in parts[:end])[1:] for end in range(2, len(parts))
        ]
        if any(_opaque(_resolve(prefix, env)) for prefix in prefixes):
            assert re.search(r"\b(has|size)\($", expression[: match.start()]), f"compares schemaless {match.group(1)}"
