"""The structural-schema rules the API server enforces when a CRD is created, offline.

A CRD whose schema breaks one of them is refused by ``kubectl apply`` before any CEL rule is
looked at. These are the checks of k8s.io/apiextensions-apiserver (v1.36)
``pkg/apiserver/schema/validation.go`` (ValidateStructural), ``convert.go`` (NewStructural),
``pkg/apis/apiextensions/validation/validation.go`` (the OpenAPI schema checks, status-subresource
root, x-kubernetes-* extensions, rule fields) and ``schema/defaulting/validation.go``
(defaults valid against their schema, pruned, and passing the node's CEL rules).
Every problem is ``path: what the API server says``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
from cel_types import SUPPORTED_REASONS as REASONS
from crd_admission import apiserver_failures, cel_failures, strict_json_schema

Schema = dict[str, Any]


def _words(text: str) -> set[str]:
    return set(text.split())


# The fields of apiextensions/v1 JSONSchemaProps; anything else is an unknown field to a strict decoder.
SCHEMA_KEYS = _words(
    """
    id $schema $ref description type format title default maximum exclusiveMaximum minimum exclusiveMinimum
    maxLength minLength pattern maxItems minItems uniqueItems multipleOf enum maxProperties minProperties
    required items allOf oneOf anyOf not properties additionalProperties patternProperties dependencies
    additionalItems definitions externalDocs example nullable x-kubernetes-preserve-unknown-fields
    x-kubernetes-embedded-resource x-kubernetes-int-or-string x-kubernetes-list-map-keys
    x-kubernetes-list-type x-kubernetes-map-type x-kubernetes-validations
    """
)
TYPES = {"string", "number", "integer", "boolean", "array", "object"}
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# validation.go allowedFieldsAtRootSchema (JSON names), when the status subresource is enabled.
ROOT_KEYS_WITH_STATUS = _words(
    """
    description type format title maximum exclusiveMaximum minimum exclusiveMinimum maxLength minLength
    pattern maxItems minItems uniqueItems multipleOf required items properties externalDocs example
    x-kubernetes-preserve-unknown-fields x-kubernetes-validations
    """
)
RULE_KEYS = {"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"}


def structural_problems(schema: Schema, status_subresource: bool = True) -> list[str]:
    """Why the API server would refuse ``schema`` as a CRD's openAPIV3Schema; [] when it would not."""
    problems = list(_root_problems(schema, status_subresource))
    problems += _node_problems(schema, "openAPIV3Schema", level="root", resource_root=True)
    if not problems:
        problems += default_problems(schema)
    return problems


def _root_problems(schema: Schema, status_subresource: bool) -> Iterator[str]:
    if schema.get("nullable"):
        yield "openAPIV3Schema.nullable: Forbidden: nullable cannot be true at the root"
    if status_subresource:
        extra = sorted(set(schema) - ROOT_KEYS_WITH_STATUS)
        if extra:
            yield (
                f"openAPIV3Schema: Invalid value: only {sorted(ROOT_KEYS_WITH_STATUS)} fields are allowed at the root "
                f"of the schema if the status subresource is enabled (found {extra})"
            )
        if schema.get("type") != "object":
            yield (
                'openAPIV3Schema.type: Invalid value: only "object" is allowed as the type at the root of the schema '
                "if the status subresource is enabled"
            )


def _node_problems(node: Any, path: str, level: str, resource_root: bool = False) -> list[str]:
    """ValidateStructural's invariants plus the OpenAPI checks, for ``node`` and below."""
    if not isinstance(node, dict):
        return [f"{path}: Invalid value: a schema must be an object"]
    problems = [f"{path}.{key}: Forbidden: unknown field" for key in sorted(set(node) - SCHEMA_KEYS)]
    for key, what in (
        ("id", "id"),
        ("$schema", "schema"),
        ("$ref", "$ref"),
        ("patternProperties", "patternProperties"),
        ("dependencies", "dependencies"),
        ("additionalItems", "additionalItems"),
        ("definitions", "definitions"),
    ):
        if key in node:
            problems.append(f"{path}.{key}: Forbidden: {what} is not supported")
    kind = node.get("type")
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    int_or_string = node.get("x-kubernetes-int-or-string")
    embedded = node.get("x-kubernetes-embedded-resource")
    if kind is not None and kind not in TYPES:
        message = (
            "type cannot be set to null, use nullable as an alternative" if kind == "null" else "Unsupported value"
        )
        problems.append(f"{path}.type: {message}: {kind!r}")
    if preserve is False:
        problems.append(f"{path}.x-kubernetes-preserve-unknown-fields: Invalid value: must be true or undefined")
    if int_or_string and preserve:
        problems.append(
            f"{path}.x-kubernetes-preserve-unknown-fields: Invalid value: must be false if "
            "x-kubernetes-int-or-string is true"
        )
    if int_or_string and embedded:
        problems.append(f"{path}.x-kubernetes-embedded-resource: must be false if x-kubernetes-int-or-string is true")
    if embedded and kind != "object":
        problems.append(f"{path}.type: must be object if x-kubernetes-embedded-resource is true")
    elif not kind and not int_or_string and not preserve:
        where = {"root": "at the root", "item": "for specified array items", "field": "for specified object fields"}
        problems.append(f"{path}.type: Required value: must not be empty {where[level]}")
    if level == "root" and kind and kind != "object":
        problems.append(f"{path}.type: Invalid value: must be object at the root")
    if node.get("uniqueItems"):
        problems.append(
            f"{path}.uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime "
            "complexity becomes quadratic"
        )
    if "pattern" in node:
        try:
            re.compile(node["pattern"])
        except re.error as error:
            problems.append(f"{path}.pattern: must be a valid regular expression, but isn't: {error}")
    if node.get("x-kubernetes-list-type") is not None and kind != "array":
        problems.append(f"{path}.type: must be array if x-kubernetes-list-type is specified")
    if node.get("x-kubernetes-map-type") is not None and kind != "object":
        problems.append(f"{path}.type: must be object if x-kubernetes-map-type is specified")
    # items: one schema, required for arrays
    items = node.get("items")
    if kind == "array" and items is None:
        problems.append(f"{path}.items: Required value: must be specified")
    if isinstance(items, list):
        problems.append(f"{path}.items: Forbidden: items must be a schema object and not an array")
    elif items is not None:
        problems += _node_problems(items, f"{path}.items", "item")
    # properties and additionalProperties
    props = node.get("properties") or {}
    extra = node.get("additionalProperties")
    if extra is not None:
        if level == "root":
            problems.append(f"{path}.additionalProperties: Forbidden: must not be used at the root")
        if props and (extra is False or isinstance(extra, dict)):
            problems.append(
                f"{path}.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
            )
        if embedded:
            problems.append(
                f"{path}.additionalProperties: Forbidden: must not be used if x-kubernetes-embedded-resource is set"
            )
        if isinstance(extra, dict):
            problems += _node_problems(extra, f"{path}.additionalProperties", "field")
    for name, prop in props.items():
        embedded_child = isinstance(prop, dict) and bool(prop.get("x-kubernetes-embedded-resource"))
        problems += _node_problems(prop, f"{path}.properties[{name}]", "field", embedded_child)
    if embedded and not preserve and not props:
        problems.append(
            f"{path}.properties: Required value: must not be empty if x-kubernetes-embedded-resource is "
            "true without x-kubernetes-preserve-unknown-fields"
        )
    if resource_root:
        problems += _resource_meta_problems(node, path, top_level=level == "root")
    # junctors: value validation only
    for junctor in JUNCTORS:
        parts = node.get(junctor)
        for i, part in enumerate(parts if isinstance(parts, list) else [parts] if parts is not None else []):
            where = f"{path}.{junctor}" + (f"[{i}]" if junctor != "not" else "")
            problems += _junctor_problems(part, where)
    problems += _rule_problems(node, path)
    return problems


def _resource_meta_problems(node: Schema, path: str, top_level: bool) -> list[str]:
    """apiVersion and kind are strings; the top level's metadata declares nothing but name and
    generateName, and nothing under its metadata, apiVersion and kind has a default."""
    problems = []
    props = node.get("properties") or {}
    for name in ("kind", "apiVersion"):
        if name in props and props[name].get("type") != "string":
            problems.append(f"{path}.properties[{name}].type: Invalid value: must be string")
    if top_level:
        for name in ("metadata", "kind", "apiVersion"):
            for where, _ in _defaulted_nodes(props.get(name) or {}, f"{path}.properties[{name}]"):
                problems.append(f"{where}.default: Forbidden: must not be set in top-level {name}")
    meta = props.get("metadata")
    if meta is None:
        return problems
    if meta.get("type") != "object":
        problems.append(f"{path}.properties[metadata].type: Invalid value: must be object")
    if not top_level:
        return problems
    rest = {k: v for k, v in meta.items() if k not in ("type", "default")}
    meta_props = rest.pop("properties", None)
    if meta_props is not None and set(meta_props) - {"name", "generateName"}:
        rest["properties"] = meta_props
    if rest:
        problems.append(
            f"{path}.properties[metadata]: Forbidden: must not specify anything other than name and "
            f"generateName, but metadata is implicitly specified (found {sorted(rest)})"
        )
    return problems


def _junctor_problems(node: Any, path: str) -> list[str]:
    """validateNestedValueValidation: inside allOf/anyOf/oneOf/not only value validations may stand."""
    if not isinstance(node, dict):
        return [f"{path}: Invalid value: a schema must be an object"]
    problems = []
    for key, message in (
        ("type", "must be empty to be structural"),
        ("default", "must be undefined to be structural"),
        ("title", "must be empty to be structural"),
        ("description", "must be empty to be structural"),
        ("nullable", "must be false to be structural"),
        ("additionalProperties", "must be undefined to be structural"),
        ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
        ("x-kubernetes-embedded-resource", "must be false to be structural"),
        ("x-kubernetes-int-or-string", "must be false to be structural"),
        ("x-kubernetes-list-map-keys", "must be empty to be structural"),
        ("x-kubernetes-list-type", "must be undefined to be structural"),
        ("x-kubernetes-map-type", "must be undefined to be structural"),
        ("x-kubernetes-validations", "must be empty to be structural"),
    ):
        if node.get(key):
            problems.append(f"{path}.{key}: Forbidden: {message}")
    if "metadata" in (node.get("properties") or {}):
        problems.append(f"{path}.properties[metadata]: Forbidden: must not be specified in a nested context")
    for name, prop in (node.get("properties") or {}).items():
        problems += _junctor_problems(prop, f"{path}.properties[{name}]")
    if isinstance(node.get("items"), dict):
        problems += _junctor_problems(node["items"], f"{path}.items")
    for junctor in JUNCTORS:
        parts = node.get(junctor)
        for i, part in enumerate(parts if isinstance(parts, list) else [parts] if parts is not None else []):
            problems += _junctor_problems(part, f"{path}.{junctor}[{i}]")
    return problems


def _rule_problems(node: Schema, path: str) -> list[str]:
    problems = []
    for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
        where = f"{path}.x-kubernetes-validations[{i}]"
        unknown = sorted(set(rule) - RULE_KEYS)
        if unknown:
            problems.append(f"{where}: unknown fields {unknown}")
        if not str(rule.get("rule", "")).strip():
            problems.append(f"{where}.rule: Required value: rule is not specified")
        if "reason" in rule and rule["reason"] not in REASONS:
            problems.append(f"{where}.reason: Unsupported value: {rule['reason']!r}")
        if rule.get("fieldPath") and not field_path_valid(node, rule["fieldPath"]):
            problems.append(f"{where}.fieldPath: Invalid value: {rule['fieldPath']!r}: must be a valid path")
    return problems


_STEP = r"\.([^.\[\]]+)|\['((?:[^'\\]|\\.)*)'\]"


def field_path_valid(schema: Schema, field_path: str) -> bool:
    """cel.ValidFieldPath: a relative path through properties (``.a.b``) and map keys (``['k']``)."""
    if not re.fullmatch(f"(?:{_STEP})+", field_path):
        return False
    node = schema
    for name, _ in re.findall(_STEP, field_path):
        child = (node.get("properties") or {}).get(name) if name else node.get("additionalProperties")
        if not isinstance(child, dict):
            return False
        node = child
    return True


# --------------------------------------------------------------------------- defaults


def _defaulted_nodes(schema: Schema, path: str = "openAPIV3Schema") -> Iterator[tuple[str, Schema]]:
    if "default" in schema:
        yield path, schema
    for name, prop in (schema.get("properties") or {}).items():
        yield from _defaulted_nodes(prop, f"{path}.properties[{name}]")
    if isinstance(schema.get("items"), dict):
        yield from _defaulted_nodes(schema["items"], f"{path}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _defaulted_nodes(schema["additionalProperties"], f"{path}.additionalProperties")


def prune(value: Any, schema: Schema) -> Any:
    """What the API server keeps of ``value`` (unknown fields dropped where they are not preserved)."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        kept = {}
        for key, item in value.items():
            if key in props:
                kept[key] = prune(item, props[key])
            elif isinstance(extra, dict):
                kept[key] = prune(item, extra)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                kept[key] = item
        return kept
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


def default_problems(schema: Schema) -> list[str]:
    """Each default must be pruned already, valid against its schema, and pass the node's CEL rules."""
    problems = []
    for path, node in _defaulted_nodes(schema):
        default = node["default"]
        if prune(copy.deepcopy(default), node) != default:
            problems.append(f"{path}.default: Invalid value: must not have unknown fields")
            continue
        validator = jsonschema.Draft7Validator(strict_json_schema(node))
        errors = sorted(validator.iter_errors(default), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            problems += [f"{path}.default: {f.path}: {f.message}" for e in errors for f in apiserver_failures(e)]
            continue
        problems += [f"{path}.default: {f.path}: {f.message}" for f in cel_failures(default, node, old=default)]
    return problems
